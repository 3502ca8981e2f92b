"""POST /v1/jobs/validate and /v1/sweeps/validate: the checks and role check of a submission,
the same field-named answers, and nothing created or audited (fake Ray of test_api, no Ray)."""
from __future__ import annotations

import base64

import pytest

from test_api import row_count, server, spec  # noqa: F401  (the fixture)
from test_sweep_api import sweep_spec


def _audit_rows(client) -> int:
    return client.get("/v1/audit").json()["total"]


@pytest.mark.parametrize("body", [
    {"spec": spec(ressources={"workers": 1})},
    {"spec": spec(workload="cnnn")},
    {"spec": spec(resources={"workers": 8})},  # never fits the fake cluster: a capacity answer
    {"spec": spec(resources={"workers": 1, "cluster": "locl"})},
    {"spec": spec(checkpoint={"storage": "s3://bucket/x"})},
    {"spec": spec(working_dir="./code")},
    {"spec": spec(), "working_dir_zip_b64": base64.b64encode(b"not a zip").decode()},
    {"spec": "name: [unclosed"},
    {"spec": spec(), "extra": 1},
])
def test_validate_answers_what_submit_answers_and_creates_nothing(server, body):  # noqa: F811
    client, ctx, _ = server
    before = _audit_rows(client)
    checked = client.post("/v1/jobs/validate", json=body)
    assert checked.status_code == 422, checked.text
    assert _audit_rows(client) == before and row_count(ctx) == 0
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 422
    assert checked.json() == submitted.json()
    assert row_count(ctx) == 0


def test_a_valid_spec_answers_its_normalised_form_masked(server):  # noqa: F811
    client, ctx, _ = server
    before = _audit_rows(client)
    resp = client.post("/v1/jobs/validate", json={"spec": spec(env={"HF_TOKEN": "hf_secret_value"})})
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["valid"] is True and data["kind"] == "job" and data["project"] == "default"
    assert data["spec"]["training"]["max_steps"] == 5 and "priority" in data["spec"]  # defaults filled in
    assert "hf_secret_value" not in resp.text
    assert row_count(ctx) == 0 and _audit_rows(client) == before

    sweep = client.post("/v1/sweeps/validate", json={"spec": sweep_spec()})
    assert sweep.status_code == 200 and sweep.json()["kind"] == "sweep", sweep.text
    assert sweep.json()["spec"]["sweep"]["num_trials"] == 4
    bad = client.post("/v1/sweeps/validate", json={"spec": sweep_spec(scheduler="hyperband")})
    assert bad.status_code == 422 and any(i["field"].startswith("sweep.") for i in bad.json()["issues"]), bad.text
    assert row_count(ctx) == 0


def test_only_members_of_the_specs_project_may_check_it(server):  # noqa: F811
    client, _, _ = server
    for project in ("vision", "audio"):
        assert client.post("/v1/projects", json={"name": project}).status_code == 201
    headers = {}
    for user, project, role in (("vic", "vision", "viewer"), ("meg", "vision", "member"), ("oto", "audio", "member")):
        assert client.post("/v1/users", json={"name": user}).status_code == 201
        assert client.put(f"/v1/projects/{project}/members/{user}", json={"role": role}).status_code == 200
        token = client.post("/v1/tokens", json={"name": "t", "user": user}).json()["token"]
        headers[user] = {"Authorization": f"Bearer {token}"}
    body = {"spec": spec(project="vision")}
    assert client.post("/v1/jobs/validate", json=body, headers=headers["meg"]).status_code == 200
    assert client.post("/v1/jobs/validate", json=body, headers=headers["vic"]).status_code == 403
    assert client.post("/v1/jobs/validate", json=body, headers=headers["oto"]).status_code == 404
    assert client.post("/v1/jobs/validate", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_sdk_validate_job_returns_the_check_or_raises_the_submissions_error(server, tmp_path):  # noqa: F811
    from trainyard import errors as E
    from trainyard.sdk import Client

    client, ctx, _ = server
    sdk = Client(url="http://testserver", token=client.headers["Authorization"].split()[1])
    sdk._http = client
    path = tmp_path / "job.yaml"
    path.write_text("name: mnist\nworkload: cnn\ntraining: {max_steps: 2}\n")
    check = sdk.validate_job(path)
    assert check.valid and check.kind == "job" and check.spec["training"]["max_steps"] == 2
    assert sdk.validate_job(sweep_spec(), kind="sweep").kind == "sweep"
    with pytest.raises(E.CapacityError) as info:
        sdk.validate_job(spec(resources={"workers": 8}))
    assert info.value.field == "resources.workers"
    with pytest.raises(E.SpecError) as info:
        sdk.validate_job(spec(), kind="model")
    assert info.value.field == "kind"
    assert row_count(ctx) == 0

"""Hostile HTTP input: bounded parameters, one error schema, no 500s, idempotent creation, ids.

Uses the same app and fake Ray client as test_api.py (no Ray); the live-server fuzzing is
tests/integration/test_server_fuzz.py.
"""
from __future__ import annotations

import json
import re

import pytest

from test_api import TOKEN, row_count, server, spec  # noqa: F401  (fixture)
from trainyard.api.params import BODY_LIMIT
from trainyard.store import jobs as jobs_repo


def assert_error_body(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()  # valid JSON
    assert isinstance(body["error"], str) and isinstance(body["message"], str) and isinstance(body["issues"], list)
    return body


@pytest.mark.parametrize("method,path,kwargs,field", [
    ("GET", "/v1/jobs?offset=9223372036854775808", {}, "offset"),
    ("GET", "/v1/jobs?offset=-1", {}, "offset"),
    ("GET", "/v1/jobs?limit=100000", {}, "limit"),
    ("GET", "/v1/jobs?project=" + "a" * 500, {}, "project"),
    ("GET", "/v1/jobs?cluster=a%1Bb", {}, "cluster"),
    ("GET", "/v1/jobs?state=" + "x" * 300, {}, "state"),
    ("GET", "/v1/sweeps?offset=99999999999999999999999", {}, "offset"),
    ("GET", "/v1/jobs/a%1Bb", {}, "job_id"),
    ("GET", "/v1/jobs/" + "a" * 200 + "/logs", {}, "job_id"),
    ("GET", "/v1/jobs/x/logs?offset=9223372036854775808", {}, "offset"),
    ("POST", "/v1/endpoints", {"json": {"model": "m", "version": "abc"}}, "version"),
    ("POST", "/v1/endpoints/a%1Bb/predict", {"json": {}}, "name"),
    ("POST", "/v1/models/a%00b/promote", {"json": {}}, "name"),
    ("GET", "/v1/promotions/ZZ%20top", {}, "pid"),
    ("DELETE", "/v1/clusters/UPPER", {}, "name"),
])
def test_bad_parameters_are_422_naming_the_field(server, method, path, kwargs, field):
    client, _, _ = server
    body = assert_error_body(client.request(method, path, **kwargs), 422)
    assert field in [i["field"] for i in body["issues"]], body


def test_nan_and_inf_in_a_body_get_an_encodable_422(server):
    client, ctx, _ = server
    for bad in ("NaN", "Infinity", "-Infinity"):
        raw = '{"spec": {"name": "x", "workload": "cnn", "training": {"lr": %s}}}' % bad
        resp = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code in (400, 422), resp.text
        json.loads(resp.text)  # strict: no NaN tokens
        assert_error_body(resp, resp.status_code)
    assert row_count(ctx) == 0


@pytest.mark.parametrize("raw,field", [
    ('{"spec": {"name": "x", "workload": "cnn", "hyperparameters": {"a": "\\ud800"}}}', "hyperparameters.a"),
    ('{"spec": {"name": "x", "workload": "cnn", "hyperparameters": {"\\udfff": 1}}}', "hyperparameters"),
    ('{"spec": {"name": "x", "workload": "cnn", "hyperparameters": {"a\\u0000b": 1}}}', "hyperparameters"),
    ('{"spec": {"name": "x", "workload": "cnn", "env": {"K": "ok\\ud83d"}}}', "env.K"),
])
def test_text_no_encoding_can_hold_is_a_422_and_stores_nothing(server, raw, field):
    """A lone surrogate is valid JSON but no character: stored, it could never be answered
    (the job was committed and its answer failed to encode: a 500)."""
    client, ctx, _ = server
    resp = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    body = assert_error_body(resp, 422)
    assert field in [i["field"] for i in body["issues"]], body
    assert row_count(ctx) == 0
    paired = raw.replace("\\ud83d", "\\ud83d\\ude00")
    if paired != raw:  # the same character written as its full pair is fine
        assert client.post("/v1/jobs", content=paired, headers={"content-type": "application/json"}).status_code == 201


def test_an_error_body_never_echoes_unbounded_input(server):
    client, _, _ = server
    huge = "v" * 100_000
    resp = client.post("/v1/clusters", json={"name": "ok", "address": huge})
    assert_error_body(resp, 422)
    assert len(resp.text) < 5000


def test_deep_json_is_refused_not_a_500(server):
    client, ctx, _ = server
    deep = '{"spec": ' + '{"a": ' * 20000 + '1' + '}' * 20000 + '}'
    resp = client.post("/v1/jobs", content=deep, headers={"content-type": "application/json"})
    assert resp.status_code in (400, 413, 422), resp.text[:300]
    assert_error_body(resp, resp.status_code)
    assert row_count(ctx) == 0


def test_huge_bodies_are_413_naming_the_limit(server):
    client, _, _ = server
    resp = client.post("/v1/clusters", content=b"{" + b" " * (BODY_LIMIT + 10) + b"}",
                       headers={"content-type": "application/json"})
    body = assert_error_body(resp, 413)
    assert str(BODY_LIMIT) in body["message"] and body["limit_bytes"] == BODY_LIMIT


def test_framework_errors_use_the_shared_schema(server):
    client, _, _ = server
    assert_error_body(client.get("/v1/nothing-here"), 404)
    assert_error_body(client.put("/v1/jobs"), 405)
    assert_error_body(client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert_error_body(client.get("/v1/jobs/nope-000"), 404)


def test_auth_bodies_say_how_to_authenticate_not_where_files_are(server):
    client, ctx, _ = server
    for headers, status in (({"Authorization": ""}, 401), ({"Authorization": "Basic abc"}, 401),
                            ({"Authorization": "Bearer wrong"}, 401)):
        resp = client.get("/v1/jobs", headers=headers)
        body = assert_error_body(resp, status)
        assert "Authorization: Bearer" in body["message"] + (body.get("fix") or "")
        assert "trainyard up" in resp.text
        assert ctx.settings.admin_token_file not in resp.text and "admin.token" not in resp.text
        assert TOKEN not in resp.text
    assert client.get("/v1/jobs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_openapi_documents_auth_errors_and_the_error_schema(server):
    client, _, _ = server
    doc = client.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["ApiToken"] == {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["ApiToken"]["description"]}
    error_ref = "#/components/schemas/ErrorBody"
    assert set(doc["components"]["schemas"]["ErrorBody"]["required"]) == {"error", "message", "issues"}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if path in ("/healthz", "/v1/auth/config"):  # public: no token, nothing secret
                assert "security" not in op, (method, path)
                continue
            assert op.get("security") == [{"ApiToken": []}], (method, path)
            codes = ("401", "403", "422") if op.get("parameters") or op.get("requestBody") else ("401", "403")
            for code in codes:
                schema = op["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": error_ref}, (method, path, code, schema)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "413" in doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert "409" in doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert "Idempotency-Key" in [p["name"] for p in doc["paths"]["/v1/jobs"]["post"]["parameters"]]


def test_unexpected_exceptions_are_json_without_secrets(server, caplog):
    client, ctx, _ = server

    secret = "hun" + "ter2"

    def boom(job_id):
        raise RuntimeError(f"INSERT INTO jobs ... env SECRET={secret}")

    ctx.jobs.describe = boom
    from fastapi.testclient import TestClient

    with ctx.db.session() as s:  # the job exists and is visible: the failure is describe's
        jobs_repo.create_job(s, spec={}, name="some", project="default", priority=0, job_id="some-job")

    resp = TestClient(client.app, raise_server_exceptions=False, headers=dict(client.headers)).get("/v1/jobs/some-job")
    body = assert_error_body(resp, 500)
    assert body["error"] == "internal" and "hunter2" not in resp.text
    assert "hunter2" not in caplog.text


# ----------------------------------------------------------------------------- idempotency


def test_same_key_same_body_creates_once_and_answers_the_same(server):
    client, ctx, _ = server
    body = {"spec": spec()}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert row_count(ctx) == 1
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert row_count(ctx) == 2


def test_same_key_other_body_is_409_naming_the_key(server):
    client, ctx, _ = server
    assert client.post("/v1/jobs", json={"spec": spec()}, headers={"Idempotency-Key": "k-x"}).status_code == 201
    resp = client.post("/v1/jobs", json={"spec": spec(name="other")}, headers={"Idempotency-Key": "k-x"})
    body = assert_error_body(resp, 409)
    assert "k-x" in body["message"] and body["field"] == "Idempotency-Key"
    resp = client.post("/v1/sweeps", json={"spec": spec()}, headers={"Idempotency-Key": "k-x"})
    assert_error_body(resp, 409)
    assert row_count(ctx) == 1


def test_a_rejected_request_records_no_key(server):
    client, ctx, _ = server
    bad = client.post("/v1/jobs", json={"spec": spec(workload="cnnn")}, headers={"Idempotency-Key": "k-bad"})
    assert bad.status_code == 422
    assert client.post("/v1/jobs", json={"spec": spec(workload="cnnn")},
                       headers={"Idempotency-Key": "k-bad"}).status_code == 422
    assert row_count(ctx) == 0


def test_sweep_submission_replays_the_sweep_view(server):
    client, ctx, _ = server
    from test_sweep_api import sweep_spec

    body = {"spec": sweep_spec()}
    first = client.post("/v1/sweeps", json=body, headers={"Idempotency-Key": "s-1"})
    assert first.status_code == 201, first.text
    again = client.post("/v1/sweeps", json=body, headers={"Idempotency-Key": "s-1"})
    assert again.json() == first.json() and row_count(ctx) == 1


def test_cluster_registration_is_idempotent_and_host_restricted(server):
    client, ctx, _ = server
    body = {"name": "gpu", "address": "http://ray.example:8265", "check": False}
    first = client.post("/v1/clusters", json=body, headers={"Idempotency-Key": "c-1"})
    assert first.status_code == 201, first.text
    again = client.post("/v1/clusters", json=body, headers={"Idempotency-Key": "c-1"})
    assert again.status_code == 201 and again.json()["name"] == "gpu"
    assert client.post("/v1/clusters", json=body).status_code == 409
    ctx.settings.cluster_hosts = "127.0.0.1, ray.internal"
    resp = client.post("/v1/clusters", json={**body, "name": "other"})
    err = assert_error_body(resp, 422)
    assert err["field"] == "address" and "ray.internal" in err["message"]


@pytest.mark.parametrize("address", ["ftp://h", "http://", "http://h:99999", "http://u:p@h:1",
                                     "http://h\n:1", "javascript:alert(1)"])
def test_cluster_addresses_are_checked_before_any_call(server, address):
    client, _, fakes = server
    resp = client.post("/v1/clusters", json={"name": "c2", "address": address})
    err = assert_error_body(resp, 422)
    assert err["issues"][0]["field"] in ("address", "body")
    assert "c2" not in fakes


def test_cluster_token_file_is_refused(server):
    client, _, _ = server
    resp = client.post("/v1/clusters", json={"name": "c3", "address": "http://h:1", "token_file": "/etc/passwd",
                                              "check": False})
    body = assert_error_body(resp, 422)
    assert "token" in body["message"] and "root:" not in resp.text


@pytest.mark.parametrize("key", ["", "has space", "k" * 256, "é"])
def test_bad_idempotency_keys_are_422(server, key):
    client, ctx, _ = server
    resp = client.post("/v1/jobs", json={"spec": spec()}, headers={"Idempotency-Key": key.encode("utf-8")})
    if key == "":
        assert resp.status_code == 201  # an empty header is no key
    else:
        assert_error_body(resp, 422)


# ----------------------------------------------------------------------------- ids


def test_job_ids_are_readable_time_ordered_and_bounded():
    ids = [jobs_repo.new_job_id("mnist", now_ms=1_700_000_000_000 + i) for i in range(50)]
    assert all(re.fullmatch(r"mnist-[0-9a-z]{22}", i) for i in ids)
    assert [i[:16] for i in ids] == sorted(i[:16] for i in ids)
    assert len(set(ids)) == 50
    long = jobs_repo.new_job_id("a" * 63)
    assert len(long) <= 64 and re.fullmatch(r"[a-z0-9][a-z0-9-]*", long)
    assert not re.search(r"[ilou]", long.split("-")[-1])


def test_an_id_conflict_draws_a_new_id_not_a_500(server, monkeypatch):
    client, ctx, _ = server
    taken = client.post("/v1/jobs", json={"spec": spec()}).json()["id"]
    drawn = iter([taken, taken])
    real = jobs_repo.new_job_id
    monkeypatch.setattr(jobs_repo, "new_job_id", lambda name, **kw: next(drawn, None) or real(name, **kw))
    resp = client.post("/v1/jobs", json={"spec": spec()})
    assert resp.status_code == 201, resp.text
    assert resp.json()["id"] != taken and row_count(ctx) == 2


def test_a_given_id_that_is_taken_is_a_409():
    from trainyard.errors import ConflictError
    from trainyard.store import Database

    db = Database("sqlite://")
    db.upgrade()
    with db.session() as s:
        jobs_repo.create_job(s, spec={}, name="m", project="p", priority=0, job_id="m-1")
    with pytest.raises(ConflictError), db.session() as s:
        jobs_repo.create_job(s, spec={}, name="m", project="p", priority=0, job_id="m-1")


def test_a_cluster_that_does_not_answer_is_the_requests_fault(server):
    from trainyard.local.processes import free_port

    client, _, _ = server
    resp = client.post("/v1/clusters", json={"name": "gone", "address": f"http://127.0.0.1:{free_port()}"})
    body = assert_error_body(resp, 422)
    assert body["field"] == "address" and "check=false" in body["fix"]


def test_non_utf8_bodies_are_422(server):
    client, ctx, _ = server
    resp = client.post("/v1/sweeps", content=b"5\xff8O,c\xfe", headers={"content-type": "application/json"})
    assert_error_body(resp, 422)

"""The typed API contract: every route answers a declared model, the committed OpenAPI document
and the console's generated TypeScript types are current, the SDK parses answers into the
models, and the CLI prints them as tables, JSON or YAML.

Uses the app and fake Ray client of test_api.py (no Ray, no Node unless it is installed)."""
from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute

from test_api import TOKEN, server, spec  # noqa: F401  (fixture)
from test_cli import FakeClient
from trainyard import apitypes as T
from trainyard import errors as E
from trainyard.api.errors import ErrorBody
from trainyard.cli import main as cli

REPO = Path(__file__).resolve().parents[2]
CONSOLE = REPO / "console"


# ----------------------------------------------------------------------------- the document


def test_committed_openapi_document_is_current():
    from trainyard.api.openapi_doc import openapi_text

    committed = (CONSOLE / "openapi.json").read_text()
    assert committed == openapi_text(), "console/openapi.json is stale: run `make api-client` and commit it"


def test_committed_typescript_types_are_current(tmp_path):
    generator = CONSOLE / "node_modules" / ".bin" / "openapi-typescript"
    if shutil.which("node") is None or not generator.exists():
        pytest.skip("needs Node and the console's packages (`cd console && npm ci`)")
    out = tmp_path / "schema.d.ts"
    subprocess.run([str(generator), str(CONSOLE / "openapi.json"), "-o", str(out)], cwd=CONSOLE, check=True,
                   capture_output=True, timeout=120)
    assert out.read_text() == (CONSOLE / "src" / "api" / "schema.d.ts").read_text(), \
        "console/src/api/schema.d.ts is stale: run `make api-client` and commit it"


def test_every_route_declares_its_answer_and_its_errors(server):  # noqa: F811
    client, _, _ = server
    missing_model, missing_errors = [], []
    for route in client.app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        name = f"{sorted(route.methods)[0]} {route.path}"
        answers_json = route.status_code != 204 and route.response_class.media_type == "application/json"
        forwarded = (route.openapi_extra or {}).get("responses")  # predict: the family's own schema
        text = "text/plain" in (route.responses.get(200, {}).get("content") or {})  # logs
        if answers_json and route.response_model is None and not (forwarded or text):
            missing_model.append(name)
        errors = [code for code, spec_ in route.responses.items()
                  if int(code) >= 400 and spec_.get("model") is ErrorBody]
        if route.path != "/healthz" and not errors:
            missing_errors.append(name)
    assert missing_model == [] and missing_errors == []


# ----------------------------------------------------------------------------- answers fit the models


def test_real_answers_are_exactly_the_models(server):  # noqa: F811
    """The JSON a client gets validates against the models with extra keys forbidden."""
    client, ctx, _ = server
    submitted = client.post("/v1/jobs", json={"spec": spec()})
    assert submitted.status_code == 201, submitted.text
    job = T.JobDetail.model_validate(submitted.json())
    # fields that other parts of the server fill in as they land: present, null until then
    assert {"cost", "preemptions", "preempted_s"} <= set(submitted.json())
    ctx.controller.tick()
    listed = T.JobList.model_validate(client.get("/v1/jobs").json())
    assert [j.id for j in listed.jobs] == [job.id] and listed.count == 1
    T.JobDetail.model_validate(client.get(f"/v1/jobs/{job.id}").json())
    assert T.JobDetail.model_validate(client.post(f"/v1/jobs/{job.id}/cancel").json()).cancel_requested
    status = T.Status.model_validate(client.get("/v1/status").json())
    assert status.clusters[0].name == "local"
    T.ClusterList.model_validate(client.get("/v1/clusters").json())
    T.SweepList.model_validate(client.get("/v1/sweeps").json())
    T.Health.model_validate(client.get("/healthz").json())
    T.Me.model_validate(client.get("/v1/me").json())


def test_the_job_view_and_its_model_have_the_same_fields(server):  # noqa: F811
    """A field added to controller/views.py without its model here would answer 500: say which."""
    client, ctx, _ = server
    job_id = client.post("/v1/jobs", json={"spec": spec()}).json()["id"]
    view = ctx.jobs.describe(job_id)
    fields = set(T.JobDetail.model_fields)
    required = {n for n, f in T.JobDetail.model_fields.items() if f.is_required()}
    assert set(view) - fields == set(), "add these fields to trainyard/apitypes.py"
    assert required - set(view) == set(), "the job view lost these fields"


# ----------------------------------------------------------------------------- the SDK


def _sdk(answer: dict, trainyard_home):
    from trainyard.sdk import Client

    sdk = Client(url="http://ty.test", token=TOKEN, retries=0)
    sdk._http._transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
    return sdk


def test_sdk_keeps_working_against_a_newer_server(trainyard_home):
    newer = {"ok": True, "version": "9.0", "uptime_days": 3}
    health = _sdk(newer, trainyard_home).health()
    assert isinstance(health, T.Health) and health.version == "9.0" and not hasattr(health, "uptime_days")


def test_sdk_refuses_an_answer_that_breaks_the_contract(trainyard_home):
    with pytest.raises(E.ClusterError) as info:
        _sdk({"ok": "very", "version": "1"}, trainyard_home).health()
    assert "Health" in str(info.value) and "ok" in str(info.value)


def test_dict_access_still_works_but_is_deprecated():
    health = T.Health(ok=True, version="1")
    with pytest.warns(DeprecationWarning, match=r"\.version"):
        assert health["version"] == "1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert health.get("nope", 7) == 7 and "ok" in health
        with pytest.raises(KeyError):
            health["nope"]


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def fake(trainyard_home, monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    yield client
    from trainyard.cli import _ui

    _ui.set_output("table")


@pytest.mark.parametrize("argv", [["jobs", "list", "-o", "yaml"], ["-o", "yaml", "jobs", "list"],
                                  ["--output", "yaml", "clusters", "list"]])
def test_output_yaml(fake, capsys, argv):
    assert cli.main(argv) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(data, list) and data[0]["name"] in ("tiny", "local")


@pytest.mark.parametrize("argv", [["jobs", "show", "tiny-1", "-o", "json"], ["jobs", "show", "tiny-1", "--json"],
                                  ["--output", "json", "jobs", "show", "tiny-1"]])
def test_output_json_is_the_api_model(fake, capsys, argv):
    assert cli.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert T.JobDetail.model_validate(data).state == "SUCCEEDED"


def test_output_table_is_for_people(fake, capsys):
    assert cli.main(["jobs", "list", "-o", "table"]) == 0
    out = capsys.readouterr().out
    assert "tiny-1" in out and not out.lstrip().startswith(("[", "{", "-"))


def test_output_refuses_an_unknown_format(fake, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["jobs", "list", "-o", "xml"])
    assert info.value.code == E.EXIT_USAGE and "invalid choice: 'xml'" in capsys.readouterr().err


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(capsys, shell):
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "trainyard" in script and "sweeps" in script and "--output" in script


class ServingFake:
    """The SDK's serving answers (models), for the endpoints and models commands."""

    version = {"version": "2", "weight": 0.9, "role": "stable", "requests": 40, "errors": 1, "error_rate": 0.025,
               "p50_ms": 3.0, "p99_ms": 9.5, "request_rate": 2.0, "recent_error_rate": None, "recent_p50_ms": None,
               "recent_p99_ms": 8.0}

    def get_endpoint(self, name, cluster=None):
        return T.Endpoint.model_validate({
            "name": name, "model": "digits", "project": "default", "public": False, "keys": 1, "family": "cnn",
            "status": "RUNNING", "url": "http://127.0.0.1:8000/digits/predict", "split": "replica", "generation": 3,
            "replicas": {"Endpoint": {"running": 1, "target": 1, "status": "HEALTHY"}},
            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
            "versions": [self.version]})

    def list_endpoints(self, cluster=None):
        return [T.EndpointSummary(name="digits", model="digits", project="default", public=False, status="RUNNING",
                                  weights={"2": 1.0}, canary=None, route="/digits", url="http://h/digits/predict")]

    def model_history(self, model):
        return T.ModelHistory(model=model, champion="2", candidate="3", active=[], events=[
            {"time": 0, "kind": "promoted", "candidate": "2", "champion": None, "reason": "first candidate"}])


def test_serving_commands_read_the_models(monkeypatch, capsys, trainyard_home):
    monkeypatch.setattr(cli, "_client", lambda args: ServingFake())
    assert cli.main(["endpoints", "show", "digits"]) == 0
    out = capsys.readouterr().out
    assert "Endpoint digits (digits, family cnn) RUNNING" in out and "Endpoint: 1/1 running" in out and "90%" in out
    assert cli.main(["endpoints", "list"]) == 0 and "v2:100%" in capsys.readouterr().out
    assert cli.main(["models", "history", "digits"]) == 0
    assert "champion v2, candidate v3" in capsys.readouterr().out
    assert cli.main(["models", "history", "digits", "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["events"][0]["kind"] == "promoted"


def test_an_answer_that_breaks_its_own_model_is_a_server_error_not_the_callers(caplog):
    """A route whose answer its response_model refuses is a bug in the server: a 500 in the
    shared error shape, never a 422 that blames the request, and the log names the field only."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from pydantic import BaseModel

    from trainyard.api.errors import install_error_handlers

    class Answer(BaseModel):
        count: int

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/drift", response_model=Answer)
    def drift():
        return {"count": "secret-value-not-a-number"}

    with caplog.at_level("ERROR", logger="trainyard.api"):
        resp = TestClient(app, raise_server_exceptions=False).get("/drift")
    assert resp.status_code == 500, resp.text
    body = resp.json()
    assert body["error"] == "internal" and "API schema" in body["message"]
    ErrorBody.model_validate(body)
    assert "secret-value" not in resp.text and "secret-value" not in caplog.text
    assert "count" in caplog.text

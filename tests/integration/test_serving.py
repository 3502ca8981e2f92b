"""Endpoints on a real local Ray cluster: real Serve over HTTP, real MLflow registry."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from trainyard.errors import NotFoundError, SpecError

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def serving(ray_head, mlflow_server):
    from trainyard.local.processes import free_port
    from trainyard.serving.client import ServeClient
    from trainyard.serving.endpoints import EndpointManager
    from trainyard.serving.registry import Registry

    serve = ServeClient(ray_head.dashboard_url, token=ray_head.token, http_port=free_port())
    registry = Registry(mlflow_server)
    # the test-only families (serving_support) must import inside the replicas too, next to
    # the code under test (the replicas' env replaces PYTHONPATH, so keep this process's)
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    manager = EndpointManager(serve, registry, tracking_uri=mlflow_server,
                              env={"PYTHONPATH": path, "TRAINYARD_SERVE_TORCH_THREADS": "1"})
    try:
        yield manager
    finally:
        try:
            serve.shutdown()
        finally:
            serve.close()


def _spec(model, **extra):
    return {"model": model, "cpus_per_replica": 0.1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}, **extra}


def _key_headers(manager, endpoint: str) -> dict:
    """A fresh endpoint key for `endpoint`, as the header a client sends (endpoints are not public)."""
    return {"Authorization": f"Bearer {manager.create_key(endpoint, f'tests-{uuid.uuid4().hex[:6]}')['key']}"}


def test_deploy_and_predict_matches_the_model(serving, mlflow_server):
    from serving_support.models import digits, register_cnn

    from trainyard.tracking.model import load_trainyard_model

    version = register_cnn(mlflow_server, "digits-a", accuracy=0.5, seed=1)
    info = serving.deploy(_spec("digits-a"), version=version)
    assert info["created"] and info["version"] == version
    images, _ = digits(4)
    got = serving.predict("digits-a", {"inputs": images})
    workload, models, hparams = load_trainyard_model(f"models:/digits-a/{version}")
    want = workload.predictor(models, {"inputs": images}, hparams)
    assert got["classes"] == want["classes"]
    flat = lambda rows: [x for row in rows for x in row]  # noqa: E731
    assert flat(got["probabilities"]) == pytest.approx(flat(want["probabilities"]), abs=1e-4)

    # over plain HTTP, as any client would (with an endpoint key)
    auth = _key_headers(serving, "digits-a")
    resp = httpx.post(info["url"], json={"inputs": images[0]}, headers=auth)
    assert resp.status_code == 200 and resp.headers["x-trainyard-version"] == version
    assert resp.json()["classes"] == want["classes"][:1]

    # a payload of the wrong shape: 422 naming the field
    bad = httpx.post(info["url"], json={"inputs": [[1, 2, 3]]}, headers=auth)
    assert bad.status_code == 422 and bad.json()["field"] == "inputs"
    with pytest.raises(SpecError) as err:
        serving.predict("digits-a", {"pixels": images})
    assert err.value.field == "inputs"
    with pytest.raises(NotFoundError):
        serving.predict("no-such-endpoint", {"inputs": images})

    # the OpenAPI page documents the family's request and response schema
    doc = httpx.get(info["url"].replace("/predict", "/openapi.json"), headers=auth).json()
    post = doc["paths"]["/v1/endpoints/digits-a/predict"]["post"]
    assert "inputs" in post["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "classes" in post["responses"]["200"]["content"]["application/json"]["schema"]["properties"]

    listed = {e["name"]: e for e in serving.list()}
    assert listed["digits-a"]["weights"] == {version: 1.0}
    shown = serving.show("digits-a")
    assert shown["versions"][0]["version"] == version and shown["versions"][0]["requests"] >= 3

    # bad deploy requests fail clearly
    with pytest.raises(SpecError, match="no version 99"):
        serving.deploy(_spec("digits-a"), version="99")
    with pytest.raises(SpecError, match="no alias 'nope'"):
        serving.deploy(_spec("digits-a"), alias="nope")
    with pytest.raises(NotFoundError):
        serving.deploy(_spec("no-such-model"))

    serving.delete("digits-a")
    assert "digits-a" not in {e["name"] for e in serving.list()}
    with pytest.raises(NotFoundError):
        serving.delete("digits-a")


def test_endpoint_keys_on_serves_http_port(serving, mlflow_server):
    """Not public: no key 401, a wrong key 403, a created key 200, a revoked key 403 once the
    revocation returned (it waits as a traffic change does); public: anyone may predict."""
    from serving_support.models import digits, register_cnn

    version = register_cnn(mlflow_server, "digits-keys", accuracy=0.5, seed=1)
    info = serving.deploy(_spec("digits-keys", project="team-a"), version=version)
    url, openapi = info["url"], info["url"].replace("/predict", "/openapi.json")
    images, _ = digits(1)
    body = {"inputs": images}

    refused = httpx.post(url, json=body)
    assert refused.status_code == 401, refused.text
    assert "Authorization: Bearer <endpoint key>" in refused.json()["fix"]
    assert httpx.get(openapi).status_code == 401
    assert httpx.get(url.replace("/predict", "/-/healthz")).status_code == 200  # readiness stays open
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer tye_000000000000_" + "x" * 43})
    assert wrong.status_code == 403, wrong.text

    made = serving.create_key("digits-keys", "client-a")
    auth = {"Authorization": f"Bearer {made['key']}"}
    ok = httpx.post(url, json=body, headers=auth)
    assert ok.status_code == 200 and ok.headers["x-trainyard-version"] == version, ok.text
    assert httpx.get(openapi, headers=auth).status_code == 200
    listed = serving.keys("digits-keys")
    assert listed == [{"id": made["id"], "name": "client-a", "created_at": made["created_at"]}]
    deployed = json.dumps(serving.serve.details())  # on the cluster: the hash, never the key
    assert made["key"] not in deployed and hashlib.sha256(made["key"].encode()).hexdigest() in deployed
    assert serving.predict("digits-keys", body)["classes"]  # the manager's own key
    shown = serving.show("digits-keys")  # reads the stats with it too
    assert (shown["project"], shown["public"], shown["keys"]) == ("team-a", False, 1)
    assert shown["versions"][0]["requests"] >= 2

    serving.revoke_key("digits-keys", made["id"])
    assert httpx.post(url, json=body, headers=auth).status_code == 403
    assert serving.keys("digits-keys") == []

    serving.deploy(model="digits-keys", public=True)  # the same endpoint, opened
    assert httpx.post(url, json=body).status_code == 200
    assert httpx.get(openapi).status_code == 200
    assert httpx.get(url.replace("/predict", "/-/stats")).status_code == 401  # the control plane's route
    listed = {e["name"]: e for e in serving.list()}["digits-keys"]
    assert (listed["project"], listed["public"]) == ("team-a", True)
    serving.delete("digits-keys")


def test_a_custom_workload_trained_from_its_folder_serves_where_that_folder_is_not(serving, mlflow_server,
                                                                                   test_root, monkeypatch):
    """examples/custom_workload trains (its folder on the workers' path only, as a job's
    working_dir puts it) and its registered model carries its code: the Serve replicas, whose
    import path holds tests/integration but not the example folder, load and serve it."""
    from trainyard.protocol import find_result

    example = HERE.parents[1] / "examples" / "custom_workload"
    assert str(example) not in serving.env.get("PYTHONPATH", "")  # the replicas' import path
    # the folder on the driver's and the workers' import path only, as a job's working_dir puts it
    path = ":".join(p for p in (str(example), os.environ.get("PYTHONPATH")) if p)
    spec = {
        "name": "diabetes-served", "workload": "diabetes:WORKLOAD",
        "resources": {"workers": 1, "cpus_per_worker": 1}, "deepspeed": {"zero_stage": 0},
        "training": {"max_steps": 4, "batch_size": 16, "eval_every_steps": 4, "log_every_steps": 4},
        "checkpoint": {"every_steps": 4, "storage": f"file://{test_root / 'custom-served'}"},
        "tracking": {"experiment": "serving-tests", "model_name": "diabetes-served"},
        "env": {"PYTHONPATH": path},
    }
    spec_file = test_root / "diabetes-served.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "trainyard.runner", "job", "--job-id", f"diabetes-{uuid.uuid4().hex[:6]}",
                           "--spec-file", str(spec_file)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": path, "MLFLOW_TRACKING_URI": mlflow_server})
    result = find_result(proc.stdout)
    assert proc.returncode == 0 and result, proc.stdout[-3000:] + proc.stderr[-3000:]
    version = result["model_version"]
    assert version, result
    import mlflow.artifacts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # models:/ resolves through the registry here
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/diabetes-served/{version}",
                                                     dst_path=str(test_root / f"diabetes-{version}")))
    assert sorted(p.name for p in (local / "code").iterdir()) == ["diabetes.py"]  # the code it carries

    info = serving.deploy(_spec("diabetes-served"), version=version)
    rows = [[0.03, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.0, 0.02, -0.02]] * 2
    got = httpx.post(info["url"], json={"inputs": rows}, timeout=60, headers=_key_headers(serving, "diabetes-served"))
    assert got.status_code == 200, got.text
    predictions = got.json()["predictions"]
    assert len(predictions) == 2 and predictions[0] == predictions[1] and math.isfinite(predictions[0])
    serving.delete("diabetes-served")


def _wait_for(condition, *, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


POLICY = {"canary_weight": 0.3, "window_s": 4, "max_wait_s": 60,
          "gates": {"min_requests": 10, "max_error_rate": 0.05, "max_p99_latency_ratio": 20}}
ENDPOINT = {"cpus_per_replica": 0.1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}


@pytest.fixture(scope="module")
def promoted_model(serving, mlflow_server):
    """Model 'digits-p' promoted from nothing (v1), then through a canary (v2)."""
    from serving_support.load import LoopClient
    from serving_support.models import digits, register_cnn

    from trainyard.serving.promotion import Promoter
    from trainyard.serving.registry import CANDIDATE, CHAMPION

    registry = serving.registry
    promoter = Promoter(serving, registry, poll_s=0.5)
    v1 = register_cnn(mlflow_server, "digits-p", accuracy=0.5, seed=1)
    registry.set_alias("digits-p", CANDIDATE, v1)
    first = promoter.promote("digits-p", policy=POLICY, endpoint=ENDPOINT)
    key = serving.create_key("digits-p", "loop")["key"]

    v2 = register_cnn(mlflow_server, "digits-p", accuracy=0.8, seed=2)
    registry.set_alias("digits-p", CANDIDATE, v2)
    images, _ = digits(1)
    with LoopClient(serving.url("digits-p"), {"inputs": images}, threads=2, key=key) as loop:
        second = promoter.promote("digits-p", policy=POLICY, endpoint=ENDPOINT)
        done = time.monotonic()
        time.sleep(1.0)
    return {"v1": v1, "v2": v2, "first": first, "second": second, "loop": loop, "done": done, "key": key,
            "champion": registry.alias_version("digits-p", CHAMPION)}


def test_first_candidate_is_promoted_directly(promoted_model):
    first = promoted_model["first"]
    assert first.state.value == "promoted" and "directly" in first.reason
    assert [e.kind for e in first.events] == ["compared", "promoted"]


def test_better_candidate_goes_through_a_canary_and_becomes_champion(serving, promoted_model):
    second, v1, v2 = promoted_model["second"], promoted_model["v1"], promoted_model["v2"]
    assert second.state.value == "promoted", second.reason
    assert [e.kind for e in second.events] == ["compared", "canary_started", "promoted"]
    evidence = second.events[-1].evidence
    assert evidence["canary"]["requests"] >= POLICY["gates"]["min_requests"]
    assert evidence["canary"]["errors"] == 0
    assert promoted_model["champion"] == v2
    assert serving.get("digits-p").traffic.weights == {v2: 1.0}  # old version drained and removed
    loop = promoted_model["loop"]
    assert loop.failures() == [], loop.failures()[:5]
    served = {a[2] for a in loop.answers}
    assert {v1, v2} <= served  # the canary really took traffic
    assert loop.versions_after(promoted_model["done"]) == {v2}


def test_broken_candidate_is_rolled_back_without_failed_requests(serving, promoted_model, mlflow_server):
    from serving_support.load import LoopClient
    from serving_support.models import digits, register_cnn

    from trainyard.serving.promotion import Promoter
    from trainyard.serving.registry import CANDIDATE, CHAMPION

    registry = serving.registry
    v2 = promoted_model["v2"]
    v3 = register_cnn(mlflow_server, "digits-p", accuracy=0.99, seed=3, workload="serving_support.families:FLAKY")
    registry.set_alias("digits-p", CANDIDATE, v3)
    images, _ = digits(1)
    with LoopClient(serving.url("digits-p"), {"inputs": images}, threads=2, key=promoted_model["key"]) as loop:
        # a module:attribute family has no metadata the control plane may read: the policy names the metric
        result = Promoter(serving, registry, poll_s=0.5).promote(
            "digits-p", policy={**POLICY, "metric": "accuracy", "mode": "max"}, endpoint=ENDPOINT)
        done = time.monotonic()
        time.sleep(1.0)
    assert result.state.value == "rolled_back" and "error rate" in result.reason
    assert result.events[-1].evidence["canary"]["errors"] > 0
    assert registry.alias_version("digits-p", CHAMPION) == v2  # alias unchanged
    assert serving.get("digits-p").traffic.weights == {v2: 1.0}  # canary removed
    assert loop.failures() == [], loop.failures()[:5]  # the champion answered for the broken canary
    assert loop.versions_after(done) == {v2}

    history = registry.history("digits-p")
    kinds = [e["kind"] for e in history]
    assert kinds.count("promoted") == 2 and kinds[-1] == "rolled_back"
    assert history[-1]["evidence"]["canary"]["errors"] > 0


def test_candidate_that_does_not_beat_the_champion_is_rejected(serving, promoted_model, mlflow_server):
    from serving_support.models import register_cnn

    from trainyard.serving.promotion import Promoter
    from trainyard.serving.registry import CANDIDATE

    v4 = register_cnn(mlflow_server, "digits-p", accuracy=0.1, seed=4)
    serving.registry.set_alias("digits-p", CANDIDATE, v4)
    result = Promoter(serving, serving.registry).promote("digits-p", policy=POLICY, endpoint=ENDPOINT)
    assert result.state.value == "rejected" and "does not beat" in result.reason
    assert v4 not in serving.get("digits-p").traffic.weights


def test_autoscaling_follows_load_within_bounds(serving, promoted_model):
    from serving_support.load import LoopClient
    from serving_support.models import digits

    spec = {"name": "digits-auto", "model": "digits-p", "cpus_per_replica": 0.1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                            "upscale_delay_s": 0.5, "downscale_delay_s": 2}}
    serving.deploy(spec)
    key = serving.create_key("digits-auto", "load")["key"]

    def running():
        return serving.show("digits-auto")["replicas"]["Endpoint"]["running"]

    images, _ = digits(8)
    with LoopClient(serving.url("digits-auto"), {"inputs": images}, threads=6, pause_s=0, key=key) as loop:
        _wait_for(lambda: running() >= 2, timeout=120, what="scale-up to 2 replicas")
        assert running() <= 2
    assert loop.failures() == []
    _wait_for(lambda: running() == 1, timeout=180, what="scale-down to 1 replica")
    serving.delete("digits-auto")


def test_rest_api_cli_paths_deploy_predict_show_history_delete(serving, promoted_model, ray_head, mlflow_server,
                                                               tmp_path, monkeypatch):
    """The same operations through the Trainyard server (FastAPI app) and the SDK's paths."""
    from fastapi.testclient import TestClient
    from serving_support.models import digits

    from trainyard.api.app import create_app
    from trainyard.config import Settings

    token_file = tmp_path / "ray.token"
    token_file.write_text(ray_head.token)
    admin = tmp_path / "admin.token"
    admin.write_text("admin-secret\n")
    monkeypatch.setenv("TRAINYARD_SERVE_PORT", str(serving.serve.http_port))
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(admin),
                        mlflow_uri=mlflow_server, ray_dashboard_url=ray_head.dashboard_url,
                        ray_token_file=str(token_file), storage=f"file://{tmp_path / 'storage'}")
    app = create_app(settings, run_controller=False)
    images, _ = digits(2)
    with TestClient(app, headers={"Authorization": "Bearer admin-secret"}) as api:
        resp = api.post("/v1/endpoints", json={"model": "digits-p", "spec": {
            "model": "digits-p", "name": "digits-api", "cpus_per_replica": 0.1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}}})
        assert resp.status_code == 201, resp.text
        assert resp.json()["version"] == promoted_model["v2"]  # the champion by default

        pred = api.post("/v1/endpoints/digits-api/predict", json={"inputs": images})
        assert pred.status_code == 200 and len(pred.json()["classes"]) == 2
        assert pred.headers["x-trainyard-version"] == promoted_model["v2"]
        bad = api.post("/v1/endpoints/digits-api/predict", json={"inputs": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "inputs"
        assert api.post("/v1/endpoints/nope/predict", json={"inputs": images}).status_code == 404

        shown = api.get("/v1/endpoints/digits-api").json()
        assert shown["versions"][0]["weight"] == 1.0 and "p99_ms" in shown["versions"][0]
        listed = {e["name"]: e for e in api.get("/v1/endpoints").json()["endpoints"]}
        assert (listed["digits-api"]["project"], listed["digits-api"]["public"]) == ("default", False)

        # endpoint keys through the REST API; the key's text is in the creation's answer only
        made = api.post("/v1/endpoints/digits-api/keys", json={"name": "app"})
        assert made.status_code == 201 and set(made.json()) == {"id", "name", "key", "created_at"}, made.text
        made = made.json()
        keys = api.get("/v1/endpoints/digits-api/keys").json()["keys"]
        assert [k["id"] for k in keys] == [made["id"]] and made["key"] not in str(keys) and "sha256" not in str(keys)
        bearer = {"Authorization": f"Bearer {made['key']}"}
        assert httpx.post(shown["url"], json={"inputs": images}, headers=bearer).status_code == 200
        assert api.post("/v1/endpoints/digits-api/keys", json={"name": "app"}).status_code == 409
        assert api.delete(f"/v1/endpoints/digits-api/keys/{made['id']}").status_code == 204
        assert httpx.post(shown["url"], json={"inputs": images}, headers=bearer).status_code == 403
        assert api.delete(f"/v1/endpoints/digits-api/keys/{made['id']}").status_code == 404
        assert api.get("/v1/endpoints/nope/keys").status_code == 404
        assert api.get("/v1/endpoints/nope").status_code == 404
        bad_policy = api.post("/v1/models/digits-p/promote", json={"policy": {"canary_weight": 1.5}})
        assert bad_policy.status_code == 422 and bad_policy.json()["field"] == "canary_weight"
        bad_version = api.post("/v1/endpoints", json={"model": "digits-p", "version": "999"})
        assert bad_version.status_code == 422 and bad_version.json()["field"] == "version"

        hist = api.get("/v1/models/digits-p/history").json()
        assert hist["champion"] == promoted_model["v2"] and hist["events"]

        # project roles: the endpoint and its model are project default's
        def token_of(user: str, project: str, role: str) -> dict:
            assert api.post("/v1/users", json={"name": user}).status_code == 201
            if project != "default":
                assert api.post("/v1/projects", json={"name": project}).status_code == 201
            assert api.put(f"/v1/projects/{project}/members/{user}", json={"role": role}).status_code == 200
            made = api.post("/v1/tokens", json={"name": "t", "user": user})
            return {"Authorization": f"Bearer {made.json()['token']}"}

        viewer, outsider = token_of("vic", "default", "viewer"), token_of("otto", "elsewhere", "maintainer")
        assert api.get("/v1/endpoints/digits-api", headers=viewer).status_code == 200
        assert api.post("/v1/endpoints/digits-api/predict", json={"inputs": images}, headers=viewer).status_code == 200
        assert api.get("/v1/models/digits-p/history", headers=viewer).status_code == 200
        for refused in (api.delete("/v1/endpoints/digits-api", headers=viewer),
                        api.post("/v1/endpoints/digits-api/keys", json={"name": "v"}, headers=viewer),
                        api.post("/v1/models/digits-p/promote", json={}, headers=viewer)):
            assert refused.status_code == 403 and "maintainer" in refused.json()["message"], refused.text
        # another project's maintainer: the endpoint and the model do not exist for them, in the
        # very words a missing one gets, and no list or did-you-mean names them
        missing = api.get("/v1/endpoints/nope", headers=outsider).json()["message"]
        hidden = api.get("/v1/endpoints/digits-api", headers=outsider)
        assert hidden.status_code == 404 and hidden.json()["message"] == missing.replace("nope", "digits-api")
        assert "digits-api" not in api.get("/v1/endpoints", headers=outsider).text
        for hidden in (api.post("/v1/endpoints/digits-api/predict", json={"inputs": images}, headers=outsider),
                       api.delete("/v1/endpoints/digits-api", headers=outsider),
                       api.get("/v1/models/digits-p/history", headers=outsider),
                       api.post("/v1/models/digits-p/promote", json={}, headers=outsider),
                       api.post("/v1/endpoints", json={"model": "digits-p", "project": "elsewhere",
                                                       "spec": {"model": "digits-p", "name": "stolen"}},
                                headers=outsider)):
            assert hidden.status_code == 404, hidden.text
        assert api.delete("/v1/endpoints/digits-api").status_code == 204
        assert "/v1/endpoints/{name}/predict" in app.openapi()["paths"]


def test_promote_through_the_real_server_sdk_and_cli(serving, ray_head, mlflow_server, test_root, capsys,
                                                     monkeypatch):
    """POST /v1/models/{name}/promote on the server process (`python -m trainyard.api`), via the SDK:
    a direct promotion (wait), then a canary in the background, followed through /v1/promotions/{id}
    while a client loops; `trainyard endpoints show` names the family."""
    from serving_support.load import LoopClient
    from serving_support.models import digits, register_cnn
    from test_server import Server

    from trainyard.cli import main as cli

    srv = Server(test_root / "serving-server", ray_head)
    # the same Serve HTTP port as the module's manager: one proxy per cluster
    srv.start(TRAINYARD_MLFLOW_URI=mlflow_server, TRAINYARD_SERVE_PORT=str(serving.serve.http_port))
    try:
        client = srv.client()
        registry = serving.registry
        v1 = register_cnn(mlflow_server, "digits-r", accuracy=0.5, seed=11)
        registry.set_alias("digits-r", "candidate", v1)
        first = client.promote_model("digits-r", policy=POLICY, endpoint=ENDPOINT, wait=True)
        assert first["state"] == "promoted", first
        assert [e["kind"] for e in first["events"]] == ["compared", "promoted"]
        shown = client.get_endpoint("digits-r")
        assert shown["family"] == "cnn" and shown["versions"][0]["version"] == v1

        v2 = register_cnn(mlflow_server, "digits-r", accuracy=0.8, seed=12)
        registry.set_alias("digits-r", "candidate", v2)
        images, _ = digits(1)
        key = client._json("POST", "/v1/endpoints/digits-r/keys", json={"name": "loop"})["key"]
        with LoopClient(serving.url("digits-r"), {"inputs": images}, threads=2, key=key) as loop:
            record = client.promote_model("digits-r", policy=POLICY, endpoint=ENDPOINT, wait=False)
            assert record["state"] == "running" and record["model"] == "digits-r"
            deadline = time.monotonic() + 240
            while record["state"] == "running" and time.monotonic() < deadline:
                time.sleep(1.0)
                record = client.get_promotion(record["id"])
            done = time.monotonic()
            time.sleep(1.0)
        assert record["state"] == "promoted", record
        assert [e["kind"] for e in record["events"]] == ["compared", "canary_started", "promoted"]
        assert loop.failures() == [], loop.failures()[:5]
        assert {v1, v2} <= {a[2] for a in loop.answers} and loop.versions_after(done) == {v2}
        history = client.model_history("digits-r")
        assert history["champion"] == v2 and history["active"] == []
        assert [e["kind"] for e in history["events"]][-3:] == ["compared", "canary_started", "promoted"]
        assert client.predict("digits-r", {"inputs": images})["classes"]

        monkeypatch.setenv("TRAINYARD_URL", srv.url)
        monkeypatch.setenv("TRAINYARD_TOKEN", srv.token)
        capsys.readouterr()
        assert cli.main(["endpoints", "show", "digits-r"]) == 0
        out = capsys.readouterr().out
        assert "family cnn" in out and "family None" not in out
        client.delete_endpoint("digits-r")
    finally:
        srv.stop()


class Phases:
    """Names the spans of a LoopClient run, to count answers per phase."""

    def __init__(self, loop):
        self.loop, self.spans = loop, []

    def __call__(self, name):
        phases = self

        class _Span:
            def __enter__(self):
                self.t0 = time.monotonic()

            def __exit__(self, *exc):
                phases.spans.append((name, self.t0, time.monotonic()))

        return _Span()

    def summary(self) -> dict:
        out = {}
        for name, t0, t1 in self.spans:
            answers = [a for a in self.loop.answers if t0 <= a[0] <= t1]
            out[name] = {"seconds": round(t1 - t0, 1), "sent": len(answers),
                         "failed": sum(a[1] != 200 for a in answers),
                         "versions": sorted({a[2] for a in answers if a[2]})}
        return out


def _replica_ids(app: dict) -> set:
    return {r["replica_id"] for d in (app.get("deployments") or {}).values() for r in d.get("replicas") or []
            if r.get("state") == "RUNNING"}


def test_per_version_split_changes_its_version_set_without_failed_or_stale_requests(serving, mlflow_server):
    """split: deployments (each version its own Serve app, behind a router), for models too big to
    hold twice: deploy, canary, promotion, rollback and a move back, under a looping client."""
    from serving_support.load import LoopClient
    from serving_support.models import digits, register_cnn

    v1 = register_cnn(mlflow_server, "digits-d", accuracy=0.5, seed=5)
    v2 = register_cnn(mlflow_server, "digits-d", accuracy=0.6, seed=6)
    v3 = register_cnn(mlflow_server, "digits-d", accuracy=0.9, seed=7, workload="serving_support.families:FLAKY")
    spec = {"model": "digits-d", "split": "deployments", "cpus_per_replica": 0.1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    serving.deploy(spec, version=v1)
    images, _ = digits(1)
    assert len(serving.predict("digits-d", {"inputs": images})["classes"]) == 1
    with pytest.raises(SpecError) as err:  # a 422 from the version's app keeps its field across the hop
        serving.predict("digits-d", {"inputs": [[1, 2]]})
    assert err.value.field == "inputs"
    key = serving.create_key("digits-d", "loop")["key"]  # before the router's replica ids: it restarts none
    router = _replica_ids(serving.get("digits-d").app)
    gone: dict[str, list[float]] = {}  # version -> [app deleted at, deployed again at]
    with LoopClient(serving.url("digits-d"), {"inputs": images}, threads=2, key=key) as loop:
        phase = Phases(loop)
        time.sleep(1.0)
        with phase("canary"):  # v2's app deployed and running before it gets 50%
            state = serving.get("digits-d")
            state = serving.apply(state, state.traffic.with_canary(v2, 0.5))
            time.sleep(2.0)
        v2_replicas = _replica_ids(serving.get("digits-d").version_apps[v2])
        with phase("promotion"):  # all to v2, v1 drained, then its app deleted
            state = serving.apply(state, state.traffic.shift_all_to(v2))
            state = serving.drop_drained(state)
            gone[v1] = [time.monotonic(), float("inf")]
        with phase("rollback"):  # a broken canary: the router falls back to v2, then v3 is removed
            state = serving.apply(state, state.traffic.with_canary(v3, 0.5))
            time.sleep(2.0)
            state = serving.apply(state, state.traffic.shift_all_to(v2))
            state = serving.drop_drained(state)
            gone[v3] = [time.monotonic(), float("inf")]
        assert _replica_ids(serving.get("digits-d").version_apps[v2]) == v2_replicas  # left alone meanwhile
        with phase("deploy"):  # `endpoints deploy --version v1`: a deleted version comes back
            gone[v1][1] = time.monotonic()
            serving.deploy(model="digits-d", version=v1)
            gone[v2] = [time.monotonic(), float("inf")]
        time.sleep(1.0)
    summary = phase.summary()
    print("per-version split under a looping client:", summary)
    assert loop.failures() == [], (summary, loop.failures()[:5])
    assert summary["canary"]["versions"] == sorted({v1, v2})
    assert v3 in summary["rollback"]["versions"]  # the broken canary took traffic (its errors answered by v2)
    for version, (deleted, back) in gone.items():  # no answer from a version while its app was deleted
        assert version not in {a[2] for a in loop.answers if deleted < a[0] < back}, version
    state = serving.get("digits-d")
    assert state.traffic.weights == {v1: 1.0} and set(state.version_apps) == {v1}
    assert set(serving.show("digits-d")["replicas"]) == {"Router", f"Version{v1}"}
    # Serve left the router (and v2's app, through v3's canary) alone: no replica was replaced
    assert _replica_ids(state.app) == router
    serving.delete("digits-d")
    assert not any(name.startswith("digits-d") for name in serving.serve.applications())

"""Endpoints on a real local Ray cluster: real Serve over HTTP, real MLflow registry."""
from __future__ import annotations

import time
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
    # the test-only families (serving_support) must import inside the replicas too
    manager = EndpointManager(serve, registry, tracking_uri=mlflow_server,
                              env={"PYTHONPATH": str(HERE), "TRAINYARD_SERVE_TORCH_THREADS": "1"})
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

    # over plain HTTP, as any client would
    resp = httpx.post(info["url"], json={"inputs": images[0]})
    assert resp.status_code == 200 and resp.headers["x-trainyard-version"] == version
    assert resp.json()["classes"] == want["classes"][:1]

    # a payload of the wrong shape: 422 naming the field
    bad = httpx.post(info["url"], json={"inputs": [[1, 2, 3]]})
    assert bad.status_code == 422 and bad.json()["field"] == "inputs"
    with pytest.raises(SpecError) as err:
        serving.predict("digits-a", {"pixels": images})
    assert err.value.field == "inputs"
    with pytest.raises(NotFoundError):
        serving.predict("no-such-endpoint", {"inputs": images})

    # the OpenAPI page documents the family's request and response schema
    doc = httpx.get(info["url"].replace("/predict", "/openapi.json")).json()
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

    v2 = register_cnn(mlflow_server, "digits-p", accuracy=0.8, seed=2)
    registry.set_alias("digits-p", CANDIDATE, v2)
    images, _ = digits(1)
    with LoopClient(serving.url("digits-p"), {"inputs": images}, threads=2) as loop:
        second = promoter.promote("digits-p", policy=POLICY, endpoint=ENDPOINT)
        done = time.monotonic()
        time.sleep(1.0)
    return {"v1": v1, "v2": v2, "first": first, "second": second, "loop": loop, "done": done,
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
    with LoopClient(serving.url("digits-p"), {"inputs": images}, threads=2) as loop:
        result = Promoter(serving, registry, poll_s=0.5).promote("digits-p", policy=POLICY, endpoint=ENDPOINT)
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

    def running():
        return serving.show("digits-auto")["replicas"]["Endpoint"]["running"]

    images, _ = digits(8)
    with LoopClient(serving.url("digits-auto"), {"inputs": images}, threads=6, pause_s=0) as loop:
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
        assert "digits-api" in {e["name"] for e in api.get("/v1/endpoints").json()["endpoints"]}
        assert api.get("/v1/endpoints/nope").status_code == 404
        bad_policy = api.post("/v1/models/digits-p/promote", json={"policy": {"canary_weight": 1.5}})
        assert bad_policy.status_code == 422 and bad_policy.json()["field"] == "canary_weight"
        bad_version = api.post("/v1/endpoints", json={"model": "digits-p", "version": "999"})
        assert bad_version.status_code == 422 and bad_version.json()["field"] == "version"

        hist = api.get("/v1/models/digits-p/history").json()
        assert hist["champion"] == promoted_model["v2"] and hist["events"]
        assert api.delete("/v1/endpoints/digits-api").status_code == 204
        assert "/v1/endpoints/{name}/predict" in app.openapi()["paths"]


@pytest.mark.slow  # nightly tier: load- and time-driven, minutes on 2 cores
def test_per_version_deployments_option_splits_and_moves_without_failures(serving, mlflow_server):
    """split: deployments (one deployment per version behind a router), for models too big to hold twice."""
    from serving_support.load import LoopClient
    from serving_support.models import digits, register_cnn

    v1 = register_cnn(mlflow_server, "digits-d", accuracy=0.5, seed=5)
    v2 = register_cnn(mlflow_server, "digits-d", accuracy=0.6, seed=6)
    spec = {"model": "digits-d", "split": "deployments", "cpus_per_replica": 0.1,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    serving.deploy(spec, version=v1)
    images, _ = digits(1)
    assert len(serving.predict("digits-d", {"inputs": images})["classes"]) == 1
    with LoopClient(serving.url("digits-d"), {"inputs": images}, threads=2) as loop:
        state = serving.get("digits-d")
        state = serving.apply(state, state.traffic.with_canary(v2, 0.5))
        time.sleep(2.0)
        state = serving.apply(state, state.traffic.shift_all_to(v2))
        serving.drop_drained(state)
        done = time.monotonic()
        time.sleep(1.0)
    assert {v1, v2} <= {a[2] for a in loop.answers if a[1] == 200}
    assert loop.versions_after(done) == {v2}
    deployments = set(serving.get("digits-d").app["deployments"])
    assert f"Version{v1}" not in deployments and f"Version{v2}" in deployments
    with pytest.raises(SpecError) as err:
        serving.predict("digits-d", {"inputs": [[1, 2]]})
    assert err.value.field == "inputs"
    serving.delete("digits-d")
    if loop.failures():
        # Known gap: adding/removing a version changes the app's args, so Serve redeploys every
        # deployment of the app (router included); on 2 busy cores some requests got 500 or
        # timed out meanwhile. The default split (replica) has no such gap.
        pytest.xfail(f"split: deployments is not zero-downtime yet: {len(loop.failures())} of "
                     f"{len(loop.answers)} requests failed while the version set changed")

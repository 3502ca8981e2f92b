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

"""A job's cost record end to end: a real server process, a real Ray head, the real runner
(a tiny ZeRO-2 cnn job on 2 CPU workers) and a real MLflow server.

The record in REST must agree with the ledger's times (CPU-hours = workers x CPUs x hours
held) and with what the runner logged to MLflow (steps, FLOPs of a step, MFU).
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime

import httpx
import pytest

from trainyard.local.processes import free_port, start_process, stop_process
from trainyard.local.stack import server_command

pytestmark = pytest.mark.integration

SPEC = {
    "name": "cost-cnn", "workload": "cnn", "data": {"train_limit": 256},
    "hyperparameters": {"channels": 8, "hidden": 32},
    "resources": {"workers": 2, "cpus_per_worker": 1},
    "deepspeed": {"zero_stage": 2},
    "training": {"max_steps": 4, "batch_size": 32, "eval_every_steps": 4, "log_every_steps": 1},
    "checkpoint": {"every_steps": 4, "keep": 1},
    "tracking": {"experiment": "cost-it", "register_model": False},
}


@pytest.fixture(scope="module")
def cost_server(test_root, ray_head, mlflow_server):
    root = test_root / "job-cost"
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray.token").write_text(ray_head.token + "\n")
    token = "job-cost-token-" + os.urandom(4).hex()
    (home / "admin.token").write_text(token + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"TRAINYARD_HOME": str(home), "TRAINYARD_RAY_DASHBOARD_URL": ray_head.dashboard_url,
           "TRAINYARD_RAY_TOKEN_FILE": str(home / "ray.token"),
           "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
           "TRAINYARD_MLFLOW_URI": mlflow_server, "TRAINYARD_POLL_INTERVAL_S": "0.3",
           "TRAINYARD_STORAGE": f"file://{root / 'storage'}",
           "TRAINYARD_RUNNER_ENTRYPOINT": f"{sys.executable} -m trainyard.runner job --job-id {{job_id}}"}
    proc = start_process("server", server_command(port), url=url, health_url=f"{url}/healthz",
                         log_file=root / "server.log", env=env, timeout=60)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield client, mlflow_server
    finally:
        client.close()
        stop_process(proc.pid)


def _wait_done(client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_finished_job_has_a_consistent_cost_record_in_rest_and_mlflow(cost_server):
    client, mlflow_uri = cost_server
    resp = client.post("/v1/jobs", json={"spec": SPEC})
    assert resp.status_code == 201, resp.text
    job = _wait_done(client, resp.json()["id"])
    assert job["state"] == "SUCCEEDED", job["message"]
    cost = job["cost"]
    assert cost is not None, job

    # the ledger: one attempt, held from start to end; 2 workers x 1 CPU, no GPU
    held = _ts(job["ended_at"]) - _ts(job["started_at"])
    assert cost["allocations"] == 1 and cost["restarts"] == 0
    assert cost["held_seconds"] == pytest.approx(held, abs=1e-3)
    assert cost["cpu_hours"] == pytest.approx(2 * 1 * held / 3600, abs=1e-4)
    assert cost["gpu_hours"] == 0
    assert cost["wall_seconds"] == pytest.approx(cost["queued_seconds"] + cost["running_seconds"], abs=1e-2)
    # the runner's figures: steps timed, FLOPs counted, CPU peak (an estimate)
    assert 0 < cost["busy_fraction"] < 1 and cost["goodput"] == cost["busy_fraction"]
    assert cost["mfu"] is not None and 0 < cost["mfu"] <= 1 and cost["mfu_is_estimate"] is True
    assert cost["accelerator_type"] is None and cost["dtype"] == "fp32"
    assert cost["cost"] is None  # the local cluster declares no node prices

    from mlflow.tracking import MlflowClient

    # the runner's figures (at the end of training) and the controller's record (when the job
    # ended, sent off the controller's tick: wait for it)
    mlflow = MlflowClient(tracking_uri=mlflow_uri)
    deadline = time.monotonic() + 30
    while True:
        run = mlflow.get_run(job["mlflow_run_id"])
        if "cost.cpu_hours" in run.data.metrics or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    metrics, params = run.data.metrics, run.data.params
    assert metrics["cost.steps"] == 4 and metrics["cost.flops_per_step"] > 0
    assert cost["model_flops"] == pytest.approx(metrics["cost.flops_per_step"] * metrics["cost.steps"], rel=1e-9)
    assert cost["mfu"] == pytest.approx(metrics["cost.worker_mfu"], abs=1e-4)
    assert params["cost.peak_per"] == "core"
    assert metrics["cost.step_seconds"] <= held
    # the controller's copy of the record is the REST one
    assert metrics["cost.cpu_hours"] == pytest.approx(cost["cpu_hours"], abs=1e-4)
    assert metrics["cost.gpu_hours"] == 0 and metrics["cost.held_seconds"] == pytest.approx(held, abs=1e-2)
    assert metrics["cost.mfu"] == pytest.approx(cost["mfu"], abs=1e-4)
    assert metrics["cost.busy_fraction"] == pytest.approx(cost["busy_fraction"], abs=1e-4)
    assert params["cost.dtype"] == "fp32" and "cost.money" not in metrics

"""Preemption on a real local Ray cluster (2 CPUs) with a real MLflow server and the real runner.

- End to end (in CI): a real server preempts a low-priority job for a high-priority one.
  Ray's stop_job sends the driver SIGTERM; the job checkpoints after its current step,
  prints TRAINYARD_PREEMPTED and stops; the controller requeues it with its place kept; the
  high-priority job runs; the low one resumes where it stopped, and its per-step loss curve
  equals an uninterrupted run's to the last bit (dropout on, so the checkpoint must carry
  each rank's generators as well as the DeepSpeed state).
- The same through the bare entrypoint (`python -m trainyard.runner job` and a SIGTERM),
  checking its exit code 75 and the MLflow run left KILLED: marked slow (TRAINYARD_SLOW=1),
  as the end-to-end test covers the path and both together exceed the CI allowance.
No timed assertions.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from trainyard.specs import parse_job_spec

pytestmark = pytest.mark.integration

STEPS = 10


def _spec(*, storage: str, env: dict | None = None):
    return parse_job_spec({
        "name": "pre-exact", "workload": "cnn",
        "data": {"train_limit": 512},
        "hyperparameters": {"channels": 8, "hidden": 32, "dropout": 0.5},
        "resources": {"workers": 2, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": 1},
        "training": {"max_steps": STEPS, "batch_size": 32, "lr": 0.003, "eval_every_steps": 5,
                     "log_every_steps": 1},
        "checkpoint": {"every_steps": 5, "keep": 2, "storage": storage},
        "tracking": {"experiment": "preempt-it", "register_model": False},
        "env": env or {},
    })


@pytest.fixture(scope="module")
def storage(test_root):
    path = test_root / "preempt-storage"
    path.mkdir(exist_ok=True)
    return f"file://{path}"


@pytest.fixture(scope="module")
def mlflow_env(mlflow_server):
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    yield mlflow_server
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def straight(ray_head, mlflow_env, storage):
    """The uninterrupted run every preempted one is compared with."""
    from trainyard.runner.train import run_job

    return run_job(_spec(storage=storage), f"straight-{uuid.uuid4().hex[:6]}", emit=lambda line: None,
                   log_model=False)


def _losses(mlflow_uri: str, run_id: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    return {m.step: m.value for m in MlflowClient(mlflow_uri).get_metric_history(run_id, "loss")}


@pytest.mark.slow
def test_a_job_asked_to_stop_checkpoints_and_resumes_exactly(ray_head, mlflow_env, storage, straight):
    from mlflow.tracking import MlflowClient

    from trainyard.errors import EXIT_PREEMPTED
    from trainyard.protocol import PREEMPTED, PROGRESS, RESULT, parse_line
    from trainyard.runner.train import run_job

    client = MlflowClient(mlflow_env)

    def losses(run_id: str) -> dict[int, float]:
        return _losses(mlflow_env, run_id)

    # the same job through the real entrypoint, slowed down (tests-only hook) so that the stop
    # lands mid-run; SIGTERM once it reported step 2
    job_id = f"preempted-{uuid.uuid4().hex[:6]}"
    spec = _spec(storage=storage, env={"TRAINYARD_TEST_STEP_DELAY_S": "0.5"})
    env = {**os.environ, "TRAINYARD_SPEC": spec.model_dump_json()}
    proc = subprocess.Popen([sys.executable, "-m", "trainyard.runner", "job", "--job-id", job_id], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    signalled_at = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            parsed = parse_line(line)
            if signalled_at is None and parsed and parsed[0] == PROGRESS and parsed[1]["step"] >= 2:
                proc.send_signal(signal.SIGTERM)
                signalled_at = time.monotonic()
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert signalled_at is not None, out[-3000:]
    print(f"SIGTERM to exit: {time.monotonic() - signalled_at:.1f}s (informational; busy machine)")
    assert rc == EXIT_PREEMPTED, out[-3000:]
    tagged = [p for p in map(parse_line, lines) if p and p[0] in (PREEMPTED, RESULT)]
    assert [t for t, _ in tagged] == [PREEMPTED], out[-3000:]
    stopped = tagged[0][1]
    assert 2 <= stopped["step"] < STEPS
    assert stopped["checkpoint"].startswith(f"{storage}/default/{job_id}/checkpoint_")
    run = client.get_run(stopped["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert max(losses(run.info.run_id)) == stopped["step"]  # nothing logged past the checkpoint

    # its next attempt: same job id, same storage; no slow-down needed
    second = run_job(_spec(storage=storage), job_id, emit=lambda line: None, log_model=False)
    assert second["mlflow_run_id"] == stopped["mlflow_run_id"]
    resumed = client.get_run(second["mlflow_run_id"])
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["trainyard.resumed_from_step"] == str(stopped["step"])
    a, b = losses(straight["mlflow_run_id"]), losses(second["mlflow_run_id"])
    assert sorted(b) == list(range(1, STEPS + 1)) and sorted(a) == list(range(1, STEPS + 1))
    assert [b[s] for s in range(1, STEPS + 1)] == [a[s] for s in range(1, STEPS + 1)], (a, b)
    assert second["metrics"]["accuracy"] == straight["metrics"]["accuracy"]


@pytest.fixture(scope="module")
def preempt_server(test_root, ray_head, mlflow_env):
    """A real server process with the real runner, preemption on (no minimum runtime)."""
    from trainyard.local.processes import free_port, start_process, stop_process
    from trainyard.local.stack import server_command

    root = test_root / "preempt-server"
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "ray.token").write_text(ray_head.token + "\n")
    token = "preempt-token-" + os.urandom(4).hex()
    (home / "admin.token").write_text(token + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"TRAINYARD_HOME": str(home), "TRAINYARD_RAY_DASHBOARD_URL": ray_head.dashboard_url,
           "TRAINYARD_RAY_TOKEN_FILE": str(home / "ray.token"), "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
           "TRAINYARD_MLFLOW_URI": mlflow_env, "TRAINYARD_POLL_INTERVAL_S": "0.3",
           "TRAINYARD_STORAGE": f"file://{root / 'storage'}",
           "TRAINYARD_PREEMPTION_MIN_RUNTIME_S": "0", "TRAINYARD_PREEMPTION_GRACE_S": "90",
           # the real runner, with this Python (the session's head has no venv on its PATH)
           "TRAINYARD_RUNNER_ENTRYPOINT": f"{sys.executable} -m trainyard.runner job --job-id {{job_id}}"}
    proc = start_process("server", server_command(port), url=url, health_url=f"{url}/healthz",
                         log_file=root / "server.log", env=env, timeout=60)
    import httpx

    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield client, root
    finally:
        client.close()
        stop_process(proc.pid)


def _wait_job(client, job_id: str, until, *, timeout: float = 240.0, what: str = "") -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if job.get("state") in ("FAILED", "CANCELLED"):
            break
        time.sleep(0.5)
    raise AssertionError(f"job {job_id}: never {what}: {job}")


def test_the_controller_preempts_a_low_priority_job_and_it_resumes_exactly(preempt_server, mlflow_env, straight):
    """End to end: server -> plan_tick -> Ray stop_job -> SIGTERM -> checkpoint -> requeued with
    its place kept -> the high-priority job runs -> the low one resumes where it stopped, on the
    uninterrupted run's loss curve."""
    from mlflow.tracking import MlflowClient

    client, root = preempt_server
    low_spec = _spec(storage=f"file://{root / 'storage'}", env={"TRAINYARD_TEST_STEP_DELAY_S": "0.5"})
    body = low_spec.model_dump(mode="json", exclude_none=True)
    body["checkpoint"].pop("storage")  # the server's default storage
    resp = client.post("/v1/jobs", json={"spec": {**body, "name": "low"}})
    assert resp.status_code == 201, resp.text
    low = resp.json()["id"]
    _wait_job(client, low, lambda j: ((j.get("progress") or {}).get("step") or 0) >= 2, what="at step 2")

    high_spec = {"name": "high", "workload": "cnn", "priority": 10, "data": {"train_limit": 128},
                 "hyperparameters": {"channels": 4, "hidden": 8},
                 "resources": {"workers": 2, "cpus_per_worker": 1},
                 "training": {"max_steps": 2, "batch_size": 32}, "tracking": {"register_model": False}}
    resp = client.post("/v1/jobs", json={"spec": high_spec})
    assert resp.status_code == 201, resp.text
    high = resp.json()["id"]

    done_high = _wait_job(client, high, lambda j: j["state"] == "SUCCEEDED", what="SUCCEEDED")
    done_low = _wait_job(client, low, lambda j: j["state"] == "SUCCEEDED", what="SUCCEEDED")
    moves = [(e["from"], e["to"]) for e in done_low["events"]]
    assert moves.index(("RUNNING", "PREEMPTING")) < moves.index(("PREEMPTING", "PREEMPTED")) \
        < moves.index(("PREEMPTED", "DISPATCHING"))
    checkpointed = next(e["reason"] for e in done_low["events"] if e["to"] == "PREEMPTED")
    assert checkpointed.startswith("preempted: checkpointed at step "), checkpointed
    step = int(checkpointed.split("step ")[1].split(" ")[0])
    assert 2 <= step < STEPS
    assert done_low["preemptions"] == 1 and done_low["preempted_s"] > 0 and done_low["attempt"] == 2
    # the high-priority job started after the low one was asked to leave, and before it came back
    high_started = next(e["at"] for e in done_high["events"] if e["to"] == "RUNNING")
    asked = next(e["at"] for e in done_low["events"] if e["to"] == "PREEMPTING")
    back = [e["at"] for e in done_low["events"] if e["to"] == "RUNNING"][-1]
    assert asked < high_started < back
    run = MlflowClient(mlflow_env).get_run(done_low["mlflow_run_id"])
    assert run.data.tags["trainyard.resumed_from_step"] == str(step)
    history = MlflowClient(mlflow_env).get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))  # each step once: none lost, none redone
    a, b = _losses(mlflow_env, straight["mlflow_run_id"]), {m.step: m.value for m in history}
    assert [b[s] for s in range(1, STEPS + 1)] == [a[s] for s in range(1, STEPS + 1)], (a, b)
    assert done_low["metrics"]["accuracy"] == straight["metrics"]["accuracy"]

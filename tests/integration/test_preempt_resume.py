"""Preemption on a real local Ray cluster (2 CPUs) with a real MLflow server.

- The real job entrypoint (`python -m trainyard.runner job`) gets SIGTERM mid-run (what Ray's
  stop_job sends when the controller preempts it): it checkpoints after its current step,
  prints TRAINYARD_PREEMPTED and exits 75. The next run of the same job resumes there, and
  its per-step loss curve equals an uninterrupted run's, to the last bit (dropout on, so
  the checkpoint must carry each rank's generators as well as the DeepSpeed state).
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


def test_a_job_asked_to_stop_checkpoints_and_resumes_exactly(ray_head, mlflow_env, storage):
    from mlflow.tracking import MlflowClient

    from trainyard.errors import EXIT_PREEMPTED
    from trainyard.protocol import PREEMPTED, PROGRESS, RESULT, parse_line
    from trainyard.runner.train import run_job

    client = MlflowClient(mlflow_env)

    def losses(run_id: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, "loss")}

    straight = run_job(_spec(storage=storage), f"straight-{uuid.uuid4().hex[:6]}", emit=lambda line: None,
                       log_model=False)

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

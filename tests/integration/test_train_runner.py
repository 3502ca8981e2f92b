"""The runner on a real local Ray cluster (2 CPUs), a real MLflow server and moto S3.

cnn on 2 workers under ZeRO 1, 2 and 3, a few steps each on a slice of the data:
- ZeRO-2: the MLflow run holds params, metrics, artifacts and a registered model that
  loads and predicts;
- ZeRO-1: rank 1 gets SIGTERM (a node's stop notice): the group checkpoints at the next
  step boundary and restarts from there; later rank 1 dies with no notice: the group
  restarts from the last periodic checkpoint; both into the same MLflow run;
- ZeRO-3: checkpoints in the moto S3 bucket; a second run of the same job id, through the
  real entrypoint (`python -m trainyard.runner job`), resumes from them.
No timed assertions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from trainyard.specs import parse_job_spec

pytestmark = pytest.mark.integration


def _spec(name: str, *, zero: int, max_steps: int, every: int, storage: str | None = None,
          max_failures: int = 0, env: dict | None = None, experiment: str = "runner-it",
          training: dict | None = None, project: str = "default"):
    return parse_job_spec({
        "name": name, "workload": "cnn", "project": project,
        "data": {"train_limit": 512},
        "hyperparameters": {"channels": 8, "hidden": 32},
        "resources": {"workers": 2, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": zero},
        "training": {"max_steps": max_steps, "batch_size": 32, "lr": 0.003, "eval_every_steps": every,
                     "log_every_steps": 1, **(training or {})},
        "checkpoint": {"every_steps": every, "keep": 2, **({"storage": storage} if storage else {})},
        "failure": {"max_failures": max_failures},
        "tracking": {"experiment": experiment, "model_name": f"{name}-model"},
        "env": env or {},
    })


def _job_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def storage(test_root):
    path = test_root / "runner-storage"
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


def _progress_collector():
    lines: list[str] = []
    return lines, lines.append


def test_zero2_job_logs_run_and_registers_a_model_that_predicts(ray_head, mlflow_env, storage, monkeypatch):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.protocol import PROGRESS, parse_line
    from trainyard.runner.train import run_job
    from trainyard.tracking.model import load_trainyard_model

    # what the server gives the driver: whose job it is, in which project
    monkeypatch.setenv("TRAINYARD_USER", "alice")
    monkeypatch.setenv("TRAINYARD_PROJECT", "vision")
    spec = _spec("rt-zero2", zero=2, max_steps=6, every=3, storage=storage, project="vision")
    job_id = _job_id("z2")
    lines, emit = _progress_collector()
    result = run_job(spec, job_id, emit=emit)

    assert set(result) >= {"metrics", "mlflow_run_id", "mlflow_experiment_id", "model_name",
                           "model_version", "checkpoint"}
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and "eval_loss" in result["metrics"]
    assert result["checkpoint"].startswith(storage + "/vision/" + job_id + "/checkpoint_")
    progress = [parse_line(line) for line in lines]
    assert progress and all(p and p[0] == PROGRESS for p in progress)
    assert max(p[1]["step"] for p in progress) == 6
    assert all(p[1]["total_steps"] == 6 for p in progress)

    client = MlflowClient(mlflow_env)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "rt-zero2"
    assert run.data.tags["trainyard.job_id"] == job_id
    assert (run.data.tags["trainyard.user"], run.data.tags["trainyard.project"]) == ("alice", "vision")
    assert client.get_experiment(run.info.experiment_id).name == "vision/runner-it"  # per project
    assert run.data.params["deepspeed.zero_stage"] == "2"
    assert "as requested" in run.data.params["deepspeed.reason"]
    assert run.data.params["hyperparameters.channels"] == "8"
    assert run.data.params["training.max_steps"] == "6"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [3, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"spec.yaml", "loss_curve.png"} <= artifacts

    assert result["model_name"] == "rt-zero2-model" and result["model_version"]
    assert client.get_registered_model("rt-zero2-model").tags["trainyard.project"] == "vision"
    assert client.get_model_version("rt-zero2-model", result["model_version"]).tags["trainyard.project"] == "vision"
    uri = f"models:/{result['model_name']}/{result['model_version']}"
    workload, models, hparams = load_trainyard_model(uri)
    assert workload.name == "cnn" and hparams["channels"] == 8 and set(models) == {"model"}
    from workloads.cnn.data import digits_arrays

    x_test = digits_arrays()[2][:3, 0] * 16.0
    import mlflow.pyfunc

    answer = mlflow.pyfunc.load_model(uri).predict({"inputs": x_test.tolist()})
    assert len(answer["classes"]) == 3 and len(answer["probabilities"][0]) == 10
    assert json.loads(json.dumps(answer)) == answer  # JSON out


def test_a_worker_told_to_leave_checkpoints_and_one_killed_midway_resumes_from_last_checkpoint(
        ray_head, mlflow_env, storage, test_root):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.train import run_job

    marker = test_root / f"crash-{uuid.uuid4().hex[:6]}"
    notice = test_root / f"notice-{uuid.uuid4().hex[:6]}"
    # rank 1 gets SIGTERM (its node's stop notice) once, right after step 1, so during step 2:
    # the group checkpoints at step 2's boundary, off the every-3 schedule, and restarts from
    # it; later rank 1 exits (os._exit) once, right after step 5, with no notice: the group
    # restarts from the periodic checkpoint of step 3
    spec = _spec("rt-crash", zero=1, max_steps=8, every=3, storage=storage, max_failures=2,
                 env={"TRAINYARD_TEST_CRASH": f"1:5:{marker}", "TRAINYARD_TEST_NOTICE": f"1:1:{notice}"},
                 training={"lr_schedule": "linear", "warmup_steps": 2})
    job_id = _job_id("z1")
    result = run_job(spec, job_id, emit=lambda line: None)

    assert marker.exists() and notice.exists(), "a test hook never fired"
    assert "accuracy" in result["metrics"]
    # each worker group: where it resumed (the notice's checkpoint, then the periodic one)
    assert [s["resumed_step"] for s in result["usage"]["segments"]] == [0, 2, 3], result["usage"]
    client = MlflowClient(mlflow_env)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["trainyard.resumed_from_step"] == "3"
    assert run.data.params["deepspeed.zero_stage"] == "1"
    runs = client.search_runs([result["mlflow_experiment_id"]],
                              filter_string=f"tags.`trainyard.job_id` = '{job_id}'")
    assert len(runs) == 1  # the restarted worker groups logged into the same run
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert max(steps) == 8 and set(range(1, 9)) <= set(steps)
    assert steps.count(1) == 1 and steps.count(2) == 1  # the notice lost no step: none ran twice
    # the optimizer followed the warm-up and decay, and the resumed groups went on with the curve
    lrs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "lr")}
    assert set(lrs) == set(range(1, 9))
    assert lrs == pytest.approx({s: spec.training.lr_at(s - 1, 8) for s in range(1, 9)})
    assert lrs[1] < lrs[2] == pytest.approx(0.003) and lrs[8] < lrs[3]


def test_zero3_checkpoints_to_s3_and_a_resubmission_resumes(ray_head, mlflow_env, moto_s3, monkeypatch):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.protocol import PROGRESS, RESULT, parse_line
    from trainyard.runner.train import run_job

    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    s3_storage = f"s3://{moto_s3.bucket}/ckpts"
    job_id = _job_id("z3")
    first = run_job(_spec("rt-zero3", zero=3, max_steps=4, every=2, storage=s3_storage), job_id,
                    emit=lambda line: None)
    assert first["checkpoint"].startswith(f"s3://{moto_s3.bucket}/ckpts/default/{job_id}/checkpoint_")
    fs = moto_s3.fs()
    saved = fs.find(f"{moto_s3.bucket}/ckpts/default/{job_id}")
    assert any(p.endswith("trainyard_state.json") for p in saved)
    # ZeRO-3: each rank saved its own shard of the parameters and optimizer states
    assert any("zero_pp_rank_1" in p for p in saved) and any("zero_pp_rank_0" in p for p in saved)

    # the same job id, 4 more steps, through the real entrypoint as a Ray job driver would run it
    spec = _spec("rt-zero3", zero=3, max_steps=8, every=2, storage=s3_storage)
    env = {**os.environ, "TRAINYARD_SPEC": spec.model_dump_json()}
    proc = subprocess.run([sys.executable, "-m", "trainyard.runner", "job", "--job-id", job_id],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parsed = [parse_line(line) for line in proc.stdout.splitlines() if line.startswith("TRAINYARD_")]
    steps = [p[1]["step"] for p in parsed if p[0] == PROGRESS]
    results = [p[1] for p in parsed if p[0] == RESULT]
    # resumed after step 4, not from scratch. Progress lines are a display stream and one may
    # be dropped under load (seen once in CI: 6, 6, 7, 8); MLflow's history below is the record.
    assert steps and 5 <= min(steps) <= 6 and max(steps) == 8
    assert len(results) == 1
    second = results[0]
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    assert second["checkpoint"].startswith(f"s3://{moto_s3.bucket}/ckpts/default/{job_id}/")
    assert second["checkpoint"] != first["checkpoint"]
    run = MlflowClient(mlflow_env).get_run(second["mlflow_run_id"])
    assert run.data.tags["trainyard.resumed_from_step"] == "4"
    assert run.data.params["deepspeed.zero_stage"] == "3"
    assert int(second["model_version"]) == int(first["model_version"]) + 1


def test_a_bad_spec_exits_2_with_an_error_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nworkload: cnnn\n")
    proc = subprocess.run([sys.executable, "-m", "trainyard.runner", "job", "--job-id", "x",
                           "--spec-file", str(spec)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout.startswith("TRAINYARD_ERROR ") and "did you mean 'cnn'" in proc.stdout


def test_a_resumed_run_goes_on_exactly_as_an_uninterrupted_one(ray_head, mlflow_env, storage):
    """Dropout draws from each rank's torch generator: a run resumed from its step-4 checkpoint
    logs the same losses at steps 5-8, to the last bit, as the same job run straight through
    (the checkpoint holds each rank's random generators as well as the DeepSpeed state)."""
    from mlflow.tracking import MlflowClient

    from trainyard.runner.train import run_job

    def spec(max_steps: int):
        s = _spec("rt-exact", zero=1, max_steps=max_steps, every=4, storage=storage)
        return s.model_copy(update={"hyperparameters": {**s.hyperparameters, "dropout": 0.5}})

    client = MlflowClient(mlflow_env)

    def losses(run_id: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, "loss")}

    # no model logged: this compares training only (the ZeRO-2 test above covers the model),
    # and each logging gathers the weights and registers a version, three times over
    straight = run_job(spec(8), _job_id("straight"), emit=lambda line: None, log_model=False)
    job_id = _job_id("resumed")
    first = run_job(spec(4), job_id, emit=lambda line: None, log_model=False)
    second = run_job(spec(8), job_id, emit=lambda line: None, log_model=False)
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    assert client.get_run(second["mlflow_run_id"]).data.tags["trainyard.resumed_from_step"] == "4"
    a, b = losses(straight["mlflow_run_id"]), losses(second["mlflow_run_id"])
    assert set(range(1, 9)) <= set(a) and set(range(1, 9)) <= set(b)
    assert [b[s] for s in range(1, 9)] == [a[s] for s in range(1, 9)], (a, b)
    assert second["metrics"]["accuracy"] == straight["metrics"]["accuracy"]


def test_a_model_name_belongs_to_the_project_that_registered_it(mlflow_env):
    from mlflow.tracking import MlflowClient

    from trainyard.errors import ConflictError
    from trainyard.tracking.registry import claim_model, model_project

    client = MlflowClient(mlflow_env)
    name = f"owned-{uuid.uuid4().hex[:6]}"
    claim_model(client, name, project="vision")
    claim_model(client, name, project="vision")  # its own project again: fine
    with pytest.raises(ConflictError, match="belongs to project 'vision', not 'nlp'"):
        claim_model(client, name, project="nlp")
    assert model_project(client.get_registered_model(name).tags) == "vision"
    # registered before projects existed: the default project's
    legacy = f"legacy-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(legacy)
    assert model_project(client.get_registered_model(legacy).tags) == "default"
    with pytest.raises(ConflictError, match="belongs to project 'default'"):
        claim_model(client, legacy, project="nlp")
    claim_model(client, legacy, project="default")
    assert client.get_registered_model(legacy).tags["trainyard.project"] == "default"

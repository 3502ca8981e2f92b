"""Sweeps on a real local Ray cluster with a real MLflow server.

Every trial runs the job's real worker loop (DeepSpeed on CPU) on a slice of the cnn family's
data, for a few steps, under either trial executor: "train" (a TorchTrainer gang per trial)
or "inline" (the loop in a reused Tune trial actor, what `auto` picks for 1 worker).
The features that depend on how a trial runs (reports for ASHA, PBT's checkpoint restore,
MLflow child runs, resume, file:// and s3:// checkpoints) run under both. No timed assertions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from trainyard.specs import parse_sweep_spec

pytestmark = pytest.mark.integration


def _spec(name: str, *, sweep: dict, workers: int = 1, zero: int = 1, epochs: int = 3,
          train_limit: int = 128, storage: str, experiment: str = "sweeps-it", executor: str | None = None,
          **extra) -> object:
    if executor is not None:
        sweep = {**sweep, "trial_executor": executor}
    data = {
        "name": name, "workload": "cnn",
        "data": {"train_limit": train_limit},
        "hyperparameters": {"channels": 8, "hidden": 32},
        "resources": {"workers": workers, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": zero},
        "training": {"epochs": epochs, "batch_size": 32, "log_every_steps": 100},
        "checkpoint": {"storage": storage, "keep": 2},
        "tracking": {"experiment": experiment, "model_name": f"{name}-model"},
        "sweep": sweep,
        **extra,
    }
    return parse_sweep_spec(data)


@pytest.fixture(scope="module")
def storage(test_root):
    path = test_root / "sweep-storage"
    path.mkdir(exist_ok=True)
    return f"file://{path}"


def _sid() -> str:
    return uuid.uuid4().hex[:8]


def _saved_states(exp_dir) -> dict[str, str]:
    """trial_id -> status in Tune's saved experiment state (what a restore starts from);
    a RUNNING trial whose saved state already holds a checkpoint reads RUNNING+CKPT."""
    states: dict[str, str] = {}
    for path in sorted(exp_dir.glob("experiment_state-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written
        for item in data.get("trial_data", []):
            trial = json.loads(item[0]) if isinstance(item[0], str) else item[0]
            status = trial["status"]
            if status == "RUNNING" and "checkpoint_0" in str(item[1]):
                status = "RUNNING+CKPT"
            states[trial["trial_id"]] = status
    return states


EXECUTORS = pytest.mark.parametrize("executor", ["inline", "train"])


@EXECUTORS
def test_asha_sweep_records_parent_children_candidate_and_leaderboard(ray_head, mlflow_server, storage, executor,
                                                                       monkeypatch):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.sweep import run_sweep

    monkeypatch.setenv("TRAINYARD_USER", "bob")  # the server's word on whose sweep it is
    monkeypatch.setenv("TRAINYARD_PROJECT", "nlp")
    name = f"sweep-asha-{executor}"
    spec = _spec(name, storage=storage, executor=executor, project="nlp", promote={"canary_weight": 0.2}, sweep={
        "search_space": {"training.lr": {"loguniform": [1e-3, 2e-2]},
                         "hyperparameters.channels": {"choice": [4, 8]}},
        "algorithm": "random", "scheduler": "asha", "num_trials": 4, "max_concurrent_trials": 2,
        "asha": {"grace_period": 1, "reduction_factor": 2}})
    lines: list[str] = []
    sid = _sid()
    result = run_sweep(spec, sweep_id=sid, tracking_uri=mlflow_server, emit=lines.append)
    assert result["trial_executor"] == executor

    board = result["leaderboard"]
    assert len(board["rows"]) == 4
    assert {r["state"] for r in board["rows"]} <= {"DONE", "STOPPED"}
    assert result["best"]["metric"] == max(r["metric"] for r in board["rows"])
    assert board["best_so_far"] and board["curves"]
    assert any(line.startswith("TRAINYARD_PROGRESS ") and '"leaderboard"' in line for line in lines)

    client = MlflowClient(tracking_uri=mlflow_server)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.data.tags["trainyard.sweep_id"] == sid
    assert client.get_experiment(parent.info.experiment_id).name == "nlp/sweeps-it"
    assert f"best_accuracy" in parent.data.metrics
    assert any(k.startswith("best.training.lr") for k in parent.data.params)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.json", "learning_curves.png"} <= artifacts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4  # one per trial, none per rank
    assert len({c.data.tags["trainyard.trial_id"] for c in children}) == 4
    assert all("accuracy" in c.data.metrics for c in children)
    for run in (parent, *children):  # the sweep's user and project on every run of it
        assert (run.data.tags["trainyard.user"], run.data.tags["trainyard.project"]) == ("bob", "nlp")
    # every child run is closed, none left RUNNING: a trial ASHA stopped is FINISHED and tagged
    # trainyard.stopped_early=true (it closes its own run, or the driver does if its actor died)
    by_trial = {c.data.tags["trainyard.trial_id"]: c for c in children}
    for row in board["rows"]:
        child = by_trial[row["trial"]]
        assert child.info.status == "FINISHED", (row["trial"], row["state"], child.info.status)
        assert child.data.tags.get("trainyard.stopped_early") == ("true" if row["state"] == "STOPPED" else "false")

    version = client.get_model_version_by_alias(f"{name}-model", "candidate")
    assert version.tags["trainyard.sweep_id"] == sid
    assert version.tags["trainyard.trial_id"] == result["registered_trial"]
    assert version.tags["trainyard.project"] == "nlp"
    assert client.get_registered_model(f"{name}-model").tags["trainyard.project"] == "nlp"
    assert result["experiment_path"].startswith(storage[len("file://"):] + "/nlp/sweep-")  # project prefix


def test_bayesian_search_runs_through_optuna(ray_head, storage):
    from trainyard.runner.sweep import run_sweep

    # executor: auto (inline for 1 worker)
    spec = _spec("sweep-bayes", storage=storage, epochs=2, sweep={
        "search_space": {"training.lr": {"loguniform": [1e-3, 2e-2]},
                         "hyperparameters.dropout": {"uniform": [0.0, 0.3]}},
        "algorithm": "bayesian", "num_trials": 3, "max_concurrent_trials": 2, "seed": 1})
    result = run_sweep(spec, sweep_id=_sid(), tracking_uri=None, register=False)
    rows = result["leaderboard"]["rows"]
    assert len(rows) == 3 and all(r["state"] == "DONE" for r in rows)
    # what the controller sums into the sweep's cost: each trial's span and its step figures
    usage = result["trials_usage"]
    assert sorted(u["trial"] for u in usage) == sorted(r["trial"] for r in rows)
    assert all(u["start"] <= u["end"] and u["steps"] > 0 and 0 < u["step_seconds"] <= u["end"] - u["start"] + 1
               and u["flops_per_step"] > 0 for u in usage)
    # the search state on disk is Optuna's (the searcher Tune checkpointed)
    exp = result["experiment_path"]
    assert any(name.startswith("searcher-state") for name in os.listdir(exp))
    state_files = [n for n in os.listdir(exp) if n.startswith("searcher-state")]
    blob = open(os.path.join(exp, state_files[0]), "rb").read()
    assert b"optuna" in blob.lower()


@EXECUTORS
def test_pbt_exploits_and_restores_deepspeed_checkpoints(ray_head, mlflow_server, storage, executor):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.sweep import run_sweep

    # synch: both trials pause at evaluation 2 and the worse one clones the better one, however
    # far apart the two started on a busy machine. 3 epochs: one perturbation (at 2, none at 3).
    # With 4, PBT paused and restarted both trials a second time at the last evaluation, where
    # the clone only loaded a checkpoint to end at once: nothing this test checks, and under
    # the train executor two more worker groups started and stopped
    spec = _spec(f"sweep-pbt-{executor}", storage=storage, epochs=3, executor=executor, sweep={
        "search_space": {"training.lr": {"loguniform": [1e-4, 3e-2]}},
        "algorithm": "random", "scheduler": "pbt", "num_trials": 2, "max_concurrent_trials": 2,
        "seed": 3, "pbt": {"perturbation_interval": 2, "quantile_fraction": 0.5, "synch": True}})
    result = run_sweep(spec, sweep_id=_sid(), tracking_uri=mlflow_server, register=False)
    assert result["pbt_clones"] >= 1, {k: v for k, v in result.items() if k != "leaderboard"}
    assert result["restores"] >= result["pbt_clones"]
    client = MlflowClient(tracking_uri=mlflow_server)
    children = client.search_runs([result["mlflow_experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'")
    assert len(children) == 2
    # rank 0 tags the run when it loaded a DeepSpeed checkpoint at start: one trial loaded the
    # other trial's checkpoint (train: <exp>-trials/<trial>-<run>/checkpoint_N, a Train run's;
    # inline: <exp>/<trial>/checkpoint_N, Tune's own)
    by_trial = {c.data.tags["trainyard.trial_id"]: c.data.tags.get("trainyard.resumed_from", "") for c in children}
    sep = "-" if executor == "train" else "/"
    assert any(path and f"/{other}{sep}" in path for trial, path in by_trial.items()
               for other in by_trial if other != trial), by_trial


def test_zero2_trials_of_two_workers_with_s3_checkpoints(ray_head, moto_s3, monkeypatch):
    """executor auto: train, for gangs of 2 workers."""
    from trainyard.runner.sweep import run_sweep

    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    storage = f"s3://{moto_s3.bucket}/sweeps"
    spec = _spec("sweep-zero2", storage=storage, workers=2, zero=2, epochs=2, sweep={
        "search_space": {"training.lr": {"grid": [3e-3, 1e-2]}},
        "algorithm": "grid", "max_concurrent_trials": 1})
    sid = _sid()
    result = run_sweep(spec, sweep_id=sid, tracking_uri=None, register=False)
    rows = result["leaderboard"]["rows"]
    assert len(rows) == 2 and all(r["state"] == "DONE" for r in rows)
    assert sorted(r["params"]["training.lr"] for r in rows) == [3e-3, 1e-2]
    # Tune's experiment and every trial's DeepSpeed checkpoints went to S3
    fs = moto_s3.fs()
    assert fs.exists(f"{moto_s3.bucket}/sweeps/default/sweep-{sid}/tuner.pkl")
    shards = fs.glob(f"{moto_s3.bucket}/sweeps/default/sweep-{sid}-trials/**/mp_rank_00_model_states.pt")
    assert len(shards) >= 2, shards
    assert result["trial_executor"] == "train"


def test_inline_trials_checkpoint_to_s3(ray_head, moto_s3, monkeypatch):
    from trainyard.runner.sweep import run_sweep

    for key, value in moto_s3.env().items():
        monkeypatch.setenv(key, value)
    spec = _spec("sweep-inline-s3", storage=f"s3://{moto_s3.bucket}/sweeps", epochs=2, sweep={
        "search_space": {"training.lr": {"grid": [3e-3, 1e-2]}},
        "algorithm": "grid", "max_concurrent_trials": 2})
    sid = _sid()
    result = run_sweep(spec, sweep_id=sid, tracking_uri=None, register=False)
    assert result["trial_executor"] == "inline"
    rows = result["leaderboard"]["rows"]
    assert len(rows) == 2 and all(r["state"] == "DONE" for r in rows)
    # the DeepSpeed checkpoints are Tune's: under each trial's folder of the experiment
    shards = moto_s3.fs().glob(f"{moto_s3.bucket}/sweeps/default/sweep-{sid}/*/checkpoint_*/model/"
                               "**/mp_rank_00_model_states.pt")
    assert len({s.split(f"sweep-{sid}/")[1].split("/")[0] for s in shards}) == 2, shards


@EXECUTORS
def test_killed_sweep_resumes_without_rerunning_trials(ray_head, mlflow_server, storage, test_root, executor):
    from mlflow.tracking import MlflowClient

    spec = _spec(f"sweep-resume-{executor}", storage=storage, epochs=3, executor=executor, sweep={
        "search_space": {"training.lr": {"grid": [2e-3, 5e-3, 1e-2, 2e-2]}},
        "algorithm": "grid", "max_concurrent_trials": 2})
    spec_file = test_root / f"sweep-resume-{executor}.json"
    spec_file.write_text(spec.model_dump_json())
    sid = _sid()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cmd = [sys.executable, "-m", "trainyard.runner", "sweep", "--sweep-id", sid, "--spec-file", str(spec_file)]

    # first driver: killed (SIGKILL) once Tune has saved a finished trial and a running one
    # that already checkpointed
    exp_dir = Path(storage[len("file://"):]) / "default" / f"sweep-{sid}"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done_before: set[str] = set()
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if not line.startswith("TRAINYARD_PROGRESS "):
                continue
            payload = json.loads(line.split(" ", 1)[1])
            saved = _saved_states(exp_dir)
            done = {r["trial"] for r in payload["leaderboard"] if r["state"] == "DONE"}
            running = [r for r in payload["leaderboard"] if saved.get(r["trial"]) == "RUNNING+CKPT"]
            done_before = {t for t in done if saved.get(t) == "TERMINATED"}
            if done_before and running:
                break
    finally:
        proc.kill()
        proc.wait()
    assert done_before, "the first driver never finished a trial:\n" + "".join(seen[-60:])

    # second driver, same sweep id: resumes
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = next(json.loads(l.split(" ", 1)[1]) for l in out.stdout.splitlines()
                  if l.startswith("TRAINYARD_RESULT "))
    assert result["resumed"] is True
    rows = {r["trial"]: r for r in result["leaderboard"]["rows"]}
    assert len(rows) == 4 and all(r["state"] == "DONE" for r in rows.values())
    # a trial finished before the kill was not run again: its 3 evaluations, once each
    for trial in done_before:
        assert [c[1] for c in result["leaderboard"]["curves"][trial]] == [1, 2, 3]
    client = MlflowClient(tracking_uri=mlflow_server)
    children = client.search_runs([result["mlflow_experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'")
    assert len(children) == 4  # no trial got a second run
    assert any("trainyard.resumed_from" in c.data.tags for c in children), \
        "no interrupted trial restored from its checkpoint"

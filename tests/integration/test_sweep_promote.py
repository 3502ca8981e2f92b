"""Promotion-based ASHA (sweep.asha.strategy: promote) on a real local Ray cluster with a real
MLflow server: trials pause at the rung, the rung's top third resume from their DeepSpeed
checkpoints and train to the end, the rest are stopped when nothing is left to run."""
from __future__ import annotations

import uuid

import pytest

from trainyard.specs import parse_sweep_spec

pytestmark = pytest.mark.integration


def _spec(name: str, storage, *, lr: dict, num_trials: int, seed: int, extra_space: dict | None = None):
    return parse_sweep_spec({
        "name": name, "workload": "cnn", "data": {"train_limit": 128},
        "hyperparameters": {"hidden": 32},
        "resources": {"workers": 1, "cpus_per_worker": 1}, "deepspeed": {"zero_stage": 1},
        "training": {"epochs": 3, "batch_size": 32, "log_every_steps": 100},
        "checkpoint": {"storage": f"file://{storage}", "keep": 1},
        "tracking": {"experiment": "sweeps-promote-it", "model_name": f"{name}-model"},
        "sweep": {"search_space": {"training.lr": lr, **(extra_space or {})},
                  "algorithm": "random", "scheduler": "asha", "num_trials": num_trials,
                  "max_concurrent_trials": 2, "seed": seed,
                  "asha": {"grace_period": 1, "reduction_factor": 3, "max_t": 3, "strategy": "promote"}}})


def test_promotion_asha_pauses_at_the_rung_and_resumes_the_top_third(ray_head, mlflow_server, test_root):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.sweep import run_sweep

    storage = test_root / "sweep-promote"
    storage.mkdir(exist_ok=True)
    spec = _spec("sweep-promote", storage, lr={"loguniform": [1e-4, 5e-2]}, num_trials=9, seed=7,
                 extra_space={"hyperparameters.channels": {"choice": [4, 8, 16]}})
    result = run_sweep(spec, sweep_id=uuid.uuid4().hex[:8], tracking_uri=mlflow_server, register=False)

    board = result["leaderboard"]
    rows = {r["trial"]: r for r in board["rows"]}
    assert len(rows) == 9
    done = [t for t, r in rows.items() if r["state"] == "DONE"]
    stopped = [t for t, r in rows.items() if r["state"] == "STOPPED"]
    assert len(done) + len(stopped) == 9, board["rows"]
    # the rung (1 evaluation) holds 9 trials: floor(9/3) = 3 go on, a 4th at most when one was
    # promoted early while the rung was still small
    assert 3 <= len(done) <= 4, board["rows"]
    for t in stopped:
        assert rows[t]["iterations"] == 1, rows[t]  # paused at the rung, never resumed
    for t in done:
        curve = board["curves"][t]
        # resumed from its checkpoint: evaluations 1, 2, 3 at steps 4, 8, 12, none run twice
        assert [c[1] for c in curve] == [1, 2, 3], curve
        assert [c[2] for c in curve] == [4, 8, 12], curve
    rung = {t: board["curves"][t][0][3] for t in rows}
    assert max(rung.values()) == max(rung[t] for t in done)  # the rung's best went on
    # the scheduler's own account: the first two to reach the rung had nothing to rank against
    # and waited; every wait ended in a resume (from the trial's checkpoint: the trials counted
    # the same number of restores) or, for the rung's bottom, a stop at the end
    asha = result["asha"]
    assert asha["rungs"] == [1] and asha["recorded"] == [9], asha
    assert asha["pauses"] >= 2, asha
    assert asha["pauses"] == asha["promotions"] + asha["stopped_at_end"], asha
    assert asha["stopped_at_end"] == len(stopped), asha
    assert result["restores"] == asha["promotions"], (result["restores"], asha)

    client = MlflowClient(tracking_uri=mlflow_server)
    children = client.search_runs([result["mlflow_experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'")
    assert sorted(c.data.tags["trainyard.trial_id"] for c in children) == sorted(rows)  # one run per trial
    assert all(c.info.status == "FINISHED" for c in children), [(c.data.tags["trainyard.trial_id"], c.info.status)
                                                                 for c in children]
    by_trial = {c.data.tags["trainyard.trial_id"]: c for c in children}
    for t in done:
        history = client.get_metric_history(by_trial[t].info.run_id, "accuracy")
        assert sorted(m.step for m in history) == [4, 8, 12]  # the resumed part logged to the same run


def test_a_killed_promotion_sweep_resumes_without_rerunning_steps(ray_head, mlflow_server, test_root):
    """The driver is killed once a trial waits at the rung; the same sweep id resumes: no trial
    gets a second MLflow run, no evaluation runs twice, and the sweep ends with every trial
    DONE or STOPPED."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    storage = test_root / "sweep-promote-resume"
    storage.mkdir(exist_ok=True)
    spec = _spec("sweep-promote-resume", storage, lr={"loguniform": [1e-3, 5e-2]}, num_trials=6, seed=3)
    spec_file = test_root / "sweep-promote-resume.json"
    spec_file.write_text(spec.model_dump_json())
    sid = uuid.uuid4().hex[:8]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    cmd = [sys.executable, "-m", "trainyard.runner", "sweep", "--sweep-id", sid, "--spec-file", str(spec_file)]
    exp_dir = Path(storage) / "default" / f"sweep-{sid}"

    def saved_states() -> dict[str, str]:
        from test_sweep import _saved_states  # tests/integration is on sys.path (no package)

        return _saved_states(exp_dir)

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("TRAINYARD_PROGRESS ") and "PAUSED" in saved_states().values():
                break
    finally:
        proc.kill()
        proc.wait()
    at_kill = saved_states()
    assert "PAUSED" in at_kill.values(), "no trial waited at the rung:\n" + "".join(seen[-60:])

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = next(json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines()
                  if line.startswith("TRAINYARD_RESULT "))
    assert result["resumed"] is True
    board = result["leaderboard"]
    rows = {r["trial"]: r for r in board["rows"]}
    assert len(rows) == 6 and {r["state"] for r in rows.values()} <= {"DONE", "STOPPED"}, board["rows"]
    assert sum(r["state"] == "DONE" for r in rows.values()) >= 2
    # the rungs came back with the searcher's saved state: every trial is recorded at the rung
    # once, a trial that waited there when the driver died waited again and was ranked (every
    # trial that went on was promoted), and every wait ended in a resume or a stop at the end
    asha = result["asha"]
    assert asha["recorded"] == [6], asha
    assert asha["promoted"] == [sum(r["state"] == "DONE" for r in rows.values())], (asha, board["rows"])
    assert asha["pauses"] == asha["promotions"] + asha["stopped_at_end"], asha
    for trial, curve in board["curves"].items():
        iterations = [c[1] for c in curve]
        # a trial that waited at the rung (or had ended) when the driver died runs no evaluation
        # twice; one that was training resumes from the last checkpoint Tune had saved (its
        # state is saved every second), so its last evaluation may run again
        steps = [c[2] for c in curve]
        if at_kill.get(trial) in ("PAUSED", "TERMINATED"):
            assert iterations == sorted(set(iterations)), (trial, at_kill.get(trial), curve)
            assert all(c[2] == 4 * c[1] for c in curve), (trial, curve)  # step follows the evaluation
        else:
            # its repeated evaluation reports the step it resumed at once more, under the next
            # iteration: steps never go back, each is an evaluation's, and at most one repeats
            assert steps == sorted(steps) and all(step % 4 == 0 for step in steps), (trial, curve)
            assert len(steps) - len(set(steps)) <= 1, (trial, curve)
    client = MlflowClient(tracking_uri=mlflow_server)
    children = client.search_runs([result["mlflow_experiment_id"]],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'")
    assert sorted(c.data.tags["trainyard.trial_id"] for c in children) == sorted(rows)

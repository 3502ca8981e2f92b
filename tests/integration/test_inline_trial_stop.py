"""An inline sweep trial that Tune stops (ASHA, PBT) leaves the worker loop cleanly.

Tune stops a trial by raising SystemExit(0) out of tune.report. Here the real worker loop
(DeepSpeed on CPU, the cnn family, a real MLflow store) runs through the sweep's inline path
(`_run_inline`, its `_InlineSession`) in this process, and tune.report raises that exit at
the second report: what the loop queued for MLflow must be sent, its logger thread must be
gone (a reused trial actor runs the next trial), the environment the trial set must be given
back, and the exit must reach Tune. No Ray cluster: the trial actor's process is this one.
"""
from __future__ import annotations

import os
import threading

import pytest

pytestmark = pytest.mark.integration


def test_a_stopped_inline_trial_flushes_mlflow_ends_its_threads_and_restores_env(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from ray import tune

    from trainyard.runner import sweep
    from trainyard.runner.train import train_loop_per_worker, worker_env
    from trainyard.specs import JobSpec

    spec = JobSpec.model_validate({
        "name": "stopped-inline", "workload": "cnn", "data": {"train_limit": 128},
        "hyperparameters": {"channels": 4, "hidden": 16},
        "resources": {"workers": 1, "cpus_per_worker": 1}, "deepspeed": {"zero_stage": 1},
        # a report at every step, none with a checkpoint: nothing flushes the logger before it
        "training": {"epochs": 3, "batch_size": 32, "eval_every_steps": 1, "log_every_steps": 100},
        "checkpoint": {"every_steps": 1000, "storage": f"file://{tmp_path / 'ckpt'}"},
    })
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("stopped-inline", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id

    reports: list[dict] = []

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if len(reports) == 2:
            raise SystemExit(0)  # what tune.report does when ASHA/PBT stops the trial

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    before = {t.ident for t in threading.enumerate()}
    loop_config = {"spec": spec.model_dump(mode="json"), "job_id": "s/t1",
                   "mlflow": {"tracking_uri": uri, "run_id": run_id, "experiment_id": experiment_id},
                   "log_model": True, "register_model": False, "progress_queue": None}
    try:
        with pytest.raises(SystemExit) as info:
            sweep._run_inline(train_loop_per_worker, loop_config, spec=spec, trial_id="t1", env=worker_env(spec))
        assert info.value.code == 0
        assert [r["step"] for r in reports] == [1, 2]

        # the metrics of both reports are in MLflow now (the logger sends every 2 s otherwise)
        assert [m.step for m in client.get_metric_history(run_id, "accuracy")] == [1, 2]
        assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2]
        # no thread of this trial is left running in the (reused) actor's process
        left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        assert "trainyard-mlflow" not in left, left
        # the environment a Train worker would have had is this trial's only
        assert not {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"} & set(os.environ)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

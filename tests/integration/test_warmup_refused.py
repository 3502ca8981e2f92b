"""A warm-up longer than an epochs-based run, refused on a real local Ray cluster.

The spec cannot tell (its length depends on the dataset, the batch size and the workers), so
the worker's step plan refuses it before the first step; the job then fails as a spec error
(exit 2, TRAINYARD_ERROR invalid_spec) that names the field, the value, the run's length and
the fix, not as a training failure buried in a worker traceback.
"""
from __future__ import annotations

import json

import pytest

from trainyard.specs import parse_job_spec

pytestmark = pytest.mark.integration


def test_job_with_a_warmup_longer_than_its_epochs_fails_as_a_spec_error(ray_head, test_root, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from trainyard.runner.__main__ import main

    # 48 examples at batch 16 on 1 worker: 3 steps per epoch, 2 epochs -> 6 steps; warm-up 50
    spec = parse_job_spec({
        "name": "warmup-too-long", "workload": "cnn", "data": {"train_limit": 48},
        "hyperparameters": {"channels": 4, "hidden": 16},
        "resources": {"workers": 1, "cpus_per_worker": 1}, "deepspeed": {"zero_stage": 1},
        "training": {"epochs": 2, "batch_size": 16, "warmup_steps": 50, "lr_schedule": "cosine"},
        "checkpoint": {"storage": f"file://{test_root / 'warmup-storage'}"},
        "tracking": {"experiment": "warmup-it"},
    })
    spec_file = test_root / "warmup-too-long.json"
    spec_file.write_text(spec.model_dump_json())
    uri = f"sqlite:///{test_root / 'warmup-mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    code = main(["job", "--job-id", "warmup-too-long", "--spec-file", str(spec_file)])
    out = capsys.readouterr().out
    assert code == 2, out[-3000:]
    error = next(json.loads(line.split(" ", 1)[1]) for line in out.splitlines()
                 if line.startswith("TRAINYARD_ERROR "))
    assert error["error"] == "invalid_spec", error
    message = error["message"]
    assert message.startswith("training.warmup_steps: must be <= the run's 6 optimizer steps"), message
    assert "got 50" in message and "(48 training examples over 1 worker(s) at training.batch_size 16)" in message
    assert "set training.warmup_steps to at most 6" in message
    # the job's MLflow run is closed as failed, and no training step was logged into it
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("default/warmup-it").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and not runs[0].data.metrics

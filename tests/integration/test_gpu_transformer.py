"""The transformer family on a GPU in bf16, through the runner (skipped cleanly without CUDA).

It trains a GPT-2-small-shaped byte LM (12 layers, d_model 768, 12 heads, context 1024) as a
one-worker job under DeepSpeed ZeRO-2 in bf16 on the session's Ray head (which detects the
GPU itself), checks that it trains below the 8 bits/byte of an untrained model, and prints the
steady-state tokens/s. For reference, raw compiled PyTorch reaches about 496k tokens/s on an
H200 at batch 16x1024 for this shape. Run with `pytest -s -m gpu tests/integration`.
"""
from __future__ import annotations

import uuid

import pytest

from trainyard.specs import parse_job_spec

pytestmark = [pytest.mark.integration, pytest.mark.gpu]

CONTEXT = 1024
BATCH = 16


def test_transformer_trains_in_bf16_on_a_gpu(ray_head, test_root):
    from trainyard.runner.train import build_trainer
    from trainyard.tracking.runs import start_job_run

    spec = parse_job_spec({
        "name": "bytelm-gpu-bf16", "workload": "transformer",
        "hyperparameters": {"d_model": 768, "layers": 12, "heads": 12, "context": CONTEXT},
        "data": {"max_bytes": 6_000_000, "val_chunks": 64},
        "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1},
        "deepspeed": {"zero_stage": 2, "precision": "bf16"},
        "training": {"max_steps": 200, "batch_size": BATCH, "lr": 6e-4, "lr_schedule": "cosine",
                     "warmup_steps": 20, "log_every_steps": 20, "eval_every_steps": 200},
        "checkpoint": {"storage": f"file://{test_root / 'gpu'}"},
    })
    job_id = f"gpu-transformer-{uuid.uuid4().hex[:6]}"
    run = start_job_run(job_id=job_id, run_name=spec.name, experiment="gpu",
                        uri=f"sqlite:///{test_root / 'gpu-mlflow.db'}")
    trainer = build_trainer(spec, job_id=job_id, mlflow_run=run.to_config(),
                            extra_config={"log_model": False, "artifacts": False, "timing_warmup_steps": 20})
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    tokens_per_s = metrics["train_steps_per_s"] * BATCH * CONTEXT
    print(f"\nGPU transformer bf16 (ZeRO-2, 1 worker, {BATCH}x{CONTEXT}): {tokens_per_s:,.0f} tokens/s; "
          f"validation {metrics['bpb']:.3f} bits/byte after {int(metrics['step'])} steps")
    assert metrics["step"] == 200
    assert metrics["bpb"] < 8.0  # an untrained byte model sits at 8 bits/byte
    assert tokens_per_s > 0

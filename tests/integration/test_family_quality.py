"""Every example spec reaches its family's quality bar (nightly: `make test-slow`).

Each runs exactly as a user's job would, through the runner, on the session's real Ray
head and MLflow server, and records the measured value and wall time in the test log
(`-s` shows them; the README's families table comes from these runs).
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from trainyard.specs import parse_job_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _bar(family: str, metrics: dict) -> tuple[bool, str]:
    if family in ("cnn",):
        return metrics["accuracy"] >= 0.95, f"accuracy {metrics['accuracy']:.4f} >= 0.95"
    if family == "rnn":
        return metrics["accuracy"] >= 0.90, f"accuracy {metrics['accuracy']:.4f} >= 0.90"
    if family == "rnn-forecast":
        return metrics["mase"] < 1.0, f"MASE {metrics['mase']:.3f} < 1.0"
    if family in ("gan", "diffusion"):
        return (metrics["fid"] * 5 <= metrics["noise_fid"],
                f"FID {metrics['fid']:.2f} <= noise FID {metrics['noise_fid']:.2f} / 5")
    if family == "autoencoder":
        return metrics["fid"] * 5 <= metrics["noise_fid"], (
            f"ELBO {metrics['elbo']:.2f}; FID {metrics['fid']:.2f} <= noise FID {metrics['noise_fid']:.2f} / 5")
    if family == "transformer":
        return metrics["bpb"] <= 2.5, f"bits/byte {metrics['bpb']:.3f} <= 2.5"
    raise AssertionError(family)


@pytest.mark.parametrize("example", ["cnn", "rnn", "rnn-forecast", "autoencoder", "gan", "diffusion",
                                     "transformer"])
def test_example_spec_reaches_its_quality_bar(example, ray_head, mlflow_server, test_root):
    from trainyard.runner.train import run_job

    os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    spec = parse_job_spec(EXAMPLES / f"{example}.yaml")
    spec = spec.model_copy(update={"checkpoint": spec.checkpoint.model_copy(
        update={"storage": f"file://{test_root / 'quality'}"})})
    start = time.monotonic()
    result = run_job(spec, f"quality-{example}-{uuid.uuid4().hex[:6]}", emit=lambda line: None)
    wall = time.monotonic() - start
    ok, text = _bar(spec.workload, result["metrics"])
    print(f"\nQUALITY {example}: {text}; wall {wall:.0f} s")
    assert ok, text

"""Test-only families for serving tests, importable inside Serve replicas via PYTHONPATH.

FLAKY is the cnn family whose predictor raises on a fraction of requests: the
deliberately broken candidate of the rollback test.
"""
from __future__ import annotations

import dataclasses
import random

from workloads.cnn.workload import WORKLOAD as CNN


def _flaky_predictor(models, payload, hparams):
    if random.random() < float(hparams.get("fail_rate", 0.5)):
        raise RuntimeError("deliberately broken candidate")
    return CNN.predictor(models, payload, hparams)


FLAKY = dataclasses.replace(CNN, name="flaky-cnn", predictor=_flaky_predictor,
                            default_hparams={**CNN.default_hparams, "fail_rate": 0.5})

"""The digits (cnn family's split); images in [0, 1], mapped to [-1, 1] by the train step."""
from __future__ import annotations


def build_datasets(hparams, data):
    from workloads.cnn.data import build_datasets as digits

    return digits(hparams, data)

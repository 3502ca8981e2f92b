"""The digits (cnn family's split); the GAN trains on the training split's images."""
from __future__ import annotations


def build_datasets(hparams, data):
    from workloads.cnn.data import build_datasets as digits

    return digits(hparams, data)

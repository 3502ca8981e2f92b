"""The digits (cnn family's split) for the VAE: images in [0, 1], labels kept for plots."""
from __future__ import annotations


def build_datasets(hparams, data):
    from workloads.cnn.data import build_datasets as digits

    return digits(hparams, data)

"""sklearn's bundled 8x8 digits (no download): the one split every digits family uses."""
from __future__ import annotations

from workloads.cnn.data import digits_arrays  # noqa: F401  (the seeded, stratified split)

__all__ = ["digits_arrays", "all_digits"]


def all_digits():
    """Every digit image (1797, 1, 8, 8) in [0, 1], train split first."""
    import numpy as np

    x_tr, y_tr, x_te, y_te = digits_arrays()
    return np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])

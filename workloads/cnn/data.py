"""sklearn's bundled 8x8 digits, split once and for all (seeded, stratified)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x scaled to [0, 1], shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def build_datasets(hparams, data):
    import torch
    from torch.utils.data import TensorDataset

    x_tr, y_tr, x_te, y_te = digits_arrays()
    limit = int((data or {}).get("train_limit", 0) or 0)
    if limit:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))

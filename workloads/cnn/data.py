"""sklearn's bundled 8x8 digits, split once and for all (seeded, stratified).

A worker reads the pixels straight from scikit-learn's own data file (digits.csv.gz, found
without importing scikit-learn) and takes the split from digits_split.txt beside this module:
the indices `train_test_split(test_size=0.2, random_state=0, stratify=target)` returns. Importing
scikit-learn to redo that split cost every worker of a digits job 1-2 s of its start.
Where the data file is not where it should be, scikit-learn loads it (the same arrays).
"""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

TEST_FRACTION = 0.2
SPLIT_SEED = 0
N_DIGITS = 1797
SPLIT_FILE = Path(__file__).with_name("digits_split.txt")


def _digits_csv() -> Path | None:
    """scikit-learn's digits.csv.gz (each row 64 pixels in 0..16, then the digit), or None."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root, "datasets", "data", "digits.csv.gz")
        if path.is_file():
            return path
    return None


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) float64 in 0..16, targets (N,) int): what sklearn's load_digits returns."""
    path = _digits_csv()
    if path is not None:
        with gzip.open(path, "rt") as fh:
            data = np.loadtxt(fh, delimiter=",")
        if data.shape == (N_DIGITS, 65):
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


@lru_cache(maxsize=1)
def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of the shipped split, in the order the split returns them."""
    parts: dict[str, list[str]] = {}
    current = None
    for line in SPLIT_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = parts.setdefault(line[1:-1], [])
        elif current is not None:
            current.extend(line.split())
    train, test = (np.asarray(parts.get(k, []), dtype=np.int64) for k in ("train", "test"))
    if len(train) + len(test) != N_DIGITS or len(np.union1d(train, test)) != N_DIGITS:
        raise RuntimeError(f"{SPLIT_FILE} is damaged: it must hold each of the {N_DIGITS} rows once")
    return train, test


@lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); x scaled to [0, 1], shape (N, 1, 8, 8)."""
    images, target = _load_digits()
    x = (images / 16.0).astype(np.float32)[:, None, :, :]
    y = target.astype(np.int64)
    train, test = split_indices()
    return x[train], y[train], x[test], y[test]


def build_datasets(hparams, data):
    import torch
    from torch.utils.data import TensorDataset

    x_tr, y_tr, x_te, y_te = digits_arrays()
    limit = int((data or {}).get("train_limit", 0) or 0)
    if limit:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))

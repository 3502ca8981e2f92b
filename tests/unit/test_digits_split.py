"""The shipped digits split is the one scikit-learn makes, and reading it needs no scikit-learn."""
from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_shipped_split_matches_scikit_learn():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from workloads.cnn.data import SPLIT_SEED, TEST_FRACTION, digits_arrays

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    want = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    x_tr, x_te, y_tr, y_te = want
    got = digits_arrays()
    for a, b in zip(got, (x_tr, y_tr, x_te, y_te)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b)


def test_reading_the_digits_imports_no_scikit_learn():
    code = ("import sys; from workloads.cnn.data import digits_arrays; a = digits_arrays(); "
            "assert a[0].shape == (1437, 1, 8, 8) and a[2].shape == (360, 1, 8, 8), [x.shape for x in a]; "
            "print(sorted(m for m in sys.modules if m == 'sklearn' or m.startswith('sklearn.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_damaged_split_file_is_refused(tmp_path, monkeypatch):
    import pytest

    from workloads.cnn import data

    bad = tmp_path / "split.txt"
    bad.write_text("[train]\n1 2 3\n[test]\n4\n")
    monkeypatch.setattr(data, "SPLIT_FILE", bad)
    data.split_indices.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="damaged"):
            data.split_indices()
    finally:
        data.split_indices.cache_clear()

"""The corpus: the Python standard library's own .py files, found on every machine.

Deterministic: files are taken from `sysconfig.get_paths()["stdlib"]` (falling back to the
folder of `os.__file__`), skipping tests, site-packages and vendored/generated trees, and
visited in the order of the SHA-256 of their relative paths (a fixed shuffle, so a capped
corpus samples the whole library rather than its first letters), at most `PER_FILE` bytes
of each. Each file goes to validation when the first byte of the SHA-256
of its relative path is < 26 (about 10%), so the split never depends on the order files are
found. Text is capped at `max_bytes` for training and `max_bytes // 10` for validation.
The corpus differs between Python versions (it is their standard library); the Python
version is part of its fingerprint (`corpus_info`).
"""
from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path

import numpy as np

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3",
             "ensurepip", "_vendor", "turtledemo", "pydoc_data", "encodings"}
VAL_BYTE_CUTOFF = 26  # of 256: ~10% of files
PER_FILE = 16_384


def stdlib_dir() -> Path:
    path = sysconfig.get_paths().get("stdlib")
    if path and Path(path, "os.py").exists():
        return Path(path)
    return Path(os.__file__).resolve().parent


def _files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return sorted(out, key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode()).digest()[1:])


@lru_cache(maxsize=4)
def corpus(max_bytes: int = 1_500_000) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train bytes, val bytes, info) as uint8 arrays."""
    root = stdlib_dir()
    train, val = bytearray(), bytearray()
    val_cap = max_bytes // 10
    n_train = n_val = 0
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        is_val = hashlib.sha256(rel.encode()).digest()[0] < VAL_BYTE_CUTOFF
        target, cap = (val, val_cap) if is_val else (train, max_bytes)
        if len(target) >= cap:
            if len(train) >= max_bytes and len(val) >= val_cap:
                break
            continue
        try:
            text = path.read_bytes()
        except OSError:
            continue
        target.extend(text[: min(PER_FILE, cap - len(target))])
        if is_val:
            n_val += 1
        else:
            n_train += 1
    info = {"root": str(root), "python": ".".join(map(str, sys.version_info[:2])), "train_bytes": len(train),
            "val_bytes": len(val), "train_files": n_train, "val_files": n_val,
            "sha256": hashlib.sha256(bytes(train) + bytes(val)).hexdigest()[:16]}
    return np.frombuffer(bytes(train), dtype=np.uint8), np.frombuffer(bytes(val), dtype=np.uint8), info


class ChunkDataset:
    """Fixed, non-overlapping (context + 1)-byte chunks: item i -> (input ids, next-byte ids)."""

    def __init__(self, data: np.ndarray, context: int, limit: int = 0):
        import torch

        n = (len(data) - 1) // context
        if limit:
            n = min(n, limit)
        self.context = context
        self.data = torch.from_numpy(np.array(data[: n * context + 1], dtype=np.int64))
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = i * self.context
        chunk = self.data[s: s + self.context + 1]
        return chunk[:-1], chunk[1:]


def build_datasets(hparams, data):
    data = data or {}
    max_bytes = int(data.get("max_bytes", 1_500_000))
    train, val, _ = corpus(max_bytes)
    context = int(hparams["context"])
    return (ChunkDataset(train, context, int(data.get("train_limit", 0) or 0)),
            ChunkDataset(val, context, int(data.get("val_chunks", 128))))

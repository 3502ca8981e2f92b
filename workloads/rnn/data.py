"""Data for the rnn family.

classify: sklearn's 8x8 digits (the cnn family's split), each image an 8-step sequence of rows.
forecast: a generated series (seeded): level + slow trend + two seasonalities (periods 16 and
  56) + AR(1) noise. The first 80% is for training, the rest for testing; values are
  standardised with the training part's mean and std. Samples are (window, horizon) pairs.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SERIES = {"length": 6000, "periods": (16, 56), "amplitudes": (1.0, 0.7), "noise": 0.25, "ar": 0.5,
          "trend": 0.4, "seed": 0, "train_fraction": 0.8}
SEASON = 16  # the seasonal-naive benchmark's period (the primary season)


@lru_cache(maxsize=4)
def series(seed: int = SERIES["seed"], length: int = SERIES["length"]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)
    y = 0.0 + SERIES["trend"] * np.sin(2 * np.pi * t / length)  # slow, smooth drift
    for period, amp in zip(SERIES["periods"], SERIES["amplitudes"]):
        y = y + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    eps = rng.normal(0.0, SERIES["noise"], size=length)
    noise = np.zeros(length)
    for i in range(1, length):
        noise[i] = SERIES["ar"] * noise[i - 1] + eps[i]
    return (y + noise).astype(np.float64)


def split_series(seed: int = SERIES["seed"]):
    """(train, test, mean, std): standardised parts of the series (test keeps `window` history)."""
    y = series(seed)
    cut = int(len(y) * SERIES["train_fraction"])
    mean, std = y[:cut].mean(), y[:cut].std()
    z = (y - mean) / std
    return z[:cut], z[cut:], mean, std


def windows(z: np.ndarray, window: int, horizon: int, stride: int = 1):
    starts = np.arange(0, len(z) - window - horizon + 1, stride)
    x = np.stack([z[s:s + window] for s in starts]).astype(np.float32)
    y = np.stack([z[s + window:s + window + horizon] for s in starts]).astype(np.float32)
    return x, y


def forecast_arrays(window: int, horizon: int, seed: int = SERIES["seed"]):
    train, test, _, _ = split_series(seed)
    x_tr, y_tr = windows(train, window, horizon)
    # test windows start inside the test part's history: prepend the last `window` train values
    hist = np.concatenate([train[-window:], test])
    x_te, y_te = windows(hist, window, horizon, stride=4)
    # MASE scale: in-sample seasonal-naive MAE on the training part (Hyndman & Koehler 2006)
    scale = float(np.mean(np.abs(train[SEASON:] - train[:-SEASON])))
    return x_tr, y_tr, x_te, y_te, scale


def seasonal_naive(x: np.ndarray, horizon: int, season: int = SEASON) -> np.ndarray:
    """Repeat the last season of each window over the horizon."""
    last = x[:, -season:]
    reps = int(np.ceil(horizon / season))
    return np.tile(last, (1, reps))[:, :horizon]


def build_datasets(hparams, data):
    import torch
    from torch.utils.data import TensorDataset

    task = hparams["task"]
    limit = int((data or {}).get("train_limit", 0) or 0)
    if task == "classify":
        from workloads.cnn.data import digits_arrays

        x_tr, y_tr, x_te, y_te = digits_arrays()
        x_tr, x_te = x_tr[:, 0], x_te[:, 0]  # (N, 8 steps, 8 features)
    else:
        x_tr, y_tr, x_te, y_te, _ = forecast_arrays(int(hparams["window"]), int(hparams["horizon"]),
                                                    int((data or {}).get("seed", SERIES["seed"])))
    if limit:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))

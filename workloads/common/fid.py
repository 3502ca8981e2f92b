"""digits-FID: the Fréchet distance between generated and real 8x8 digits.

Features are the penultimate activations (64-d) of a fixed digits classifier. The
classifier is trained once (seeded, full batch, a few seconds), then cached under
`$TRAINYARD_HOME/cache/digits_fid/<hash of its config>.pt`, so every process and every
rank on a machine scores with the same network. The reference statistics are those of all
1797 sklearn digits.

Scale: images in [0, 1], shape (N, 1, 8, 8) or (N, 8, 8) or (N, 64). Lower is better.
`noise_fid()` is the bar to beat: Gaussian-noise images with the digits' per-pixel mean
and standard deviation, clipped to [0, 1]. A generator is "good" at <= noise_fid() / 5.
Scores depend on the number of samples (FID is biased upwards for small N), so compare
at the same `n` (default 500).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

CONFIG = {"version": 1, "hidden": [128, 64], "epochs": 300, "lr": 3e-3, "weight_decay": 1e-4, "seed": 0}
DEFAULT_N = 500

__all__ = ["fid", "features", "noise_fid", "noise_images", "real_fid", "frechet_distance", "DEFAULT_N"]


def _cache_dir() -> Path:
    from trainyard.config import home

    return home() / "cache" / "digits_fid"


def _config_hash() -> str:
    return hashlib.sha256(json.dumps(CONFIG, sort_keys=True).encode()).hexdigest()[:16]


def _build_net():
    from torch import nn

    h1, h2 = CONFIG["hidden"]
    return nn.Sequential(nn.Flatten(), nn.Linear(64, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                         nn.Linear(h2, 10))


def _train_net():
    import torch
    import torch.nn.functional as F

    from workloads.common.digits import all_digits

    x, y = all_digits()
    gen = torch.Generator().manual_seed(CONFIG["seed"])
    with torch.random.fork_rng():
        torch.manual_seed(CONFIG["seed"])
        net = _build_net()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(net.parameters(), lr=CONFIG["lr"], weight_decay=CONFIG["weight_decay"])
    for _ in range(CONFIG["epochs"]):
        # light pixel noise so features stay smooth around the data (and respond to off-data inputs)
        noisy = (xt + 0.05 * torch.randn(xt.shape, generator=gen)).clamp(0, 1)
        loss = F.cross_entropy(net(noisy), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@lru_cache(maxsize=1)
def _net():
    """The cached feature network (trained on first use; first writer wins on a machine)."""
    import torch

    path = _cache_dir() / f"classifier-{_config_hash()}.pt"
    if not path.exists():
        net = _train_net()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(net.state_dict(), tmp)
        try:
            os.link(tmp, path)  # atomic and exclusive: concurrent ranks all load the winner's file
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    net = _build_net()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _as_array(images) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    arr = np.asarray(images, dtype=np.float32).reshape(len(images), 64)
    return np.clip(arr, 0.0, 1.0)


def features(images) -> np.ndarray:
    """Penultimate (64-d) features of the classifier, float64."""
    import torch

    net = _net()
    with torch.no_grad():
        feats = net[:-1](torch.from_numpy(_as_array(images)))
    return feats.double().numpy()


def accuracy_on(images, labels) -> float:
    import torch

    with torch.no_grad():
        logits = _net()(torch.from_numpy(_as_array(images)))
    return float((logits.argmax(1).numpy() == np.asarray(labels)).mean())


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    from scipy import linalg

    import warnings

    diff = mu1 - mu2
    # degenerate generators (all-blank images) give singular covariances: regularise, don't warn
    eps = 1e-6 * np.eye(cov1.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm((cov1 + eps) @ (cov2 + eps))
    covmean = np.real(covmean)
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean), 0.0))


def _stats(feats: np.ndarray):
    return feats.mean(0), np.cov(feats, rowvar=False)


@lru_cache(maxsize=1)
def _reference():
    from workloads.common.digits import all_digits

    return _stats(features(all_digits()[0]))


def fid(images) -> float:
    """digits-FID of `images` (values in [0, 1]) against all real digits."""
    return frechet_distance(*_stats(features(images)), *_reference())


def noise_images(n: int = DEFAULT_N, seed: int = 0) -> np.ndarray:
    from workloads.common.digits import all_digits

    x = all_digits()[0]
    rng = np.random.default_rng(seed)
    noise = x.mean(0) + x.std(0) * rng.standard_normal((n,) + x.shape[1:])
    return np.clip(noise, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=4)
def noise_fid(n: int = DEFAULT_N, seed: int = 0) -> float:
    """The Gaussian-noise baseline at sample size n."""
    return fid(noise_images(n, seed))


@lru_cache(maxsize=4)
def real_fid(n: int = DEFAULT_N) -> float:
    """The floor: n held-out-style real digits (test split first) against all digits."""
    from workloads.common.digits import digits_arrays

    x_tr, _, x_te, _ = digits_arrays()
    return fid(np.concatenate([x_te, x_tr])[:n])

"""The diffusion family: DDPM on 8x8 digits. No torch at import time.

A small U-Net predicts the noise (epsilon objective) at one of `timesteps` steps of a
cosine (default) or linear schedule. Sampling walks an evenly strided subset of
`sample_steps` timesteps (the predictor takes `steps`). Primary metric: `fid` (min), the
digits-FID of `eval_samples` seeded samples; `noise_fid` is the Gaussian-noise bar.
"""
from __future__ import annotations

from trainyard.errors import SpecError
from trainyard.workload import Workload

DEFAULTS = {"channels": 32, "timesteps": 500, "schedule": "cosine", "sample_steps": 50, "eta": 1.0,
            "eval_samples": 500}
EVAL_SEED = 1234


def _h(hparams) -> dict:
    h = {**DEFAULTS, **(hparams or {})}
    if h["schedule"] not in ("cosine", "linear"):
        raise SpecError(f"must be 'cosine' or 'linear', got {h['schedule']!r}", field="hyperparameters.schedule",
                        value=h["schedule"], fix="use schedule: cosine or schedule: linear")
    for key in ("channels", "timesteps", "sample_steps", "eval_samples"):
        if isinstance(h[key], bool) or not isinstance(h[key], int) or h[key] < 1:
            raise SpecError(f"must be a positive integer, got {h[key]!r}", field=f"hyperparameters.{key}",
                            value=h[key], fix=f"use e.g. {key}: {DEFAULTS[key]}")
    if h["channels"] % 8:
        raise SpecError(f"must be a multiple of 8 (GroupNorm groups), got {h['channels']}",
                        field="hyperparameters.channels", value=h["channels"], fix="use 16, 32 or 64")
    return h


def _abar(h):
    from workloads.diffusion.model import alpha_bars

    return alpha_bars(h["schedule"], int(h["timesteps"]))


def build_models(hparams):
    from workloads.diffusion.model import UNet

    h = _h(hparams)
    return {"model": UNet(channels=int(h["channels"]))}


def build_datasets(hparams, data):
    from workloads.diffusion.data import build_datasets as _build

    return _build(hparams, data)


def train_step(engines, batch, ctx):
    import torch
    import torch.nn.functional as F

    from workloads.diffusion.model import q_sample

    h = _h(ctx.hparams)
    abar = ctx.extra.get("_diffusion_abar")
    if abar is None:
        abar = ctx.extra["_diffusion_abar"] = _abar(h)
    engine = engines["model"]
    x0 = batch[0] * 2.0 - 1.0
    dtype = x0.dtype if ctx.dtype is None else ctx.dtype
    t = torch.randint(0, abar.shape[0], (x0.shape[0],), device=x0.device)
    noise = torch.randn_like(x0)
    xt = q_sample(x0, t, noise, abar.to(x0.device)).to(dtype)
    loss = F.mse_loss(engine(xt, t).float(), noise.float())
    engine.backward(loss)
    engine.step()
    return {"loss": float(loss.detach().item())}


def _samples(model, n, *, h, steps, seed, eta, device="cpu", dtype=None):
    import torch

    from workloads.diffusion.model import sample

    was_training = model.training
    model.eval()
    x = sample(model, n, abar=_abar(h), steps=steps, eta=eta, generator=torch.Generator().manual_seed(seed),
               device=device, dtype=dtype or torch.float32)
    model.train(was_training)
    return (x + 1.0) / 2.0


def evaluate(models, dataset, ctx):
    import torch
    import torch.nn.functional as F

    from workloads.common import fid as digits_fid
    from workloads.diffusion.model import q_sample

    h = _h(ctx.hparams)
    model = models["model"]
    n = int(h["eval_samples"])
    images = _samples(model, n, h=h, steps=int(h["sample_steps"]), seed=EVAL_SEED, eta=float(h["eta"]),
                      device=ctx.device, dtype=ctx.dtype)
    # the training objective on the test split, with seeded t and noise: comparable across epochs
    gen = torch.Generator().manual_seed(EVAL_SEED)
    x0 = dataset.tensors[0] * 2.0 - 1.0
    abar = _abar(h)
    t = torch.randint(0, abar.shape[0], (x0.shape[0],), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        dt = ctx.dtype or torch.float32
        pred = model(q_sample(x0, t, noise, abar).to(ctx.device, dt), t.to(ctx.device)).float().cpu()
    model.train(was_training)
    return {"fid": digits_fid.fid(images), "noise_fid": digits_fid.noise_fid(n),
            "eval_loss": float(F.mse_loss(pred, noise))}


def artifacts(models, dataset, ctx, out_dir):
    from workloads.common.images import save_png

    h = _h(ctx.hparams)
    images = _samples(models["model"], 64, h=h, steps=int(h["sample_steps"]), seed=EVAL_SEED, eta=float(h["eta"]))
    return [save_png(images.numpy(), f"{out_dir}/diffusion_samples.png", ncol=8)]


def predictor(models, payload, hparams):
    """{"n": k[, "steps", "eta", "seed", "png"]} -> {"samples": (k, 8, 8) in [0, 1][, "png"]}."""
    from workloads.common.images import bool_field, check_keys, float_field, images_response, int_field

    h = _h(hparams)
    check_keys(payload, ("n", "steps", "eta", "seed", "png"))
    n = int_field(payload, "n", default=16, lo=1, hi=256)
    steps = int_field(payload, "steps", default=int(h["sample_steps"]), lo=1, hi=int(h["timesteps"]))
    seed = int_field(payload, "seed", default=0, lo=0, hi=2**31 - 1)
    eta = float_field(payload, "eta", default=float(h["eta"]), lo=0.0, hi=1.0)
    images = _samples(models["model"], n, h=h, steps=steps, seed=seed, eta=eta)
    return images_response(images.numpy(), key="samples", png=bool_field(payload, "png"))


from workloads.common.images import IMAGES_SCHEMA, PNG_SCHEMA  # noqa: E402  (numpy only)

WORKLOAD = Workload(
    name="diffusion",
    description="DDPM (small U-Net, cosine/linear schedule) on sklearn's 8x8 digits",
    build_models=build_models,
    build_datasets=build_datasets,
    train_step=train_step,
    evaluate=evaluate,
    predictor=predictor,
    artifacts=artifacts,
    metric="fid",
    mode="min",
    metrics=("fid", "noise_fid", "eval_loss", "loss"),
    default_hparams=DEFAULTS,
    search_space={
        "training.lr": {"loguniform": [3e-4, 3e-3]},
        "hyperparameters.channels": {"choice": [16, 32, 64]},
        "hyperparameters.schedule": {"choice": ["cosine", "linear"]},
    },
    request_schema={
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 256, "default": 16},
                       "steps": {"type": "integer", "minimum": 1, "description": "sampling steps (<= timesteps)"},
                       "eta": {"type": "number", "minimum": 0, "maximum": 1,
                               "description": "1: DDPM ancestral sampling, 0: deterministic DDIM"},
                       "seed": {"type": "integer", "minimum": 0, "default": 0},
                       "png": {"type": "boolean", "default": False}},
    },
    response_schema={"type": "object", "properties": {"samples": IMAGES_SCHEMA, "png": PNG_SCHEMA}},
)

"""The gan family: DCGAN-style generator + discriminator on 8x8 digits. No torch at import time.

`arch: mlp` (default; batch-normalised MLP generator, MLP discriminator with a minibatch
spread feature) or `arch: conv` (upsample+conv generator, strided-conv discriminator). At
this size the MLP pair trained faster and better here: with the runner's Adam betas
(0.9, 0.999) the convolutional pair collapsed for longer.

Two modules, two DeepSpeed engines, two optimizers: build_models returns
{"generator", "discriminator"} and train_step steps both (discriminator first, then the
generator through a frozen discriminator, non-saturating loss). Primary metric: `fid`
(min), the digits-FID of 500 seeded samples; `noise_fid` is the Gaussian-noise bar (a good
generator scores <= noise_fid / 5).
"""
from __future__ import annotations

from trainyard.errors import SpecError
from trainyard.workload import Workload

DEFAULTS = {"arch": "mlp", "latent": 32, "g_width": 256, "d_width": 256, "label_smoothing": 0.1, "instance_noise": 0.0,
            "eval_samples": 500}
EVAL_SEED = 1234


def _h(hparams) -> dict:
    h = {**DEFAULTS, **(hparams or {})}
    for key in ("latent", "g_width", "d_width", "eval_samples"):
        if isinstance(h[key], bool) or not isinstance(h[key], int) or h[key] < 2:
            raise SpecError(f"must be an integer >= 2, got {h[key]!r}", field=f"hyperparameters.{key}",
                            value=h[key], fix=f"use e.g. {key}: {DEFAULTS[key]}")
    if h["arch"] not in ("mlp", "conv"):
        raise SpecError(f"must be 'mlp' or 'conv', got {h['arch']!r}", field="hyperparameters.arch",
                        value=h["arch"], fix="use arch: mlp (measured best here) or arch: conv (DCGAN convolutions)")
    if not 0.0 <= float(h["label_smoothing"]) < 0.5:
        raise SpecError(f"must be in [0, 0.5), got {h['label_smoothing']!r}", field="hyperparameters.label_smoothing",
                        value=h["label_smoothing"], fix="use e.g. label_smoothing: 0.1")
    return h


def build_models(hparams):
    from workloads.gan import model

    h = _h(hparams)
    if h["arch"] == "conv":
        return {"generator": model.Generator(latent=int(h["latent"]), width=int(h["g_width"])),
                "discriminator": model.Discriminator(width=int(h["d_width"]))}
    return {"generator": model.MLPGenerator(latent=int(h["latent"]), width=int(h["g_width"])),
            "discriminator": model.MLPDiscriminator(width=int(h["d_width"]))}


def build_datasets(hparams, data):
    from workloads.gan.data import build_datasets as _build

    return _build(hparams, data)


def _latent_dim(gen_engine) -> int:
    module = getattr(gen_engine, "module", gen_engine)
    return int(module.latent)


def train_step(engines, batch, ctx):
    import torch
    import torch.nn.functional as F

    h = _h(ctx.hparams)
    g, d = engines["generator"], engines["discriminator"]
    real = batch[0]
    dtype = real.dtype if ctx.dtype is None else ctx.dtype
    real = (real * 2.0 - 1.0).to(dtype)
    n = real.shape[0]
    smooth = float(h["label_smoothing"])
    z = torch.randn(n, _latent_dim(g), device=real.device, dtype=dtype)

    # discriminator: real -> 1 (smoothed), fake -> 0; the generator's graph is cut
    with torch.no_grad():
        fake = g(z)
    sigma = float(h["instance_noise"])  # noise on D's inputs blurs its boundary (Sønderby et al. 2017)

    def noisy(x):
        return x + sigma * torch.randn_like(x) if sigma > 0 else x

    logits_real, logits_fake = d(noisy(real)).float(), d(noisy(fake.detach())).float()
    loss_d = (F.binary_cross_entropy_with_logits(logits_real, torch.full_like(logits_real, 1.0 - smooth))
              + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
    d.backward(loss_d)
    d.step()

    # generator: fool a frozen discriminator (its parameters must not collect these gradients).
    # Call D's plain module, not its engine: an engine's forward hooks its output so that a
    # backward not started by that engine fails (ZeRO-0); ZeRO-3's parameter gathering lives
    # in hooks on the module itself, so it still works.
    d_net = getattr(d, "module", d)
    d_params = list(d_net.parameters())
    flags = [p.requires_grad for p in d_params]
    for p in d_params:
        p.requires_grad_(False)
    try:
        logits = d_net(noisy(g(z))).float()
        loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        g.backward(loss_g)
        g.step()
    finally:
        for p, flag in zip(d_params, flags):
            p.requires_grad_(flag)
    return {"loss": float(loss_g.detach().item() + loss_d.detach().item()),
            "loss_g": float(loss_g.detach().item()), "loss_d": float(loss_d.detach().item()),
            "d_real": float(torch.sigmoid(logits_real).mean().item()),
            "d_fake": float(torch.sigmoid(logits_fake).mean().item())}


def sample(generator, n: int, *, seed: int, device="cpu", dtype=None):
    """n images (n, 1, 8, 8) in [0, 1], deterministic for a seed (eval mode: BN running stats)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.latent, generator=gen).to(device, dtype=dtype or torch.float32)
    was_training = generator.training
    generator.eval()
    with torch.no_grad():
        out = generator(z).float().cpu()
    generator.train(was_training)
    return (out + 1.0) / 2.0


def evaluate(models, dataset, ctx):
    from workloads.common import fid as digits_fid

    h = _h(ctx.hparams)
    n = int(h["eval_samples"])
    images = sample(models["generator"], n, seed=EVAL_SEED, device=ctx.device, dtype=ctx.dtype)
    return {"fid": digits_fid.fid(images), "noise_fid": digits_fid.noise_fid(n)}


def artifacts(models, dataset, ctx, out_dir):
    from workloads.common.images import save_png

    images = sample(models["generator"], 64, seed=EVAL_SEED)
    return [save_png(images.numpy(), f"{out_dir}/gan_samples.png", ncol=8)]


def predictor(models, payload, hparams):
    """{"n": k[, "seed", "png"]} -> {"samples": (k, 8, 8) in [0, 1][, "png"]}."""
    from workloads.common.images import bool_field, check_keys, images_response, int_field

    check_keys(payload, ("n", "seed", "png"))
    n = int_field(payload, "n", default=16, lo=1, hi=256)
    seed = int_field(payload, "seed", default=0, lo=0, hi=2**31 - 1)
    images = sample(models["generator"], n, seed=seed)
    return images_response(images.numpy(), key="samples", png=bool_field(payload, "png"))


from workloads.common.images import IMAGES_SCHEMA, PNG_SCHEMA  # noqa: E402  (numpy only)

WORKLOAD = Workload(
    name="gan",
    description="DCGAN-style generator and discriminator on sklearn's 8x8 digits",
    build_models=build_models,
    build_datasets=build_datasets,
    train_step=train_step,
    evaluate=evaluate,
    predictor=predictor,
    artifacts=artifacts,
    metric="fid",
    mode="min",
    metrics=("fid", "noise_fid", "loss", "loss_g", "loss_d", "d_real", "d_fake"),
    default_hparams=DEFAULTS,
    search_space={
        "training.lr": {"loguniform": [1e-4, 1e-3]},
        "hyperparameters.latent": {"choice": [16, 32, 64]},
        "hyperparameters.arch": {"choice": ["mlp", "conv"]},
        "hyperparameters.label_smoothing": {"uniform": [0.0, 0.2]},
    },
    request_schema={
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 256, "default": 16},
                       "seed": {"type": "integer", "minimum": 0, "default": 0},
                       "png": {"type": "boolean", "default": False}},
    },
    response_schema={"type": "object", "properties": {"samples": IMAGES_SCHEMA, "png": PNG_SCHEMA}},
)

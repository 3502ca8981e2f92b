"""The autoencoder family: a VAE on 8x8 digits. No torch at import time.

Primary metric: `elbo`, the test-set evidence lower bound in nats per image (max; it is
negative: -(reconstruction + KL)). Also reports `recon` and `kl`, and `fid`/`noise_fid`
of decoded prior samples (workloads.common.fid).
"""
from __future__ import annotations

from trainyard.errors import SpecError
from trainyard.workload import BatchAdapter, Workload

DEFAULTS = {"latent": 8, "hidden": 256, "beta": 1.0, "eval_samples": 500}
EVAL_SEED = 1234


def _h(hparams) -> dict:
    h = {**DEFAULTS, **(hparams or {})}
    for key in ("latent", "hidden", "eval_samples"):
        if isinstance(h[key], bool) or not isinstance(h[key], int) or h[key] < 1:
            raise SpecError(f"must be a positive integer, got {h[key]!r}", field=f"hyperparameters.{key}",
                            value=h[key], fix=f"use e.g. {key}: {DEFAULTS[key]}")
    return h


def build_models(hparams):
    from workloads.autoencoder.model import VAE

    h = _h(hparams)
    return {"model": VAE(latent=int(h["latent"]), hidden=int(h["hidden"]))}


def build_datasets(hparams, data):
    from workloads.autoencoder.data import build_datasets as _build

    return _build(hparams, data)


def train_step(engines, batch, ctx):
    from workloads.autoencoder.model import neg_elbo

    engine = engines["model"]
    x = batch[0]
    logits, mu, logvar = engine(x)
    loss, recon, kl = neg_elbo(logits.float(), x.float(), mu.float(), logvar.float(),
                               beta=float(_h(ctx.hparams)["beta"]))
    engine.backward(loss)
    engine.step()
    return {"loss": float(loss.detach().item()), "recon": float(recon.detach().item()),
            "kl": float(kl.detach().item())}


def _sample(model, n: int, *, seed: int, device="cpu", dtype=None):
    """n decoded prior samples, pixel means in [0, 1] (deterministic for a seed)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.latent, generator=gen).to(device, dtype=dtype or torch.float32)
    return torch.sigmoid(model.decode(z).float()).cpu()


def evaluate(models, dataset, ctx):
    import torch

    from workloads.autoencoder.model import neg_elbo
    from workloads.common import fid as digits_fid

    h = _h(ctx.hparams)
    model = models["model"]
    x = dataset.tensors[0]
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(EVAL_SEED)
    eps = torch.randn(x.shape[0], model.latent, generator=gen)
    dt = ctx.dtype or torch.float32
    with torch.no_grad():
        logits, mu, logvar = model(x.to(ctx.device, dtype=dt), eps.to(ctx.device, dtype=dt))
        nelbo, recon, kl = neg_elbo(logits.float().cpu(), x.float(), mu.float().cpu(), logvar.float().cpu())
        samples = _sample(model, int(h["eval_samples"]), seed=EVAL_SEED, device=ctx.device, dtype=dt)
    model.train(was_training)
    return {"elbo": -float(nelbo), "recon": float(recon), "kl": float(kl), "eval_loss": float(nelbo),
            "fid": digits_fid.fid(samples), "noise_fid": digits_fid.noise_fid(int(h["eval_samples"]))}


def artifacts(models, dataset, ctx, out_dir):
    import numpy as np
    import torch

    from workloads.common.images import save_png

    model = models["model"]
    model.eval()
    x = dataset.tensors[0][:32]
    with torch.no_grad():
        samples = _sample(model, 64, seed=EVAL_SEED)
        logits, _, _ = model(x, torch.zeros(x.shape[0], model.latent))  # the posterior mean
        recon = torch.sigmoid(logits.float())
    # reconstructions: each input above its reconstruction, 8 pairs per row block
    pairs = np.concatenate([np.concatenate([x[i:i + 8].numpy(), recon[i:i + 8].numpy()]) for i in range(0, 32, 8)])
    return [save_png(samples.numpy(), f"{out_dir}/autoencoder_samples.png", ncol=8),
            save_png(pairs, f"{out_dir}/autoencoder_reconstructions.png", ncol=8)]


def predictor(models, payload, hparams):
    """{"inputs": images} -> {"reconstructions"}; or {"n": k[, "seed"]} -> {"samples"}. `png: true` adds a grid."""
    import torch

    from workloads.common.images import bool_field, check_keys, images_from_payload, images_response, int_field

    check_keys(payload, ("inputs", "scale", "n", "seed", "png"))
    model = models["model"].eval()
    png = bool_field(payload, "png")
    if "inputs" in payload and "n" in payload:
        raise SpecError("send either 'inputs' (to reconstruct) or 'n' (to sample), not both", field="n",
                        value=payload["n"], fix="drop one of them")
    if "inputs" in payload:
        x = torch.from_numpy(images_from_payload(payload))
        with torch.no_grad():
            mu, _ = model.encode(x)
            out = torch.sigmoid(model.decode(mu).float())
        return images_response(out.numpy(), key="reconstructions", png=png)
    if "n" not in payload:
        raise SpecError("the request needs 'inputs' (images to reconstruct) or 'n' (samples to draw)",
                        field="inputs", value=None, fix='send {"inputs": [[8x8 image]]} or {"n": 16}')
    n = int_field(payload, "n", default=16, lo=1, hi=256)
    seed = int_field(payload, "seed", default=0, lo=0, hi=2**31 - 1)
    with torch.no_grad():
        out = _sample(model, n, seed=seed)
    return images_response(out.numpy(), key="samples", png=png)


from workloads.common.images import IMAGES_SCHEMA, PNG_SCHEMA  # noqa: E402  (numpy only)


def _batch_items(payload, hparams):
    from workloads.common.images import check_keys, images_from_payload

    check_keys(payload, ("inputs", "scale", "n", "seed", "png"))
    if "inputs" not in payload or "n" in payload or payload.get("png"):
        return None  # sampling, a PNG grid of this request's images, or an error: alone
    return images_from_payload(payload)


def _batch_merge(arrays, hparams):
    from workloads.common.images import scaled_images_merge

    return scaled_images_merge(arrays, hparams)


WORKLOAD = Workload(
    name="autoencoder",
    description="Variational autoencoder on sklearn's 8x8 digits (reconstruction and sampling)",
    build_models=build_models,
    build_datasets=build_datasets,
    train_step=train_step,
    evaluate=evaluate,
    predictor=predictor,
    batch=BatchAdapter(_batch_items, _batch_merge, max_items=256),
    artifacts=artifacts,
    metric="elbo",
    mode="max",
    metrics=("elbo", "recon", "kl", "eval_loss", "fid", "noise_fid", "loss"),
    default_hparams=DEFAULTS,
    search_space={
        "training.lr": {"loguniform": [3e-4, 1e-2]},
        "hyperparameters.latent": {"choice": [4, 8, 16]},
        "hyperparameters.hidden": {"choice": [128, 256, 512]},
    },
    request_schema={
        "type": "object",
        "properties": {
            "inputs": {"type": "array", "description": "8x8 images to reconstruct (pixel values 0..scale)"},
            "scale": {"type": "number", "default": 16.0},
            "n": {"type": "integer", "minimum": 1, "maximum": 256, "description": "samples to draw instead"},
            "seed": {"type": "integer", "minimum": 0, "default": 0},
            "png": {"type": "boolean", "default": False},
        },
        "oneOf": [{"required": ["inputs"]}, {"required": ["n"]}],
    },
    response_schema={
        "type": "object",
        "properties": {"reconstructions": IMAGES_SCHEMA, "samples": IMAGES_SCHEMA, "png": PNG_SCHEMA},
    },
)

"""The transformer family: a byte-level decoder-only LM on the stdlib's source. No torch at import.

Primary metric: `bpb`, validation bits per byte (min) = mean next-byte cross-entropy / ln 2,
over the first `data.val_chunks` (default 128) validation chunks.
"""
from __future__ import annotations

import math

from trainyard.errors import SpecError
from trainyard.workload import Workload

DEFAULTS = {"d_model": 128, "layers": 4, "heads": 4, "context": 128, "dropout": 0.0}
MAX_TOKENS = 1024


def _h(hparams) -> dict:
    h = {**DEFAULTS, **(hparams or {})}
    for key in ("d_model", "layers", "heads", "context"):
        if isinstance(h[key], bool) or not isinstance(h[key], int) or h[key] < 1:
            raise SpecError(f"must be a positive integer, got {h[key]!r}", field=f"hyperparameters.{key}",
                            value=h[key], fix=f"use e.g. {key}: {DEFAULTS[key]}")
    if h["d_model"] % h["heads"]:
        raise SpecError(f"d_model ({h['d_model']}) must be divisible by heads ({h['heads']})",
                        field="hyperparameters.heads", value=h["heads"], fix="pick heads that divide d_model")
    return h


def build_models(hparams):
    from workloads.transformer.model import ByteLM

    h = _h(hparams)
    return {"model": ByteLM(d_model=int(h["d_model"]), layers=int(h["layers"]), heads=int(h["heads"]),
                            context=int(h["context"]), dropout=float(h["dropout"]))}


def build_datasets(hparams, data):
    from workloads.transformer.data import build_datasets as _build

    return _build(_h(hparams), data)


def _lm_loss(logits, targets):
    import torch.nn.functional as F

    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_step(engines, batch, ctx):
    engine = engines["model"]
    x, y = batch
    loss = _lm_loss(engine(x), y)
    engine.backward(loss)
    engine.step()
    return {"loss": float(loss.detach().item()), "train_bpb": float(loss.detach().item()) / math.log(2)}


def evaluate(models, dataset, ctx):
    import torch

    model = models["model"]
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), 64):
            xs, ys = zip(*(dataset[i] for i in range(start, min(start + 64, len(dataset)))))
            x, y = torch.stack(xs).to(ctx.device), torch.stack(ys).to(ctx.device)
            loss = _lm_loss(model(x), y)
            total += float(loss) * y.numel()
            count += y.numel()
    model.train(was_training)
    nats = total / max(count, 1)
    return {"bpb": nats / math.log(2), "eval_loss": nats}


def _generate(model, prompt: str, max_tokens: int, temperature: float, seed: int) -> str:
    import torch

    ids = list(prompt.encode("utf-8")) or [ord("\n")]
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out = model.generate(torch.tensor([ids], dtype=torch.long), max_tokens, temperature=temperature, generator=gen)
    return bytes(out[0, len(ids):].tolist()).decode("utf-8", errors="replace")


def artifacts(models, dataset, ctx, out_dir):
    from pathlib import Path

    text = _generate(models["model"], "def ", 400, 0.8, 0)
    path = Path(out_dir) / "transformer_sample.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("def " + text)
    return [str(path)]


def predictor(models, payload, hparams):
    """{"prompt", "max_tokens", "temperature"[, "seed"]} -> {"text"} (the continuation)."""
    from workloads.common.images import check_keys, float_field, int_field

    check_keys(payload, ("prompt", "max_tokens", "temperature", "seed"))
    prompt = payload.get("prompt", "")
    if not isinstance(prompt, str):
        raise SpecError(f"must be a string, got {type(prompt).__name__}", field="prompt", value=prompt,
                        fix='send {"prompt": "def main():"}')
    if len(prompt.encode("utf-8")) > 4096:
        raise SpecError("must be at most 4096 bytes", field="prompt", value=len(prompt), fix="shorten the prompt")
    max_tokens = int_field(payload, "max_tokens", default=128, lo=1, hi=MAX_TOKENS)
    temperature = float_field(payload, "temperature", default=0.8, lo=0.0, hi=5.0)
    seed = int_field(payload, "seed", default=0, lo=0, hi=2**31 - 1)
    return {"text": _generate(models["model"], prompt, max_tokens, temperature, seed)}


WORKLOAD = Workload(
    name="transformer",
    description="Decoder-only byte-level language model on the Python standard library's source",
    build_models=build_models,
    build_datasets=build_datasets,
    train_step=train_step,
    evaluate=evaluate,
    predictor=predictor,
    artifacts=artifacts,
    metric="bpb",
    mode="min",
    metrics=("bpb", "eval_loss", "loss", "train_bpb"),
    default_hparams=DEFAULTS,
    search_space={
        "training.lr": {"loguniform": [3e-4, 3e-3]},
        "hyperparameters.d_model": {"choice": [64, 128, 192]},
        "hyperparameters.layers": {"randint": [2, 6]},
    },
    request_schema={
        "type": "object",
        "properties": {"prompt": {"type": "string", "default": "", "maxLength": 4096},
                       "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS, "default": 128},
                       "temperature": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.8,
                                       "description": "0 is greedy"},
                       "seed": {"type": "integer", "minimum": 0, "default": 0}},
    },
    response_schema={"type": "object", "properties": {"text": {"type": "string"}}},
)

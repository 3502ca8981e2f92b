"""The cnn family: classify sklearn's 8x8 digits. No torch at import time."""
from __future__ import annotations

from trainyard.errors import SpecError
from trainyard.workload import BatchAdapter, Workload

DEFAULTS = {"channels": 32, "hidden": 128, "dropout": 0.1}


def build_models(hparams):
    from workloads.cnn.model import ConvNet

    h = {**DEFAULTS, **(hparams or {})}
    return {"model": ConvNet(channels=int(h["channels"]), hidden=int(h["hidden"]),
                             dropout=float(h["dropout"]))}


def build_datasets(hparams, data):
    from workloads.cnn.data import build_datasets as _build

    return _build(hparams, data)


def evaluate(models, dataset, ctx):
    import torch
    import torch.nn.functional as F

    model = models["model"]
    x, y = dataset.tensors
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x.to(ctx.device, dtype=ctx.dtype or torch.float32)).float()
    model.train(was_training)
    y = y.to(logits.device)
    return {"accuracy": float((logits.argmax(1) == y).float().mean()),
            "eval_loss": float(F.cross_entropy(logits, y))}


def _images_from_payload(payload):
    import numpy as np

    if not isinstance(payload, dict) or "inputs" not in payload:
        raise SpecError("the request needs an 'inputs' field", field="inputs", value=None,
                        fix="send {\"inputs\": [[...8 rows of 8 pixels in 0..16...]]} (one or more images)")
    try:
        arr = np.asarray(payload["inputs"], dtype=np.float32)
    except (TypeError, ValueError):
        raise SpecError("must be numbers", field="inputs", value="<non-numeric>",
                        fix="send nested lists of numbers") from None
    if arr.ndim == 2 and arr.shape == (8, 8):
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == 64:
        arr = arr.reshape(-1, 8, 8)
    if arr.ndim != 3 or arr.shape[1:] != (8, 8):
        raise SpecError(f"must have shape (N, 8, 8) or (N, 64), got {tuple(arr.shape)}",
                        field="inputs", value=list(arr.shape), fix="send 8x8 images")
    scale = float(payload.get("scale", 16.0))
    return arr[:, None, :, :] / scale


def predictor(models, payload, hparams):
    import torch

    x = torch.from_numpy(_images_from_payload(payload))
    model = models["model"].eval()
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), dim=1)
    return {"classes": probs.argmax(1).tolist(), "probabilities": probs.round(decimals=5).tolist()}


def _batch_items(payload, hparams):
    return _images_from_payload(payload)  # (n, 1, 8, 8), already scaled; SpecError when malformed


def _batch_merge(arrays, hparams):
    from workloads.common.images import scaled_images_merge

    return scaled_images_merge(arrays, hparams)


WORKLOAD = Workload(
    name="cnn",
    description="ConvNet digit classifier on sklearn's 8x8 digits",
    build_models=build_models,
    build_datasets=build_datasets,
    evaluate=evaluate,
    predictor=predictor,
    batch=BatchAdapter(_batch_items, _batch_merge),
    metric="accuracy",
    mode="max",
    metrics=("accuracy", "eval_loss", "loss"),
    default_hparams=DEFAULTS,
    search_space={
        "training.lr": {"loguniform": [1e-4, 1e-2]},
        "hyperparameters.channels": {"choice": [16, 32, 64]},
        "hyperparameters.dropout": {"uniform": [0.0, 0.3]},
    },
    request_schema={
        "type": "object", "required": ["inputs"],
        "properties": {"inputs": {"description": "One 8x8 image or a list of them, pixel values 0..16",
                                  "type": "array"},
                       "scale": {"type": "number", "default": 16.0}},
    },
    response_schema={
        "type": "object",
        "properties": {"classes": {"type": "array", "items": {"type": "integer"}},
                       "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
    },
)

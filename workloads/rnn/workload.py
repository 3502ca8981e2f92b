"""The rnn family: an LSTM (or GRU) over sequences. No torch at import time.

Two tasks, chosen with `hyperparameters.task`:
  classify  (default, workload `rnn`): sklearn digits read row by row, 8 steps of 8 pixels.
            Primary metric: accuracy (max).
  forecast  (workload `rnn-forecast`): a generated two-season noisy series; predict the next
            `horizon` values from the last `window`. Primary metric: MASE (min), the test MAE
            divided by the in-sample MAE of the seasonal-naive forecast (period 16); below 1.0
            beats seasonal naive. `naive_mase` reports the seasonal-naive forecast's own test MASE.
"""
from __future__ import annotations

import dataclasses

from trainyard.errors import SpecError
from trainyard.workload import BatchAdapter, Workload

DEFAULTS = {"task": "classify", "cell": "lstm", "hidden": 64, "layers": 1, "dropout": 0.0,
            "window": 64, "horizon": 16}
TASKS = ("classify", "forecast")


def _hparams(hparams, *, task_default: str = "classify") -> dict:
    h = {**DEFAULTS, "task": task_default, **(hparams or {})}
    if h["task"] not in TASKS:
        raise SpecError(f"must be one of {', '.join(TASKS)}, got {h['task']!r}", field="hyperparameters.task",
                        value=h["task"], fix="use task: classify (digits) or task: forecast (time series)")
    if h["cell"] not in ("lstm", "gru"):
        raise SpecError(f"must be 'lstm' or 'gru', got {h['cell']!r}", field="hyperparameters.cell",
                        value=h["cell"], fix="use cell: lstm or cell: gru")
    for key in ("hidden", "layers", "window", "horizon"):
        if isinstance(h[key], bool) or not isinstance(h[key], int) or h[key] < 1:
            raise SpecError(f"must be a positive integer, got {h[key]!r}", field=f"hyperparameters.{key}",
                            value=h[key], fix=f"use e.g. {key}: {DEFAULTS[key]}")
    return h


def _make(task_default: str):
    def build_models(hparams):
        from workloads.rnn.model import RecurrentNet

        h = _hparams(hparams, task_default=task_default)
        if h["task"] != task_default:
            raise SpecError(
                f"workload '{_NAMES[task_default]}' reports {_METRIC[task_default]}, but task is {h['task']!r}",
                field="hyperparameters.task", value=h["task"],
                fix=f"use workload: {_NAMES[h['task']]} for task {h['task']}")
        classify = h["task"] == "classify"
        return {"model": RecurrentNet(input_size=8 if classify else 1, outputs=10 if classify else int(h["horizon"]),
                                      cell=h["cell"], hidden=int(h["hidden"]), layers=int(h["layers"]),
                                      dropout=float(h["dropout"]))}

    def build_datasets(hparams, data):
        from workloads.rnn import data as rnn_data

        h = _hparams(hparams, task_default=task_default)
        train, test = rnn_data.build_datasets(h, data)
        if h["task"] == "forecast":
            *_, scale = rnn_data.forecast_arrays(int(h["window"]), int(h["horizon"]),
                                                 int((data or {}).get("seed", rnn_data.SERIES["seed"])))
            test.mase_scale = scale
        return train, test

    def train_step(engines, batch, ctx):
        import torch.nn.functional as F

        h = _hparams(ctx.hparams, task_default=task_default)
        engine = engines["model"]
        x, y = batch
        out = engine(x)
        # forecast: L1 is the loss MASE measures
        loss = F.cross_entropy(out, y) if h["task"] == "classify" else F.l1_loss(out.float(), y.float())
        engine.backward(loss)
        engine.step()
        return {"loss": float(loss.detach().float().item())}

    def evaluate(models, dataset, ctx):
        import torch
        import torch.nn.functional as F

        h = _hparams(ctx.hparams, task_default=task_default)
        model = models["model"]
        x, y = dataset.tensors
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = model(x.to(ctx.device, dtype=ctx.dtype or torch.float32)).float().cpu()
        model.train(was_training)
        if h["task"] == "classify":
            return {"accuracy": float((out.argmax(1) == y).float().mean()), "eval_loss": float(F.cross_entropy(out, y))}
        from workloads.rnn.data import seasonal_naive

        scale = getattr(dataset, "mase_scale", None) or 1.0
        mae = float((out - y).abs().mean())
        naive = seasonal_naive(x.numpy(), y.shape[1])
        naive_mae = float(abs(naive - y.numpy()).mean())
        return {"mase": mae / scale, "naive_mase": naive_mae / scale, "mae": mae, "eval_loss": mae}

    return build_models, build_datasets, train_step, evaluate


def _series_from_payload(payload, window: int):
    import numpy as np

    if not isinstance(payload, dict) or "inputs" not in payload:
        raise SpecError("the request needs an 'inputs' field", field="inputs", value=None,
                        fix=f"send {{\"inputs\": [...the last {window} values of the series...]}}")
    try:
        arr = np.asarray(payload["inputs"], dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError("must be numbers", field="inputs", value="<non-numeric>", fix="send lists of numbers") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] == 0:
        raise SpecError(f"must be one series or a list of series (N, T) with T >= 2, got shape {tuple(arr.shape)}",
                        field="inputs", value=list(arr.shape), fix=f"send the last {window} values of each series")
    if not np.isfinite(arr).all():
        raise SpecError("must be finite numbers", field="inputs", value="<nan/inf>", fix="remove NaN/inf values")
    return arr


def _make_predictor(task_default: str):
    def predictor(models, payload, hparams):
        import numpy as np
        import torch

        from workloads.common.images import check_keys, images_from_payload

        h = _hparams(hparams, task_default=task_default)
        model = models["model"].eval()
        if h["task"] == "classify":
            check_keys(payload, ("inputs", "scale"))
            x = torch.from_numpy(images_from_payload(payload)[:, 0])
            with torch.no_grad():
                probs = torch.softmax(model(x).float(), dim=1)
            return {"classes": probs.argmax(1).tolist(), "probabilities": probs.round(decimals=5).tolist()}
        check_keys(payload, ("inputs",))
        window = int(h["window"])
        arr = _series_from_payload(payload, window)
        if arr.shape[1] < window:
            raise SpecError(f"each series needs at least window={window} values, got {arr.shape[1]}",
                            field="inputs", value=list(arr.shape), fix=f"send the last {window} values")
        from workloads.rnn.data import split_series

        # the model learnt the series in standardised units (training part's mean and std)
        _, _, mean, std = split_series()
        z = (arr[:, -window:] - mean) / std
        with torch.no_grad():
            out = model(torch.from_numpy(z.astype(np.float32))).double().numpy()
        return {"forecast": (out * std + mean).round(6).tolist(), "horizon": int(h["horizon"])}

    return predictor


def _make_batch(task_default: str) -> BatchAdapter:
    """Requests stack into one forward pass: images (classify) or windows (forecast)."""

    def items(payload, hparams):
        from workloads.common.images import check_keys, images_from_payload

        h = _hparams(hparams, task_default=task_default)
        if h["task"] == "classify":
            check_keys(payload, ("inputs", "scale"))
            return images_from_payload(payload)  # (n, 1, 8, 8) in [0, 1]
        check_keys(payload, ("inputs",))
        window = int(h["window"])
        arr = _series_from_payload(payload, window)
        if arr.shape[1] < window:
            return None  # the family's own message (422) comes from running it alone
        return arr[:, -window:]  # the predictor reads only the last `window` values

    def merge(arrays, hparams):
        import numpy as np

        from workloads.common.images import scaled_images_merge

        if _hparams(hparams, task_default=task_default)["task"] == "classify":
            return scaled_images_merge(arrays, hparams)
        return {"inputs": np.concatenate(arrays, axis=0)}

    return BatchAdapter(items, merge, max_items=256)


_NAMES = {"classify": "rnn", "forecast": "rnn-forecast"}
_METRIC = {"classify": "accuracy", "forecast": "mase"}

_c_models, _c_data, _c_step, _c_eval = _make("classify")
_f_models, _f_data, _f_step, _f_eval = _make("forecast")

_CLASSIFY_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {"inputs": {"description": "One 8x8 digit or a list of them (rows are the time steps), 0..16",
                              "type": "array"},
                   "scale": {"type": "number", "default": 16.0}},
}
_CLASSIFY_RESPONSE = {
    "type": "object",
    "properties": {"classes": {"type": "array", "items": {"type": "integer"}},
                   "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
}

WORKLOAD = Workload(
    name="rnn",
    description="LSTM/GRU digit classifier reading 8x8 digits row by row (task: classify)",
    build_models=_c_models,
    build_datasets=_c_data,
    train_step=_c_step,
    evaluate=_c_eval,
    predictor=_make_predictor("classify"),
    batch=_make_batch("classify"),
    metric="accuracy",
    mode="max",
    metrics=("accuracy", "eval_loss", "loss"),
    default_hparams={**DEFAULTS, "task": "classify"},
    hparams_schema={"properties": {
        "task": {"const": "classify", "description": "use workload: rnn-forecast for task: forecast"},
        "cell": {"enum": ["lstm", "gru"], "description": "use cell: lstm or cell: gru"}}},
    search_space={
        "training.lr": {"loguniform": [1e-3, 2e-2]},
        "hyperparameters.cell": {"choice": ["lstm", "gru"]},
        "hyperparameters.hidden": {"choice": [32, 64, 128]},
    },
    request_schema=_CLASSIFY_REQUEST,
    response_schema=_CLASSIFY_RESPONSE,
)

FORECAST = dataclasses.replace(
    WORKLOAD,
    name="rnn-forecast",
    description="LSTM/GRU multi-step forecaster of a two-season noisy series (task: forecast)",
    build_models=_f_models,
    build_datasets=_f_data,
    train_step=_f_step,
    evaluate=_f_eval,
    predictor=_make_predictor("forecast"),
    batch=_make_batch("forecast"),
    metric="mase",
    mode="min",
    metrics=("mase", "naive_mase", "mae", "eval_loss", "loss"),
    default_hparams={**DEFAULTS, "task": "forecast"},
    hparams_schema={"properties": {
        "task": {"const": "forecast", "description": "use workload: rnn for task: classify"},
        "cell": {"enum": ["lstm", "gru"], "description": "use cell: lstm or cell: gru"}}},
    search_space={
        "training.lr": {"loguniform": [1e-3, 2e-2]},
        "hyperparameters.cell": {"choice": ["lstm", "gru"]},
        "hyperparameters.hidden": {"choice": [32, 64, 128]},
    },
    request_schema={
        "type": "object", "required": ["inputs"],
        "properties": {"inputs": {"description": "One series (the last `window` values) or a list of series",
                                  "type": "array"}},
    },
    response_schema={
        "type": "object",
        "properties": {"forecast": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                       "horizon": {"type": "integer"}},
    },
)

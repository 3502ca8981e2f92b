"""A user-written Trainyard workload: an MLP regressor on sklearn's diabetes data.

It lives outside the `workloads` package, the way your own code would. Submit it from this
folder (the spec's `working_dir: .` ships the folder to the cluster, where `diabetes` is
importable), or install it and point `workload:` at `diabetes:WORKLOAD`.

The module imports no torch at the top: the server imports it to read the name, metrics and
search space, and the server never imports torch.
"""
from __future__ import annotations

from trainyard.errors import SpecError
from trainyard.workload import Workload

DEFAULTS = {"hidden": 64, "dropout": 0.1}
FEATURES = 10


def _arrays():
    """Standardised features and target, split 80/20 with a fixed seed."""
    import numpy as np
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    y_mu, y_sd = y_tr.mean(), y_tr.std()
    f = lambda a: ((a - mu) / sd).astype(np.float32)  # noqa: E731
    g = lambda a: ((a - y_mu) / y_sd).astype(np.float32)[:, None]  # noqa: E731
    return f(x_tr), g(y_tr), f(x_te), g(y_te), (mu, sd, y_mu, y_sd)


def build_models(hparams):
    from torch import nn

    h = {**DEFAULTS, **(hparams or {})}
    width = int(h["hidden"])
    return {"model": nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Dropout(float(h["dropout"])),
                                   nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))}


def build_datasets(hparams, data):
    import torch
    from torch.utils.data import TensorDataset

    x_tr, y_tr, x_te, y_te, _ = _arrays()
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))


def mse(outputs, targets):
    import torch.nn.functional as F

    return F.mse_loss(outputs.float(), targets.float())


def evaluate(models, dataset, ctx):
    import torch

    model = models["model"]
    x, y = dataset.tensors
    was_training = model.training
    model.eval()
    with torch.no_grad():
        pred = model(x.to(ctx.device, dtype=ctx.dtype or torch.float32)).float().cpu()
    model.train(was_training)
    ss_res = float(((pred - y) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"r2": 1.0 - ss_res / ss_tot, "eval_loss": ss_res / len(y)}


def predictor(models, payload, hparams):
    """{"inputs": [[10 raw features], ...]} -> {"predictions": [disease progression, ...]}."""
    import numpy as np
    import torch

    if not isinstance(payload, dict) or "inputs" not in payload:
        raise SpecError("the request needs an 'inputs' field", field="inputs", value=None,
                        fix=f"send {{\"inputs\": [[{FEATURES} numbers]]}}")
    try:
        x = np.asarray(payload["inputs"], dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecError("must be numbers", field="inputs", value="<non-numeric>", fix="send lists of numbers") from None
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != FEATURES:
        raise SpecError(f"must have shape (N, {FEATURES}), got {tuple(x.shape)}", field="inputs",
                        value=list(x.shape), fix=f"send rows of {FEATURES} features (sklearn's diabetes order)")
    *_, (mu, sd, y_mu, y_sd) = _arrays()
    model = models["model"].eval()
    with torch.no_grad():
        z = model(torch.from_numpy(((x - mu) / sd).astype(np.float32))).double().numpy()[:, 0]
    return {"predictions": (z * y_sd + y_mu).round(3).tolist()}


WORKLOAD = Workload(
    name="diabetes",
    description="MLP regressor on sklearn's diabetes data (a user-written workload)",
    build_models=build_models,
    build_datasets=build_datasets,
    evaluate=evaluate,
    predictor=predictor,
    loss_fn=mse,  # the default supervised_step calls it on (outputs, targets)
    metric="r2",
    mode="max",
    metrics=("r2", "eval_loss", "loss"),
    default_hparams=DEFAULTS,
    search_space={"training.lr": {"loguniform": [1e-4, 1e-2]},
                  "hyperparameters.hidden": {"choice": [32, 64, 128]}},
    request_schema={"type": "object", "required": ["inputs"],
                    "properties": {"inputs": {"type": "array", "description": "rows of 10 raw features"}}},
    response_schema={"type": "object", "properties": {"predictions": {"type": "array", "items": {"type": "number"}}}},
)

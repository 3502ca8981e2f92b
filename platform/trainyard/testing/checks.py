"""A quick local check of a Workload, and the meta.json its entry point ships."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = ["check_workload", "meta_table", "write_meta"]


def check_workload(workload, *, hparams: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                   steps: int = 2, batch_size: int = 8, lr: float = 1e-3, payload: Any = None) -> dict[str, float]:
    """Build the models and datasets, run `steps` train steps on FakeEngines, evaluate, and
    (when `payload` is given) predict once. Returns the evaluation's metrics.

    Raises AssertionError naming what breaks the contract: a missing primary metric, a
    non-scalar loss, metadata the server would refuse."""
    import torch

    from trainyard.families import parse_meta
    from trainyard.testing.fake_engine import engines_for
    from trainyard.workload import StepContext

    parse_meta(workload.meta().to_dict())  # what a client would send must pass the server's check
    h = {**dict(workload.default_hparams), **dict(hparams or {})}
    models = workload.build_models(h)
    assert isinstance(models, dict) and models, f"build_models must return a dict of modules, got {models!r}"
    train, test = workload.build_datasets(h, dict(data or {}))
    items = [train[i] for i in range(min(batch_size, len(train)))]
    batch = tuple(torch.stack(col) for col in zip(*items)) if isinstance(items[0], (tuple, list)) \
        else torch.stack(items)
    engines = engines_for(models, lr=lr)
    ctx = StepContext(hparams=h, loss_fn=workload.loss_fn)
    for step in range(steps):
        ctx.step = step
        losses = workload.train_step(engines, batch, ctx)
        bad = {k: v for k, v in losses.items() if not isinstance(v, float)}
        assert not bad, f"train_step must return float losses, got {bad}"
    metrics = workload.evaluate(models, test, ctx)
    assert workload.metric in metrics, f"evaluate must report {workload.metric!r}, got {sorted(metrics)}"
    if payload is not None:
        cpu = {name: module.cpu().eval() for name, module in models.items()}
        out = workload.predictor(cpu, payload, h)
        json.dumps(out)  # JSON out
        if workload.batch is not None:
            items = workload.batch.items(payload, h)
            if items is not None:
                json.dumps(workload.predictor(cpu, workload.batch.merge([items], h), h))
    return metrics


def meta_table(workloads: Iterable) -> dict[str, dict]:
    """{workload name: metadata}: the content of a family's meta.json."""
    return {w.name: w.meta().to_dict() for w in workloads}


def write_meta(workloads: Iterable, folder: str | Path) -> Path:
    """Write `folder`/meta.json for the Workloads defined in that folder's module(s), so that
    a server with the package installed knows them without importing it."""
    from trainyard.families import META_FILE

    path = Path(folder) / META_FILE
    path.write_text(json.dumps(meta_table(workloads), indent=2, sort_keys=True) + "\n")
    return path

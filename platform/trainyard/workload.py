"""The Workload contract that every model family implements.

A family is one frozen `Workload` value. Importing the module that defines it must not
import torch: the server reads `name`, `metrics`, `metric`, `mode`, `search_space` and
`default_hparams` to validate specs, and it never imports torch. Families therefore
import torch and their model/data modules *inside* the functions they hand over.

Built-in families live in `workloads/<name>/workload.py` and are listed in
`workloads.REGISTRY`. A user's own family is any importable `module:attribute` (or a
folder shipped as the job's working_dir), and gets nothing the built-ins don't.

Call signatures (all keyword arguments after the first, all run inside Ray Train
workers on every rank unless said otherwise):

    build_models(hparams) -> dict[str, torch.nn.Module]
        One entry per independently optimised module. Each gets its own DeepSpeed
        engine and optimizer (a GAN returns {"generator": ..., "discriminator": ...}).

    build_datasets(hparams, data) -> (train_dataset, eval_dataset)
        torch Datasets. Deterministic: the same (hparams, data) gives the same split.

    train_step(engines, batch, ctx) -> dict[str, float]
        One optimisation step. `engines` maps the names from build_models to DeepSpeed
        engines; the step calls engine(...) / engine.backward(loss) / engine.step().
        Returns scalar losses to log. `ctx` is a StepContext. The default,
        `supervised_step`, fits a single "model" with `loss_fn(outputs, targets)`.

    evaluate(models, dataset, ctx) -> dict[str, float]
        Must return at least `metric`. `models` maps names to the modules to call (under
        ZeRO-3 every rank must call them, since the parameters are gathered collectively).

    predictor(models, payload, hparams) -> dict
        JSON in, JSON out, on plain (unwrapped) CPU modules. Raises trainyard.errors.SpecError
        naming the field when the payload has the wrong shape or type.

    artifacts(models, dataset, ctx, out_dir) -> list[str]      (optional; rank 0 only)
        Writes images (sample grids, reconstructions) under out_dir and returns paths,
        logged to the MLflow run.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainyard.errors import SpecError, did_you_mean

__all__ = ["Workload", "StepContext", "supervised_step", "resolve_workload", "known_workloads"]


@dataclass
class StepContext:
    """What a step or an evaluation needs to know about where it runs."""

    hparams: Mapping[str, Any]
    device: Any = "cpu"  # torch.device
    dtype: Any = None  # torch.dtype of the engines' parameters (fp32/bf16/fp16)
    rank: int = 0
    world_size: int = 1
    step: int = 0
    epoch: int = 0
    loss_fn: Callable | None = None
    extra: dict = field(default_factory=dict)


def _cross_entropy(outputs, targets):
    import torch.nn.functional as F

    return F.cross_entropy(outputs, targets)


def supervised_step(engines, batch, ctx: StepContext) -> dict[str, float]:
    """Default step: one module called "model", batch = (inputs, targets)."""
    engine = engines["model"]
    inputs, targets = batch
    outputs = engine(inputs)
    loss = (ctx.loss_fn or _cross_entropy)(outputs, targets)
    engine.backward(loss)
    engine.step()
    return {"loss": float(loss.detach().float().item())}


@dataclass(frozen=True)
class Workload:
    name: str
    build_models: Callable[..., dict]
    build_datasets: Callable[..., tuple]
    evaluate: Callable[..., dict]
    predictor: Callable[..., dict]
    metric: str
    mode: str  # "max" or "min"
    metrics: tuple[str, ...]
    search_space: Mapping[str, Any] = field(default_factory=dict)
    default_hparams: Mapping[str, Any] = field(default_factory=dict)
    train_step: Callable[..., dict] = supervised_step
    loss_fn: Callable | None = None
    artifacts: Callable[..., list] | None = None
    description: str = ""
    # JSON Schemas of the predictor's request and response, for the serving OpenAPI page.
    request_schema: Mapping[str, Any] = field(default_factory=dict)
    response_schema: Mapping[str, Any] = field(default_factory=dict)
    # JSON Schema of `hyperparameters`: static data, so the server checks a spec against it
    # without running family code. A property's "description" is the fix shown when it fails.
    hparams_schema: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"Workload {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")
        if self.metric not in self.metrics:
            raise ValueError(f"Workload {self.name!r}: metric {self.metric!r} is not in metrics {self.metrics}")


def known_workloads() -> dict[str, str]:
    """Built-in family name -> import path. Imports no torch."""
    from workloads import REGISTRY

    return dict(REGISTRY)


def resolve_workload(ref: str, *, field_name: str = "workload") -> Workload:
    """Turn a family name or a `module:attribute` reference into a Workload.

    Raises SpecError naming `field_name` when the name is unknown or the import fails.
    """
    registry = known_workloads()
    if ref in registry:
        path = registry[ref]
    elif ":" in ref:
        path = ref
    else:
        known = ", ".join(sorted(registry))
        raise SpecError(
            f"workload {ref!r} is not known;{did_you_mean(ref, registry) or ''} Known: {known}",
            field=field_name, value=ref,
            fix="use a built-in family name, or 'package.module:ATTRIBUTE' for your own",
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"cannot import module {module_name!r} ({exc})", field=field_name, value=ref,
            fix="make it importable (installed, or inside the job's working_dir)",
        ) from exc
    try:
        workload = getattr(module, attr or "WORKLOAD")
    except AttributeError as exc:
        raise SpecError(
            f"module {module_name!r} has no attribute {attr or 'WORKLOAD'!r}", field=field_name,
            value=ref, fix="point at a trainyard.workload.Workload value",
        ) from exc
    if not isinstance(workload, Workload):
        raise SpecError(
            f"{path} is a {type(workload).__name__}, not a trainyard Workload",
            field=field_name, value=ref, fix="export a trainyard.workload.Workload",
        )
    return workload

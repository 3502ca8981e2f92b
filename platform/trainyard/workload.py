"""The Workload contract that every model family implements.

A family is one frozen `Workload` value. Importing the module that defines it must not
import torch: the server reads `name`, `metrics`, `metric`, `mode`, `search_space` and
`default_hparams` to validate specs, and it never imports torch. Families therefore
import torch and their model/data modules *inside* the functions they hand over.

Families register as entry points of the group `trainyard.workloads` (name ->
"module:ATTRIBUTE"); the built-ins (`workloads/<name>/workload.py`) register the same way in
Trainyard's pyproject.toml, so an installed package adds a family without editing Trainyard.
A user's own family may also be any importable `module:attribute` (or a folder shipped as
the job's working_dir), and gets nothing the built-ins don't. The control plane never
imports a family: it reads `WorkloadMeta` (trainyard.families), a registered family's
meta.json or what the client sent; `Workload.meta()` is that data, and a test keeps each
built-in's meta.json equal to it.

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

    batch: BatchAdapter                                         (optional; Serve replicas)
        How requests stack into one predictor call (serve.batch). See BatchAdapter.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from trainyard.errors import SpecError

__all__ = ["Workload", "StepContext", "BatchAdapter", "supervised_step", "resolve_workload",
           "known_workloads", "local_meta"]


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


class BatchAdapter:
    """How one family's requests stack into one forward pass (serve.batch).

    `items(payload, hparams)` validates one request into an array of N items (a SpecError
    here is that request's own 422), or returns None when the request cannot be stacked
    (it asks for a PNG grid, or for samples): it then runs alone. `merge(arrays, hparams)`
    is the one payload for the stacked items; the family's predictor answers lists per
    item, which trainyard.serving.batching cuts back per request. `max_items` bounds one
    merged payload (the family's own limit on items per request).
    """

    def __init__(self, items: Callable, merge: Callable, max_items: int = 1 << 30):
        self.items, self.merge, self.max_items = items, merge, max_items


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
    # request batching for Serve replicas; None: every request runs alone
    batch: BatchAdapter | None = None

    def meta(self):
        """The family's metadata (trainyard.families.WorkloadMeta): what the server may know."""
        from trainyard.families import WorkloadMeta

        return WorkloadMeta(name=self.name, metric=self.metric, mode=self.mode, metrics=tuple(self.metrics),
                            search_space=dict(self.search_space), default_hparams=dict(self.default_hparams),
                            description=self.description, request_schema=dict(self.request_schema),
                            response_schema=dict(self.response_schema), batches=self.batch is not None,
                            hparams_schema=dict(self.hparams_schema))

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"Workload {self.name!r}: mode must be 'max' or 'min', got {self.mode!r}")
        if self.metric not in self.metrics:
            raise ValueError(f"Workload {self.name!r}: metric {self.metric!r} is not in metrics {self.metrics}")


def known_workloads() -> dict[str, str]:
    """Registered family name -> "module:ATTRIBUTE" (entry points). Imports no family."""
    from trainyard.families import registered

    return dict(registered())


def resolve_workload(ref: str, *, field_name: str = "workload") -> Workload:
    """Import a family (registered name or `module:attribute`) and return its Workload.

    Runs user code: only the runner, a Serve replica, or a client on the user's machine
    calls this, never the control plane. Raises SpecError naming `field_name` when the name
    is unknown, the reference malformed, or the import fails."""
    from trainyard.families import check_reference

    ref = check_reference(ref, field_name=field_name)
    path = known_workloads().get(ref, ref)
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"cannot import module {module_name!r} ({exc})", field=field_name, value=ref,
            fix="make it importable (installed, or inside the job's working_dir)",
        ) from exc
    except Exception as exc:  # the module's own top-level code failed
        raise SpecError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {str(exc)[:300]}",
            field=field_name, value=ref, fix="fix the error in your workload module",
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


def local_meta(ref: str, *, paths: Iterable[str | Path] = ()) -> dict | None:
    """Client side: import the user's own family on the user's machine and return its
    metadata as JSON-able data, to send with the spec (`workload_meta`).

    None for a registered family with static metadata (the server knows it), for a
    malformed reference (the server names the error), and when the module does not give a
    Workload here (the runner checks it on the cluster, and fails the job naming the field).
    `paths` (the job's working_dir) go first on sys.path during the import."""
    from trainyard.families import REF_RE, registered, static_meta

    if not isinstance(ref, str) or (ref in registered() and static_meta(ref) is not None):
        return None
    if ref not in registered() and not REF_RE.match(ref):
        return None
    module_name = registered().get(ref, ref).partition(":")[0]
    extra = [str(Path(p).expanduser().resolve()) for p in paths]
    saved = list(sys.path)
    sys.path[:0] = extra
    try:
        if importlib.util.find_spec(module_name.split(".")[0]) is None:
            return None
        try:
            workload = resolve_workload(ref)
        except SpecError:
            # not importable here, or not (yet) a Workload here: the code that counts is the
            # cluster's, so the runner checks it when the job starts and names the field
            return None
        return workload.meta().to_dict()
    finally:
        sys.path[:] = saved

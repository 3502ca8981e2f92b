"""Search spaces: parse the spec's mapping, count grids, translate to Ray Tune, apply a
trial's values to the base job.

A space maps a dotted key, 'section.key', to exactly one distribution:

    training.lr:              {loguniform: [1.0e-4, 1.0e-2]}
    training.weight_decay:    {uniform: [0.0, 0.1]}
    training.batch_size:      {quniform: [16, 64, 16]}     # low, high, step q
    hyperparameters.channels: {choice: [16, 32, 64]}       # sampled
    deepspeed.zero_stage:     {grid: [1, 2]}               # every value, each num_trials/len times
    hyperparameters.hidden:   {randint: [64, 257]}         # high exclusive, like Python's range

Sections: training, deepspeed, hyperparameters, data (the job spec's blocks).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

from trainyard.errors import FieldIssue

__all__ = ["KINDS", "SECTIONS", "Dimension", "parse_space", "grid_size", "to_tune", "nest", "flatten",
           "apply_params", "candidate_values"]

KINDS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")
SECTIONS = ("training", "deepspeed", "hyperparameters", "data")
FIELD = "sweep.search_space"


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted: "training.lr"
    kind: str
    values: tuple = ()  # choice / grid
    low: float | None = None
    high: float | None = None
    q: float | None = None

    @property
    def discrete(self) -> bool:
        return self.kind in ("choice", "grid")

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    def describe(self) -> str:
        if self.discrete:
            return f"{self.kind}{list(self.values)}"
        extra = f", q={self.q}" if self.q is not None else ""
        return f"{self.kind}[{self.low}, {self.high}{extra}]"


def _num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_one(key: str, raw: Any) -> tuple[Dimension | None, list[FieldIssue]]:
    field = f"{FIELD}.{key}"
    example = "e.g. {loguniform: [1.0e-4, 1.0e-2]} or {choice: [16, 32]}"
    if not isinstance(raw, Mapping) or len(raw) != 1:
        return None, [FieldIssue(field, f"must be a mapping with exactly one of {', '.join(KINDS)}, got {raw!r}",
                                 raw, example)]
    (kind, args), = raw.items()
    kind = str(kind)
    if kind not in KINDS:
        from trainyard.errors import did_you_mean

        return None, [FieldIssue(field, f"unknown distribution {kind!r};{did_you_mean(kind, KINDS)} "
                                        f"known: {', '.join(KINDS)}", kind, example)]
    if kind in ("choice", "grid"):
        if not isinstance(args, (list, tuple)) or not args:
            return None, [FieldIssue(f"{field}.{kind}", f"must be a non-empty list of values, got {args!r}",
                                     args, "list the values to try, e.g. [16, 32, 64]")]
        return Dimension(key, kind, values=tuple(args)), []
    want = 3 if kind == "quniform" else 2
    shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
    if not isinstance(args, (list, tuple)) or len(args) != want or not all(_num(a) for a in args):
        return None, [FieldIssue(f"{field}.{kind}", f"must be {shape} (numbers), got {args!r}", args,
                                 f"write {{{kind}: {shape}}}")]
    low, high = float(args[0]), float(args[1])
    q = float(args[2]) if kind == "quniform" else None
    if low >= high:
        return None, [FieldIssue(f"{field}.{kind}", f"low must be < high, got low={args[0]}, high={args[1]}",
                                 list(args), "swap the bounds or widen the range")]
    if kind == "loguniform" and low <= 0:
        return None, [FieldIssue(f"{field}.{kind}", f"bounds must be > 0 on a log scale, got low={args[0]}",
                                 list(args), "use a positive low bound, or uniform for ranges through 0")]
    if kind == "randint":
        if int(args[0]) != args[0] or int(args[1]) != args[1]:
            return None, [FieldIssue(f"{field}.{kind}", f"bounds must be integers, got {args!r}", list(args),
                                     "use quniform or uniform for fractional ranges")]
        low, high = int(args[0]), int(args[1])
    if kind == "quniform" and (q is None or q <= 0 or q > high - low):
        return None, [FieldIssue(f"{field}.{kind}", f"q must be > 0 and <= high - low, got q={args[2]}",
                                 list(args), "q is the step between values")]
    return Dimension(key, kind, low=low, high=high, q=q), []


def parse_space(raw: Mapping[str, Any] | None) -> tuple[list[Dimension], list[FieldIssue]]:
    """Parse a search space mapping. Returns the dimensions and every problem found."""
    if raw is None or not isinstance(raw, Mapping) or not raw:
        return [], [FieldIssue(FIELD, f"is empty, got {raw!r}", raw,
                               "give at least one 'section.key: {distribution: [...]}' entry, or leave "
                               "search_space out to use the family's default space")]
    dims: list[Dimension] = []
    issues: list[FieldIssue] = []
    for key, value in raw.items():
        key = str(key)
        section, dot, rest = key.partition(".")
        if not dot or not rest or section not in SECTIONS:
            from trainyard.errors import did_you_mean

            issues.append(FieldIssue(f"{FIELD}.{key}",
                                     f"keys must be 'section.key' with section one of {', '.join(SECTIONS)};"
                                     f"{did_you_mean(section, SECTIONS)}".rstrip(";"),
                                     key, "e.g. training.lr or hyperparameters.channels"))
            continue
        dim, problems = _parse_one(key, value)
        issues.extend(problems)
        if dim is not None:
            dims.append(dim)
    return dims, issues


def grid_size(dims: list[Dimension]) -> int:
    """Points in the grid part of a space (1 when it has no grid dimension)."""
    size = 1
    for dim in dims:
        if dim.kind == "grid":
            size *= len(dim.values)
    return size


def full_grid_size(dims: list[Dimension]) -> int:
    """Points when every discrete dimension (grid and choice) is enumerated."""
    size = 1
    for dim in dims:
        size *= len(dim.values)
    return size


def candidate_values(dim: Dimension) -> list[Any]:
    """Values worth validating against the job spec: every listed value, or the bounds."""
    if dim.discrete:
        return list(dim.values)
    if dim.kind == "randint":
        return [int(dim.low), int(dim.high) - 1]
    return [dim.low, dim.high]


def to_tune(dims: list[Dimension], *, algorithm: str) -> dict:
    """Nested Ray Tune param_space. `grid` algorithm enumerates choices too."""
    from ray import tune

    space: dict = {}
    for dim in dims:
        if dim.kind == "grid" or (algorithm == "grid" and dim.kind == "choice"):
            domain = tune.grid_search(list(dim.values))
        elif dim.kind == "choice":
            domain = tune.choice(list(dim.values))
        elif dim.kind == "uniform":
            domain = tune.uniform(dim.low, dim.high)
        elif dim.kind == "loguniform":
            domain = tune.loguniform(dim.low, dim.high)
        elif dim.kind == "randint":
            domain = tune.randint(int(dim.low), int(dim.high))
        elif dim.kind == "quniform":
            domain = tune.quniform(dim.low, dim.high, dim.q)
        else:  # pragma: no cover - parse_space rejects it
            raise AssertionError(dim.kind)
        _set(space, dim.path, domain)
    return space


def _set(target: dict, path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def nest(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        _set(out, tuple(key.split(".")), value)
    return out


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _clean(value: Any) -> Any:
    """numpy scalars (from Tune's samplers) -> plain Python numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


# The integer fields of the job spec that a search space may set (a unit test keeps this in
# step with trainyard.specs.models).
INTEGER_FIELDS = frozenset({
    "workers", "epochs", "max_steps", "batch_size", "seed", "warmup_steps", "eval_every_steps", "log_every_steps",
    "zero_stage", "gradient_accumulation_steps", "every_steps", "keep", "max_failures", "priority", "max_runtime_s",
})


def apply_params(job: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    """The job mapping with a trial's values set at their dotted keys (nested or flat params)."""
    out = copy.deepcopy(dict(job))
    flat = flatten(params) if any(isinstance(v, Mapping) for v in params.values()) else dict(params)
    for key, value in flat.items():
        value = _clean(value)
        if key.rsplit(".", 1)[-1] in INTEGER_FIELDS and isinstance(value, float) and value.is_integer():
            value = int(value)  # quniform yields floats; these fields are (strict) integers
        _set(out, tuple(key.split(".")), value)
    return out

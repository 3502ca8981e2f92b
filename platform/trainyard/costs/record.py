"""One record of what a job (or a sweep) cost: time, resources held, money, MFU, goodput, losses.

Pure: data in, a record out. The controller knows when a job was submitted, when each of its
allocations started and ended and why (restart, resize, preemption...); the runner knows, per
allocation, how many steps ran, for how long, how many of them a restart threw away, and the
model FLOPs of one step (trainyard.costs.flops). `job_cost` joins both with a price per node type
(trainyard.costs.prices.node_prices) and the accelerator's peak (trainyard.costs.peaks).

Definitions (every duration in seconds of wall-clock time, every "device" a GPU, or a CPU core
for a job without GPUs):
- wall = finished - submitted; queued = first allocation start - submitted; running = finished -
  first allocation start; held = the sum of allocation lengths (gaps between them are not held).
- GPU-hours (CPU-hours) held = sum over allocations of workers x GPUs (CPUs) per worker x hours.
- busy fraction = device-seconds inside steps / device-seconds held.
- goodput = device-seconds inside steps whose work was kept / device-seconds held.
- MFU = model FLOPs computed / (peak FLOP/s per device x device-seconds inside steps): the
  hardware efficiency while stepping; idle and lost time show in busy fraction and goodput.
- money = sum over allocations of hours x workers x the worker's share of its node x the node's
  hourly price. The share is the larger of its GPU and CPU fractions: a job is charged for what
  it holds of a node, not for the whole node; a node's unheld remainder is nobody's cost here.
- time lost to a restart, resize or preemption = the step time that ended allocation threw away
  (after its last checkpoint) + the gap until the next allocation + that allocation's startup
  (from its start to its first step: restoring the checkpoint, compiling...).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

from trainyard.costs.peaks import PEAKS, peak_flops, resolve_accelerator
from trainyard.costs.prices import NodePrice
from trainyard.errors import FieldIssue, SpecError

__all__ = ["Allocation", "JobCost", "job_cost", "sweep_cost", "END_REASONS", "LOSS_REASONS",
           "MAX_ALLOCATIONS", "MAX_TRIALS"]

END_REASONS = ("finished", "failed", "cancelled", "running", "restart", "resize", "preemption")
LOSS_REASONS = ("restart", "resize", "preemption")
MAX_ALLOCATIONS = 10_000
MAX_TRIALS = 100_000
# Step times come from the workers' clocks, allocation times from the controller's: a step total
# over its allocation by this much is clock skew and is clipped (with a warning); more is an error.
_SKEW_SECONDS, _SKEW_FRACTION = 5.0, 0.05


@dataclass(frozen=True)
class Allocation:
    """One span of time in which the job held `workers` workers of one node type."""

    start: float  # epoch seconds (a timezone-aware datetime is accepted by job_cost)
    end: float
    workers: int
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    node_type: str | None = None
    ended_by: str = "finished"
    steps: int = 0  # optimizer steps run in this allocation
    step_seconds: float = 0.0  # wall time inside those steps (rank 0)
    lost_steps: int = 0  # of those, thrown away by the restart that ended it
    lost_step_seconds: float = 0.0
    startup_seconds: float = 0.0  # from start to the first step
    flops_per_step: float | None = None  # model FLOPs of one step, all workers together


_ALLOCATION_FIELDS = tuple(f.name for f in fields(Allocation))


@dataclass(frozen=True)
class JobCost:
    wall_seconds: float
    queued_seconds: float
    running_seconds: float
    held_seconds: float
    cpu_hours: float
    gpu_hours: float
    busy_fraction: float | None
    goodput: float | None
    mfu: float | None
    cost: float | None
    currency: str | None
    prices_as_of: str | None
    markets: tuple[str, ...]
    lost_seconds: dict[str, float]
    restarts: int
    resizes: int
    preemptions: int
    allocations: int
    accelerator_type: str | None
    dtype: str
    mfu_is_estimate: bool
    # the sums the ratios come from, so that sweeps can add trials exactly
    model_flops: float
    peak_flop_capacity: float  # peak FLOP/s x device-seconds inside steps of allocations with a FLOP count
    held_device_seconds: float
    busy_device_seconds: float
    useful_device_seconds: float
    submitted_at: float
    finished_at: float
    trials: int = 1
    warnings: tuple[str, ...] = field(default=())

    @property
    def lost_total_seconds(self) -> float:
        return sum(self.lost_seconds.values())

    def to_dict(self) -> dict[str, Any]:
        """The record as the API shows it: rounded (hours 1e-4, money to the cent, ratios 1e-4)."""
        r4 = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {
            "wall_seconds": round(self.wall_seconds, 3),
            "queued_seconds": round(self.queued_seconds, 3),
            "running_seconds": round(self.running_seconds, 3),
            "held_seconds": round(self.held_seconds, 3),
            "cpu_hours": r4(self.cpu_hours),
            "gpu_hours": r4(self.gpu_hours),
            "busy_fraction": r4(self.busy_fraction),
            "goodput": r4(self.goodput),
            "mfu": r4(self.mfu),
            "mfu_is_estimate": self.mfu_is_estimate,
            "model_flops": self.model_flops,
            "cost": None if self.cost is None else round(self.cost, 2),
            "currency": self.currency,
            "prices_as_of": self.prices_as_of,
            "markets": list(self.markets),
            "lost_seconds": {k: round(v, 3) for k, v in self.lost_seconds.items()},
            "lost_total_seconds": round(self.lost_total_seconds, 3),
            "restarts": self.restarts,
            "resizes": self.resizes,
            "preemptions": self.preemptions,
            "allocations": self.allocations,
            "trials": self.trials,
            "accelerator_type": self.accelerator_type,
            "dtype": self.dtype,
            "warnings": list(self.warnings),
        }

    def mlflow_params(self) -> dict[str, str]:
        """What does not change as the job runs: MLflow params (strings)."""
        return {
            "cost.accelerator_type": str(self.accelerator_type),
            "cost.dtype": self.dtype,
            "cost.currency": str(self.currency),
            "cost.prices_as_of": str(self.prices_as_of),
            "cost.markets": ",".join(self.markets) or "none",
        }

    def mlflow_metrics(self) -> dict[str, float]:
        """Numbers, flat, for mlflow.log_metrics; a ratio that could not be computed is left out."""
        out = {
            "cost.wall_seconds": self.wall_seconds,
            "cost.queued_seconds": self.queued_seconds,
            "cost.running_seconds": self.running_seconds,
            "cost.held_seconds": self.held_seconds,
            "cost.cpu_hours": self.cpu_hours,
            "cost.gpu_hours": self.gpu_hours,
            "cost.lost_total_seconds": self.lost_total_seconds,
            "cost.restarts": float(self.restarts),
            "cost.resizes": float(self.resizes),
            "cost.preemptions": float(self.preemptions),
        }
        out.update({f"cost.lost_{k}_seconds": v for k, v in self.lost_seconds.items()})
        for name in ("busy_fraction", "goodput", "mfu", "cost"):
            value = getattr(self, name)
            if value is not None:
                out[f"cost.{name if name != 'cost' else 'money'}"] = float(value)
        return out


# -- validation ----------------------------------------------------------------------------------

def _time(value: Any, where: str, issues: list[FieldIssue]) -> float | None:
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            issues.append(FieldIssue(where, "a datetime must carry its timezone", value.isoformat(),
                                     "use datetime.now(timezone.utc) or epoch seconds"))
            return None
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        issues.append(FieldIssue(where, "must be epoch seconds (a finite number >= 0) or an aware datetime", value))
        return None
    return float(value)


def _number(value: Any, where: str, issues: list[FieldIssue], *, integer: bool = False,
            positive: bool = False, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (not integer and not math.isfinite(value)):
        issues.append(FieldIssue(where, f"must be {'an integer' if integer else 'a finite number'}", value))
        return None
    if value < 0 or (positive and value == 0):
        issues.append(FieldIssue(where, f"must be {'> 0' if positive else '>= 0'}", value))
        return None
    return value if integer else float(value)


def _allocation(raw: Any, where: str, issues: list[FieldIssue]) -> Allocation | None:
    data = raw.__dict__ if isinstance(raw, Allocation) else raw
    if not isinstance(data, Mapping):
        issues.append(FieldIssue(where, "must be a mapping with start, end, workers...", type(raw).__name__))
        return None
    unknown = sorted(set(map(str, data)) - set(_ALLOCATION_FIELDS))
    if unknown:
        issues.append(FieldIssue(f"{where}.{unknown[0]}", "unknown field", data.get(unknown[0]),
                                 f"known: {', '.join(_ALLOCATION_FIELDS)}"))
        return None
    for required in ("start", "end", "workers"):
        if required not in data:
            issues.append(FieldIssue(f"{where}.{required}", "is required"))
    if any(r not in data for r in ("start", "end", "workers")):
        return None
    before = len(issues)
    values = {
        "start": _time(data["start"], f"{where}.start", issues),
        "end": _time(data["end"], f"{where}.end", issues),
        "workers": _number(data["workers"], f"{where}.workers", issues, integer=True, positive=True),
        "cpus_per_worker": _number(data.get("cpus_per_worker", 1.0), f"{where}.cpus_per_worker", issues),
        "gpus_per_worker": _number(data.get("gpus_per_worker", 0.0), f"{where}.gpus_per_worker", issues),
        "steps": _number(data.get("steps", 0), f"{where}.steps", issues, integer=True),
        "step_seconds": _number(data.get("step_seconds", 0.0), f"{where}.step_seconds", issues),
        "lost_steps": _number(data.get("lost_steps", 0), f"{where}.lost_steps", issues, integer=True),
        "lost_step_seconds": _number(data.get("lost_step_seconds", 0.0), f"{where}.lost_step_seconds", issues),
        "startup_seconds": _number(data.get("startup_seconds", 0.0), f"{where}.startup_seconds", issues),
        "flops_per_step": _number(data.get("flops_per_step"), f"{where}.flops_per_step", issues,
                                  positive=True, optional=True),
    }
    node_type = data.get("node_type")
    if node_type is not None and (not isinstance(node_type, str) or not node_type or len(node_type) > 200):
        issues.append(FieldIssue(f"{where}.node_type", "must be a node type name or null", node_type))
    ended_by = data.get("ended_by", "finished")
    if ended_by not in END_REASONS:
        issues.append(FieldIssue(f"{where}.ended_by", f"must be one of {', '.join(END_REASONS)}", ended_by))
    if len(issues) > before:
        return None
    alloc = Allocation(node_type=node_type, ended_by=ended_by, **values)
    held = alloc.end - alloc.start
    if held < 0:
        issues.append(FieldIssue(f"{where}.end", f"ends before it starts (start {alloc.start})", alloc.end))
    if alloc.lost_steps > alloc.steps:
        issues.append(FieldIssue(f"{where}.lost_steps", f"exceeds steps ({alloc.steps})", alloc.lost_steps))
    if alloc.lost_step_seconds > alloc.step_seconds:
        issues.append(FieldIssue(f"{where}.lost_step_seconds",
                                 f"exceeds step_seconds ({alloc.step_seconds})", alloc.lost_step_seconds))
    if alloc.steps == 0 and alloc.step_seconds > 0:
        issues.append(FieldIssue(f"{where}.step_seconds", "is > 0 with no steps", alloc.step_seconds))
    if alloc.cpus_per_worker == 0 and alloc.gpus_per_worker == 0:
        issues.append(FieldIssue(f"{where}.cpus_per_worker", "a worker holds no CPU and no GPU", 0,
                                 "record what each worker asked Ray for"))
    limit = held * (1 + _SKEW_FRACTION) + _SKEW_SECONDS
    if held >= 0 and alloc.step_seconds > limit:
        issues.append(FieldIssue(f"{where}.step_seconds", f"is longer than the allocation held ({held:.3f} s)",
                                 alloc.step_seconds, "step and allocation times must come from the same run"))
    elif held >= 0 and alloc.step_seconds + alloc.startup_seconds > limit:
        issues.append(FieldIssue(f"{where}.startup_seconds", f"startup plus step time exceed the allocation "
                                 f"held ({held:.3f} s)", alloc.startup_seconds))
    return alloc


# -- the record ----------------------------------------------------------------------------------

def job_cost(allocations: Sequence[Mapping[str, Any] | Allocation], *, submitted_at: Any, finished_at: Any,
             prices: Mapping[str, NodePrice] | None = None, accelerator_type: str | None = None,
             dtype: str = "bf16") -> JobCost:
    """The cost record of one job from its allocations (chronological, not overlapping).

    `prices`: node type -> NodePrice (trainyard.costs.prices.node_prices); None or empty means no
    money figure (a local cluster). `accelerator_type`: Ray's spelling; by default the node
    type's, and the CPU estimate for a job without GPUs. Raises SpecError naming the field for
    input that is wrong; data that is merely inconsistent (an MFU above 1) leaves that figure out
    and says why in `warnings`.
    """
    issues: list[FieldIssue] = []
    warnings: list[str] = []
    if isinstance(allocations, (str, bytes, Mapping)) or not isinstance(allocations, Sequence):
        raise SpecError("must be a list of allocations", field="allocations", value=type(allocations).__name__)
    if len(allocations) > MAX_ALLOCATIONS:
        raise SpecError(f"at most {MAX_ALLOCATIONS} allocations per job", field="allocations",
                        value=len(allocations), fix="merge consecutive allocations of the same size")
    if prices is not None and (not isinstance(prices, Mapping)
                               or not all(isinstance(p, NodePrice) for p in prices.values())):
        raise SpecError("must map node type names to NodePrice (trainyard.costs.prices.node_prices)",
                        field="prices", value=type(prices).__name__)
    submitted = _time(submitted_at, "submitted_at", issues)
    finished = _time(finished_at, "finished_at", issues)
    allocs = [_allocation(a, f"allocations[{i}]", issues) for i, a in enumerate(allocations)]
    if issues:
        raise SpecError(issues, source="cost")
    assert submitted is not None and finished is not None
    if finished < submitted:
        issues.append(FieldIssue("finished_at", f"is before submitted_at ({submitted})", finished))
    for i, a in enumerate(allocs):
        assert a is not None
        if a.start < submitted:
            issues.append(FieldIssue(f"allocations[{i}].start", f"is before submitted_at ({submitted})", a.start))
        if a.end > finished:
            issues.append(FieldIssue(f"allocations[{i}].end", f"is after finished_at ({finished})", a.end))
        if i and a.start < allocs[i - 1].end:  # type: ignore[union-attr]
            issues.append(FieldIssue(f"allocations[{i}].start", f"overlaps allocations[{i - 1}] "
                                     f"(which ends at {allocs[i - 1].end})", a.start,  # type: ignore[union-attr]
                                     "list allocations in order, one per span of time"))
        if a.ended_by == "running" and i != len(allocs) - 1:
            issues.append(FieldIssue(f"allocations[{i}].ended_by", "only the last allocation can be running",
                                     a.ended_by))
        if prices and a.node_type is not None and a.node_type not in prices:
            issues.append(FieldIssue(f"allocations[{i}].node_type", "has no price in this cluster", a.node_type,
                                     f"known: {', '.join(sorted(prices))}"))
    if dtype not in ("bf16", "fp16", "fp32"):
        issues.append(FieldIssue("dtype", "must be one of bf16, fp16, fp32", dtype))
    if issues:
        raise SpecError(issues, source="cost")
    allocs_ok: list[Allocation] = [a for a in allocs if a is not None]

    uses_gpus = any(a.gpus_per_worker > 0 for a in allocs_ok)
    if accelerator_type is None and uses_gpus and prices:
        found = {prices[a.node_type].accelerator_type for a in allocs_ok if a.node_type in prices}
        found.discard(None)
        if len(found) == 1:
            accelerator_type = found.pop()
    peak: float | None = None
    estimate = False
    if uses_gpus and accelerator_type is None:
        warnings.append("mfu: the accelerator type is not known, so its peak is not: pass accelerator_type")
    else:
        peak = peak_flops(accelerator_type if uses_gpus else None, dtype=dtype)  # SpecError names the field
        estimate = PEAKS[resolve_accelerator(accelerator_type if uses_gpus else None)].estimate

    held = cpu_s = gpu_s = held_dev = busy_dev = useful_dev = 0.0
    flops = capacity = 0.0
    money = 0.0
    markets: set[str] = set()
    as_of: set[str] = set()
    currencies: set[str] = set()
    priced = bool(prices)
    lost = {reason: 0.0 for reason in LOSS_REASONS}
    counts = {reason: 0 for reason in LOSS_REASONS}
    missing_flops = 0
    for i, a in enumerate(allocs_ok):
        span = a.end - a.start
        step_s = min(a.step_seconds, span)
        if a.step_seconds > span:
            warnings.append(f"allocations[{i}].step_seconds: {a.step_seconds:.3f} s is over the "
                            f"{span:.3f} s held (clock skew); counted as {span:.3f} s")
        useful_s = max(0.0, step_s - a.lost_step_seconds)
        devices = a.workers * (a.gpus_per_worker if uses_gpus else a.cpus_per_worker)
        held += span
        cpu_s += a.workers * a.cpus_per_worker * span
        gpu_s += a.workers * a.gpus_per_worker * span
        held_dev += devices * span
        busy_dev += devices * step_s
        useful_dev += devices * useful_s
        if a.steps and a.flops_per_step is None:
            missing_flops += 1
        elif a.steps and peak is not None and step_s > 0:
            flops += a.flops_per_step * a.steps  # type: ignore[operator]
            capacity += peak * devices * step_s
        if priced:
            if a.node_type is None:
                priced = False
                warnings.append(f"cost: allocations[{i}] names no node type, so no price applies")
            else:
                node = prices[a.node_type]  # type: ignore[index]
                share = max(a.gpus_per_worker / node.gpus if node.gpus else 0.0,
                            a.cpus_per_worker / node.cpus if node.cpus else 0.0)
                if share > 1:
                    raise SpecError(f"a worker asks for more than one {a.node_type} node holds "
                                    f"({node.gpus:g} GPUs, {node.cpus:g} CPUs)",
                                    field=f"allocations[{i}].node_type", value=a.node_type)
                money += span / 3600 * a.workers * share * node.per_hour
                markets.add(node.market)
                as_of.add(node.as_of)
                currencies.add(node.currency)
        if a.ended_by in LOSS_REASONS:
            counts[a.ended_by] += 1
            loss = a.lost_step_seconds
            if i + 1 < len(allocs_ok):
                nxt = allocs_ok[i + 1]
                loss += (nxt.start - a.end) + nxt.startup_seconds
            lost[a.ended_by] += loss
    if missing_flops:
        warnings.append(f"mfu: {missing_flops} allocation(s) with steps have no flops_per_step; "
                        "MFU covers the others only" if flops else "mfu: no flops_per_step was recorded")
    mfu: float | None = None
    if capacity > 0:
        mfu = flops / capacity
        if mfu > 1:
            warnings.append(f"mfu: refused, {mfu:.3g} is above 1: the FLOP count, the step times or "
                            f"the accelerator type ({accelerator_type or 'CPU'}) is wrong")
            mfu = None
    if len(currencies) > 1:
        raise SpecError(f"prices in several currencies ({', '.join(sorted(currencies))}) cannot be added",
                        field="prices", value=sorted(currencies))
    first_start = allocs_ok[0].start if allocs_ok else finished
    return JobCost(
        wall_seconds=finished - submitted,
        queued_seconds=first_start - submitted,
        running_seconds=finished - first_start,
        held_seconds=held,
        cpu_hours=cpu_s / 3600,
        gpu_hours=gpu_s / 3600,
        busy_fraction=busy_dev / held_dev if held_dev else None,
        goodput=useful_dev / held_dev if held_dev else None,
        mfu=mfu,
        cost=money if priced else None,
        currency=next(iter(currencies)) if priced and currencies else None,
        prices_as_of=min(as_of) if priced and as_of else None,
        markets=tuple(sorted(markets)) if priced else (),
        lost_seconds=lost,
        restarts=counts["restart"],
        resizes=counts["resize"],
        preemptions=counts["preemption"],
        allocations=len(allocs_ok),
        accelerator_type=accelerator_type if uses_gpus else None,
        dtype=dtype,
        mfu_is_estimate=estimate,
        model_flops=flops,
        peak_flop_capacity=capacity,
        held_device_seconds=held_dev,
        busy_device_seconds=busy_dev,
        useful_device_seconds=useful_dev,
        submitted_at=submitted,
        finished_at=finished,
        warnings=_capped(warnings),
    )


def _capped(warnings: list[str], limit: int = 20) -> tuple[str, ...]:
    # one clipped clock per allocation must not grow a record without bound
    if len(warnings) <= limit:
        return tuple(warnings)
    return (*warnings[:limit], f"... and {len(warnings) - limit} more warnings")


def sweep_cost(trials: Iterable[JobCost]) -> JobCost:
    """A sweep's record: the sum of its trials' records.

    Hours, money, held and lost time, counts and the queued/running seconds add up over trials
    (trial-seconds); wall time is the span from the first submission to the last finish; the
    ratios are recomputed from the summed device-seconds and FLOPs, so a long trial weighs more.
    Money is left out (None) if any trial has none, with a warning naming how many.
    """
    items = list(trials) if not isinstance(trials, (str, bytes, Mapping)) else None
    if items is None:
        raise SpecError("must be a list of job cost records", field="trials", value=type(trials).__name__)
    if len(items) > MAX_TRIALS:
        raise SpecError(f"at most {MAX_TRIALS} trials", field="trials", value=len(items))
    for i, t in enumerate(items):
        if not isinstance(t, JobCost):
            raise SpecError("must be a JobCost (from job_cost)", field=f"trials[{i}]", value=type(t).__name__)
    if not items:
        raise SpecError("a sweep with no trials has no cost record", field="trials", value=[])
    warnings = [f"trials[{i}] {w}" for i, t in enumerate(items) for w in t.warnings]
    unpriced = sum(1 for t in items if t.cost is None)
    if unpriced:
        warnings.append(f"cost: {unpriced} of {len(items)} trials have no money figure; the sweep has none")
    currencies = {t.currency for t in items if t.currency}
    if len(currencies) > 1:
        raise SpecError(f"trials priced in several currencies ({', '.join(sorted(currencies))})",
                        field="trials", value=sorted(currencies))
    accelerators = {t.accelerator_type for t in items}
    dtypes = {t.dtype for t in items}
    capacity = sum(t.peak_flop_capacity for t in items)
    flops = sum(t.model_flops for t in items)
    mfu = flops / capacity if capacity else None
    if mfu is not None and (mfu > 1 or any(t.peak_flop_capacity and t.mfu is None for t in items)):
        warnings.append("mfu: refused, a trial's MFU was refused as inconsistent")
        mfu = None
    held_dev = sum(t.held_device_seconds for t in items)
    busy_dev = sum(t.busy_device_seconds for t in items)
    useful_dev = sum(t.useful_device_seconds for t in items)
    submitted = min(t.submitted_at for t in items)
    finished = max(t.finished_at for t in items)
    as_of = [t.prices_as_of for t in items if t.prices_as_of]
    return JobCost(
        wall_seconds=finished - submitted,
        queued_seconds=sum(t.queued_seconds for t in items),
        running_seconds=sum(t.running_seconds for t in items),
        held_seconds=sum(t.held_seconds for t in items),
        cpu_hours=sum(t.cpu_hours for t in items),
        gpu_hours=sum(t.gpu_hours for t in items),
        busy_fraction=busy_dev / held_dev if held_dev else None,
        goodput=useful_dev / held_dev if held_dev else None,
        mfu=mfu,
        cost=None if unpriced else sum(t.cost for t in items),  # type: ignore[misc]
        currency=None if unpriced else (next(iter(currencies)) if currencies else None),
        prices_as_of=min(as_of) if as_of and not unpriced else None,
        markets=tuple(sorted({m for t in items for m in t.markets})),
        lost_seconds={r: sum(t.lost_seconds.get(r, 0.0) for t in items) for r in LOSS_REASONS},
        restarts=sum(t.restarts for t in items),
        resizes=sum(t.resizes for t in items),
        preemptions=sum(t.preemptions for t in items),
        allocations=sum(t.allocations for t in items),
        accelerator_type=accelerators.pop() if len(accelerators) == 1 else "mixed",
        dtype=dtypes.pop() if len(dtypes) == 1 else "mixed",
        mfu_is_estimate=any(t.mfu_is_estimate for t in items),
        model_flops=flops,
        peak_flop_capacity=capacity,
        held_device_seconds=held_dev,
        busy_device_seconds=busy_dev,
        useful_device_seconds=useful_dev,
        submitted_at=submitted,
        finished_at=finished,
        trials=sum(t.trials for t in items),
        warnings=_capped(warnings),
    )

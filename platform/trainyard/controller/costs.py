"""A job's cost record from the store: the ledger's attempts plus what the workers measured. Pure.

Each attempt in the usage ledger (store.quotas) is one allocation of trainyard.costs.job_cost:
the gang the spec asks for (workers x cpus/gpus per worker), from the attempt's start to its
end. Attempts before the last ended in a requeue (the cluster lost the job, a stall), which
job_cost counts as restarts. The workers' figures (steps, seconds inside steps, FLOPs of a
step, device and dtype: trainyard.runner.usage) come with the last attempt's TRAINYARD_RESULT,
so they describe the last allocation only; earlier ones count as held, not busy.

Money needs a price per node type: a cluster registered from a launcher config whose
provider is priced carries `max_resources.prices` (node type -> NodePrice fields). A job's
allocation is priced at the node type its workers fit, when exactly one worker node type is
priced; otherwise the record has no money figure and says so in `warnings`.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any, Iterable, Mapping

from trainyard.costs import JobCost, NodePrice, job_cost, resolve_accelerator, sweep_cost
from trainyard.errors import SpecError

__all__ = ["allocations_for", "cost_record", "prices_of", "sweep_record", "record_for", "segment_workers"]

log = logging.getLogger("trainyard.controller")

_USAGE_NUMBERS = ("steps", "step_seconds", "flops_per_step")
MAX_SEGMENTS = 200  # trainyard.runner.segments keeps no more


def _ts(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _runner_usage(result: Any) -> dict[str, Any] | None:
    usage = result.get("usage") if isinstance(result, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    for key in _USAGE_NUMBERS:
        value = usage.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            return None  # a malformed line from a user's runner: held time only, no guessing
    return dict(usage)


def _known_accelerator(name: Any) -> str | None:
    """The runner's accelerator name when the peak table knows it; anything else (a user's runner
    may print what it likes) is no accelerator: the record then has no MFU, not a wrong one."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    try:
        return resolve_accelerator(name)
    except SpecError:
        return None


def prices_of(max_resources: Any) -> dict[str, NodePrice]:
    """The cluster's node prices (registered with its launcher config), or {} when it has none."""
    raw = (max_resources or {}).get("prices") if isinstance(max_resources, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, NodePrice] = {}
    for name, entry in raw.items():
        try:
            out[str(name)] = NodePrice(**{k: entry[k] for k in NodePrice.__dataclass_fields__})
        except (KeyError, TypeError):
            log.warning("cluster prices: node type %r is malformed, ignored", name)
    return out


def _node_type(prices: Mapping[str, NodePrice], *, cpus: float, gpus: float) -> str | None:
    fits = [p.node_type for p in prices.values() if p.cpus >= cpus and p.gpus >= gpus and (gpus > 0) == (p.gpus > 0)]
    return fits[0] if len(fits) == 1 else None


def allocations_for(spec: Mapping[str, Any], attempts: Iterable[tuple[datetime | float, datetime | float]], *,
                    result: Any = None, running_since: datetime | float | None = None, now: float | None = None,
                    prices: Mapping[str, NodePrice] | None = None) -> list[dict[str, Any]]:
    """One allocation per attempt (start, end), in order, plus the running one (start, now)."""
    res = spec.get("resources") or {}
    workers = _admitted_workers(res)
    cpus = float(res.get("cpus_per_worker", 1.0) or 0.0)
    gpus = float(res.get("gpus_per_worker", 0.0) or 0.0)
    node_type = _node_type(prices, cpus=cpus, gpus=gpus) if prices else None
    spans = [(_ts(a), _ts(b)) for a, b in attempts]
    if running_since is not None and now is not None:
        spans.append((_ts(running_since), max(now, _ts(running_since))))
    out: list[dict[str, Any]] = []
    prev_end = None
    for i, (start, end) in enumerate(spans):
        if prev_end is not None and start < prev_end:
            # never overlapping, never out of order (Ray's clock against ours, or a start time an
            # older row kept): the later attempt starts where the earlier ended
            start = prev_end
        end = max(end, start)
        last = i == len(spans) - 1
        ended_by = ("running" if running_since is not None else "finished") if last else "restart"
        out.append({"start": start, "end": end, "workers": workers, "cpus_per_worker": cpus,
                    "gpus_per_worker": gpus, "node_type": node_type, "ended_by": ended_by})
        prev_end = end
    usage = _runner_usage(result)
    if out and usage is not None and running_since is None:
        out[-1:] = _split_by_segments(out[-1], usage.get("segments"))
        last = out[-1]
        held = last["end"] - last["start"]
        steps = int(usage.get("steps") or 0)
        seconds = float(usage.get("step_seconds") or 0.0) if steps else 0.0
        # the workers' clocks against the controller's: never more busy than held
        last["steps"] = steps
        last["step_seconds"] = min(seconds, held)
        if usage.get("flops_per_step"):
            last["flops_per_step"] = float(usage["flops_per_step"])
        for piece in out:  # the workers' clocks again: a piece's startup and steps fit in what it held
            if "startup_seconds" in piece:
                room = max(0.0, piece["end"] - piece["start"] - piece.get("step_seconds", 0.0))
                piece["startup_seconds"] = min(piece["startup_seconds"], room)
    return out


def _admitted_workers(res: Mapping[str, Any]) -> int:
    """The gang an allocation is known to hold without the workers' word: a fixed job's
    workers; an elastic job's ({min, max}) min, what the scheduler admits it at."""
    raw = res.get("workers", 1)
    if isinstance(raw, Mapping):
        raw = raw.get("min", 1)
    try:
        return max(1, int(raw or 1))
    except (TypeError, ValueError):
        return 1


def segment_workers(result: Any) -> float | None:
    """The world size a run held on average over its worker groups (the result's usage
    segments, each weighted by its span: to the next group's start, the last to its last
    report), or None when the result carries no well-formed segments. The budgets' ledger
    charges an elastic attempt at this."""
    usage = _runner_usage(result)
    segments = usage.get("segments") if usage is not None else None
    if not isinstance(segments, list) or not segments:
        return None
    rows = []
    for seg in segments[:MAX_SEGMENTS]:
        workers = seg.get("workers") if isinstance(seg, Mapping) else None
        start, last = (_number(seg.get("start_unix")), _number(seg.get("last_unix"))) if isinstance(seg, Mapping) \
            else (None, None)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1_000_000 \
                or start is None or last is None:
            return None
        rows.append((workers, start, last))
    spans = [max(0.0, (rows[i + 1][1] if i + 1 < len(rows) else last) - start)
             for i, (_, start, last) in enumerate(rows)]
    total = sum(spans)
    if total <= 0:
        return float(rows[-1][0])
    return sum(w * span for (w, _, _), span in zip(rows, spans)) / total


def _split_by_segments(alloc: dict[str, Any], segments: Any) -> list[dict[str, Any]]:
    """The last attempt's allocation cut at each (re)start of its worker group
    (trainyard.runner.segments): each piece holds that group's world size; a piece ends in a
    `resize` when the next group has another size, else in a `restart`. The cut falls at the
    old group's last report, so the time until the new group's first step (teardown, waiting
    for room, restoring the checkpoint) is the next piece's startup: time lost to the restart.
    The workers' clocks are clipped into the attempt; malformed segments leave it whole."""
    if not isinstance(segments, list) or not segments:
        return [alloc]
    if len(segments) == 1:
        # one group all along: an elastic job may have started above its min, and held that
        workers = segments[0].get("workers") if isinstance(segments[0], Mapping) else None
        ok = not isinstance(workers, bool) and isinstance(workers, int) and 1 <= workers <= 1_000_000
        return [{**alloc, "workers": workers} if ok else alloc]
    rows = []
    for seg in segments[:MAX_SEGMENTS]:
        if not isinstance(seg, Mapping):
            return [alloc]
        workers = seg.get("workers")
        nums = [_number(seg.get(k)) for k in ("start_unix", "ready_unix", "last_unix", "steps", "step_seconds",
                                              "ckpt_steps", "ckpt_step_seconds")]
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1_000_000 or \
                any(n is None or n < 0 for n in nums):
            return [alloc]
        rows.append((workers, *nums))
    start, end = alloc["start"], alloc["end"]
    clip = lambda t: min(max(t, start), end)  # noqa: E731
    pieces: list[dict[str, Any]] = []
    cut = start
    for i, (workers, _started, ready, last, steps, step_s, ckpt_steps, ckpt_s) in enumerate(rows):
        final = i == len(rows) - 1
        piece_end = end if final else max(cut, clip(last))
        piece = {**alloc, "start": cut, "end": piece_end, "workers": workers,
                 "startup_seconds": 0.0 if i == 0 else max(0.0, min(clip(ready), piece_end) - cut)}
        if not final:
            nxt = rows[i + 1][0]
            steps_i = int(steps)
            held = piece_end - cut
            seconds = min(step_s, held)
            piece.update(ended_by="resize" if nxt != workers else "restart", steps=steps_i, step_seconds=seconds,
                         lost_steps=max(0, steps_i - min(int(ckpt_steps), steps_i)),
                         lost_step_seconds=min(seconds, max(0.0, step_s - ckpt_s)))
        pieces.append(piece)
        cut = piece_end
    return pieces


def cost_record(spec: Mapping[str, Any], *, submitted_at: datetime | float, finished_at: datetime | float,
                attempts: Iterable[tuple[datetime | float, datetime | float]], result: Any = None,
                running_since: datetime | float | None = None,
                prices: Mapping[str, NodePrice] | None = None) -> JobCost | None:
    """The job's JobCost, or None when it cannot be made (logged: a cost never fails a job)."""
    finished = _ts(finished_at)
    allocs = allocations_for(spec, attempts, result=result, running_since=running_since, now=finished,
                             prices=prices)
    usage = _runner_usage(result) or {}
    dtype = usage.get("dtype") if usage.get("dtype") in ("bf16", "fp16", "fp32") else None
    if dtype is None:
        precision = (spec.get("deepspeed") or {}).get("precision")
        dtype = precision if precision in ("bf16", "fp16", "fp32") else (
            "bf16" if (spec.get("resources") or {}).get("gpus_per_worker") else "fp32")
    accelerator = _known_accelerator(usage.get("accelerator_type"))
    submitted = min(_ts(submitted_at), *(a["start"] for a in allocs)) if allocs else _ts(submitted_at)
    finished = max(finished, submitted, *(a["end"] for a in allocs))
    try:
        return job_cost(allocs, submitted_at=submitted, finished_at=finished,
                        prices=prices or None, accelerator_type=accelerator, dtype=dtype)
    except SpecError as exc:
        log.warning("no cost record: %s", exc)
        return None


MAX_TRIALS_USAGE = 10_000


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def sweep_record(spec: Mapping[str, Any], *, started_at: datetime | float, ended_at: datetime | float,
                 trials_usage: Any, prices: Mapping[str, NodePrice] | None = None) -> JobCost | None:
    """A sweep's record: the sum of its trials' (trainyard.costs.sweep_cost), each trial a job
    that waited in the sweep from its start and held the spec's gang over its span (Tune's
    clock, clipped to the sweep's own start and end). None when no trial reported a span."""
    if not isinstance(trials_usage, list) or not trials_usage:
        return None
    start, end = _ts(started_at), _ts(ended_at)
    records = []
    for item in trials_usage[:MAX_TRIALS_USAGE]:
        if not isinstance(item, Mapping):
            continue
        a, b = _number(item.get("start")), _number(item.get("end"))
        if a is None or b is None:
            continue
        a, b = min(max(a, start), end), min(max(b, start), end)
        if b < a:
            continue
        usage = {k: item[k] for k in ("steps", "step_seconds", "flops_per_step") if _number(item.get(k)) is not None}
        usage["steps"] = int(usage.get("steps", 0))
        record = cost_record(spec, submitted_at=start, finished_at=b, attempts=[(a, b)], result={"usage": usage},
                             prices=prices)
        if record is not None:
            records.append(record)
    if not records:
        return None
    try:
        return sweep_cost(records)
    except SpecError as exc:
        log.warning("no sweep cost record: %s", exc)
        return None


def record_for(job: Any, *, attempts: list, finished_at: datetime | float, prices: Mapping[str, NodePrice],
               running: bool = False) -> JobCost | None:
    """The record the API shows for a job row: a sweep's is the sum of its trials (once it ended
    with them on record), any other's its own allocations."""
    spec = job.spec or {}
    result = job.result if isinstance(job.result, Mapping) else {}
    if job.kind == "sweep" and not running and job.started_at is not None and result.get("trials_usage"):
        record = sweep_record(spec, started_at=job.started_at, ended_at=finished_at,
                              trials_usage=result.get("trials_usage"), prices=prices)
        if record is not None:
            return record
    return cost_record(spec, submitted_at=job.created_at, finished_at=finished_at, attempts=attempts,
                       result=None if running else result, running_since=job.started_at if running else None,
                       prices=prices)

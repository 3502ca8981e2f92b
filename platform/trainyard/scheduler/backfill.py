"""Backfill that cannot delay the job at the head of a cluster's line (EASY backfill).

When the head job H cannot start on a cluster, it gets a reservation: the earliest time
its gang fits, found by returning running jobs' resources in order of their expected ends.
A later job J may start now on that cluster only if it fits now and either
- it ends (by its declared max_runtime, or an estimate from its progress rate) before H's
  reserved start, or
- H still fits at its reserved start with J's resources held ("fits beside").
A job with no runtime estimate may only fit beside. If H's start cannot be computed (a
running job has no expected end), nothing may backfill past H.

Caveat: a running job that does not say which node holds what (`RunningJob.nodes`) frees
its resources as extra nodes. The reserved start assumes they come back together (the
earliest the head could start, so "ends before it" stays safe); "fits beside" assumes they
come back one worker per node (the least they are sure to give).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from trainyard.scheduler.model import RunningJob
from trainyard.scheduler.policy import QueuedJob, pack

__all__ = ["Reservation", "expected_end", "runtime_estimate", "reserve", "may_backfill", "commit", "grow"]


def _finite(x: float | None, *, low: float = 0.0) -> bool:
    return x is not None and low <= x < math.inf


def expected_end(job: RunningJob, *, now: float) -> float | None:
    """When a running job should end: from its progress, capped by its declared max_runtime
    (it is stopped then). None when neither is known. Nonsense values are ignored."""
    elapsed = max(0.0, now - job.started_at)
    progress = job.progress if _finite(job.progress) else None
    guess: float | None = None
    if progress is not None and progress >= 1.0:
        guess = now
    elif progress is not None and _finite(job.progress_rate) and job.progress_rate > 0:
        guess = now + (1.0 - progress) / job.progress_rate
    elif progress is not None and progress > 0 and elapsed > 0:
        guess = job.started_at + elapsed / progress
    if _finite(job.max_runtime):
        cap = job.started_at + job.max_runtime
        guess = cap if guess is None else min(guess, cap)
    return None if guess is None else max(now, guess)


def runtime_estimate(job: QueuedJob) -> float | None:
    """Seconds a queued job will run: from the progress rate it had (a resumed job), capped
    by its declared max_runtime. None when neither is known. Nonsense values are ignored."""
    guess: float | None = None
    if _finite(job.progress_rate) and job.progress_rate > 0:
        done = min(1.0, job.progress) if _finite(job.progress) else 0.0
        guess = (1.0 - done) / job.progress_rate
    if _finite(job.max_runtime):
        guess = job.max_runtime if guess is None else min(guess, job.max_runtime)
    return guess


@dataclass
class Reservation:
    """The head job's claim on a cluster. `start` None: cannot be computed (no backfill)."""

    job: QueuedJob
    cluster: str
    start: float | None
    nodes_at_start: list[dict[str, float]] | None = None  # free per node at `start`
    backfilled: list[str] = field(default_factory=list)


def grow(nodes: list[dict[str, float]], freed: Sequence[Mapping[str, float]], width: int) -> None:
    """Add freed resources: per node index when aligned with the cluster, else as new nodes."""
    if len(freed) == width:
        for node, extra in zip(nodes, freed):
            for key, value in extra.items():
                node[key] = node.get(key, 0.0) + value
    else:
        nodes.extend(dict(f) for f in freed)


def reserve(job: QueuedJob, cluster: str, free: Sequence[Mapping[str, float]], running: Iterable[RunningJob],
            *, now: float) -> Reservation:
    """The head job's earliest start on `cluster` (free now: `free`; running there: `running`)."""
    nodes = [dict(n) for n in free]
    ends = []
    for r in running:
        end = expected_end(r, now=now)
        if end is None:
            ends.append((float("inf"), r.id, r))
        else:
            ends.append((end, r.id, r))
    ends.sort(key=lambda e: (e[0], e[1]))
    if pack(job.per_worker, job.workers, nodes) is not None:
        return Reservation(job, cluster, now, nodes)
    # Two views of what ends free: the start comes from the hopeful one (an earlier start
    # only makes "ends before it" stricter), "fits beside" is checked on the sure one.
    width = len(free)
    sure = [dict(n) for n in free]
    for end, _, r in ends:
        if end == float("inf"):
            break
        grow(nodes, r.freed_nodes(merged=True), width)
        grow(sure, r.freed_nodes(merged=False), width)
        if pack(job.per_worker, job.workers, nodes) is not None:
            return Reservation(job, cluster, end, sure)
    return Reservation(job, cluster, None, None)


def may_backfill(job: QueuedJob, reservation: Reservation, free: Sequence[Mapping[str, float]], *, now: float,
                 left: list[dict[str, float]] | None = None,
                 ) -> tuple[list[dict[str, float]] | None, list[dict[str, float]] | None, str]:
    """Whether `job` may start now on the reservation's cluster without delaying its head job.

    Returns (nodes left after placing `job`, the head's view at its start with `job` held or
    None when `job` ends before it, "") when it may; (None, None, why not) when it may not.
    Pure: the caller commits the result with `commit` only if it places the job there.
    `left`: the job already packed onto `free`, when the caller has done it."""
    head = reservation.job
    if reservation.start is None:
        return None, None, f"behind job '{head.id}', whose start cannot be estimated yet"
    if left is None:
        left = pack(job.per_worker, job.workers, free)
    if left is None:
        return None, None, f"behind job '{head.id}'; the cluster is full"
    runtime = runtime_estimate(job)
    if runtime is not None and now + runtime <= reservation.start:
        return left, None, ""
    # Held at the head's start: take what the job uses on each node out of that view.
    at_start = [dict(n) for n in reservation.nodes_at_start or ()]
    for i, (before, after) in enumerate(zip(free, left)):
        if i >= len(at_start):
            break
        for key, value in before.items():
            at_start[i][key] = at_start[i].get(key, 0.0) - (value - after.get(key, 0.0))
    if pack(head.per_worker, head.workers, at_start) is not None:
        return left, at_start, ""
    why = "has no runtime estimate" if runtime is None else "would still run then"
    return None, None, f"behind job '{head.id}' (reserved to start at {reservation.start:.0f}); it {why}"


def commit(reservation: Reservation, job_id: str, at_start: list[dict[str, float]] | None) -> None:
    """Record a backfilled job on the reservation (and what it still holds at the head's start)."""
    reservation.backfilled.append(job_id)
    if at_start is not None:
        reservation.nodes_at_start = at_start

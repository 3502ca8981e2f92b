"""Which running jobs to preempt so that a blocked gang fits.

A running job may be preempted for a blocked job J when it has run at least `min_runtime_s`
(so jobs cannot thrash), is preemptible, and either
- it has a lower priority than J ("priority"), or
- J's project is reclaiming its guaranteed share: J asks for a resource the project is
  guaranteed, with J the project stays within its nominal quota, and the victim's project
  holds more than its own nominal of a resource J asks for ("reclaim"); a reclaim stops
  taking from a project once it would be back within its nominal.
Among those, the cheapest victims are taken: lower priority first, then the most recently
started (least work since its start to redo). A single victim that frees enough is preferred;
otherwise victims are added cheapest first until the gang fits, and any victim the gang
turns out not to need is dropped again, most expensive first.
A job already leaving (asked to stop by an earlier tick, `RunningJob.leaving`) is counted on
first, whatever its priority or age ("leaving"): it goes anyway, so waiting for it costs
nobody else their place. The controller applies only the new preemptions.
The controller asks the victims to checkpoint and requeues them (they keep their place).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from trainyard.scheduler.backfill import grow
from trainyard.scheduler.model import RunningJob, TickConfig, demand_of
from trainyard.scheduler.policy import QueuedJob, pack
from trainyard.scheduler.quotas import QuotaLedger

__all__ = ["Preemption", "PRIORITY", "RECLAIM", "LEAVING", "choose_victims"]

PRIORITY, RECLAIM, LEAVING = "priority", "reclaim", "leaving"
_EPS = 1e-9


@dataclass(frozen=True)
class Preemption:
    job_id: str  # the running job to stop (checkpoint, then requeue)
    cluster: str
    for_job: str  # the queued job it makes room for
    kind: str  # "priority" | "reclaim" | "leaving" (asked to stop already)
    reason: str


def _eligible(job: QueuedJob, victim: RunningJob, ledger: QuotaLedger | None, reclaiming: bool, now: float,
              config: TickConfig, job_keys: set[str]) -> str | None:
    if victim.leaving:
        return LEAVING
    if not victim.preemptible or now - victim.started_at < config.min_runtime_s:
        return None
    if victim.priority < job.priority:
        return PRIORITY
    if (reclaiming and ledger is not None and victim.project != job.project
            and ledger.is_borrowing(victim.project, keys=job_keys)):
        return RECLAIM
    return None


def _fits(job: QueuedJob, free: Sequence[Mapping[str, float]], victims: Iterable[RunningJob]) -> bool:
    nodes = [dict(n) for n in free]
    for v in victims:
        grow(nodes, v.freed_nodes(merged=False), len(free))  # never count on more than sure
    return pack(job.per_worker, job.workers, nodes) is not None


def choose_victims(job: QueuedJob, *, cluster: str, free: Sequence[Mapping[str, float]],
                   running: Iterable[RunningJob], now: float, config: TickConfig,
                   ledger: QuotaLedger | None = None, taken: frozenset[str] | set[str] = frozenset(),
                   ) -> list[Preemption]:
    """Victims on `cluster` (whose free nodes are `free`) that make `job` fit; [] when none do."""
    demand = demand_of(job.per_worker, job.workers)
    reclaiming = ledger is not None and ledger.within_nominal(job.project, demand)
    candidates: list[tuple[tuple, RunningJob, str]] = []
    for victim in running:
        if victim.cluster != cluster or victim.id in taken:
            continue
        kind = _eligible(job, victim, ledger, reclaiming, now, config, set(demand))
        if kind is not None:
            candidates.append(((kind != LEAVING, victim.priority, -victim.started_at, victim.id), victim, kind))
    candidates.sort(key=lambda c: c[0])
    candidates = candidates[:config.max_preemption_candidates]
    if not candidates:
        return []
    # A reclaim takes from a borrower only while it is still over its nominal.
    over: dict[str, dict[str, float]] = {}

    def still_borrowing(victim: RunningJob) -> bool:
        if ledger is None:
            return False
        quota = ledger.quotas.get(victim.project)
        if quota is None:
            return False
        used = over.setdefault(victim.project, dict(ledger.used.get(victim.project, {})))
        return any(used.get(k, 0.0) > quota.nominal.get(k, 0.0) + _EPS for k in quota.dimensions() & set(demand))

    def take(victim: RunningJob) -> None:
        used = over.setdefault(victim.project, dict(ledger.used.get(victim.project, {})) if ledger else {})
        for key, amount in victim.demand().items():
            used[key] = used.get(key, 0.0) - amount

    chosen: list[tuple[RunningJob, str]] = []
    for _, victim, kind in candidates:  # cheapest single victim first
        if _fits(job, free, [victim]):
            chosen = [(victim, kind)]
            break
    else:
        for _, victim, kind in candidates:
            if kind == RECLAIM and not still_borrowing(victim):
                continue
            chosen.append((victim, kind))
            take(victim)
            if _fits(job, free, [v for v, _ in chosen]):
                break
        else:
            return []
        for item in sorted(chosen, key=lambda c: (c[1] != LEAVING, c[0].priority, -c[0].started_at, c[0].id),
                           reverse=True):
            rest = [v for v, _ in chosen if v is not item[0]]
            if len(rest) < len(chosen) and _fits(job, free, rest):
                chosen = [c for c in chosen if c[0] is not item[0]]
    out = []
    for victim, kind in chosen:
        if kind == LEAVING:
            why = f"already stopping (preempted earlier); job '{job.id}' takes its place"
        elif kind == PRIORITY:
            why = (f"preempted for job '{job.id}' (priority {job.priority} > {victim.priority}) after "
                   f"{now - victim.started_at:.0f}s of running")
        else:
            why = (f"preempted for job '{job.id}': project '{job.project}' reclaims its guaranteed share "
                   f"from project '{victim.project}', which is borrowing")
        out.append(Preemption(victim.id, cluster, job.id, kind, why))
    return out

"""Scheduling policy. Pure: plain data in, decisions out. No Ray, no store, no clock.

One call, `schedule(queue, clusters)`, answers for every queued job: dispatch it now to
cluster X, let it wait (and why), or reject it because it could never fit anywhere.

Rules:
- Order: priority (higher first), then FIFO (earlier `seq` first).
- Gang admission: a job is admitted only if *all* its workers fit at once. Each worker is a
  bundle of resources (`Resources.per_worker()`); bundles are packed onto nodes first-fit,
  and a worker never spans two nodes.
- Placement: `resources.cluster` pins a job; otherwise the healthy cluster with the most
  free CPU (after packing) wins, ties broken by name. Admitted jobs use up capacity for the
  rest of the pass.
- No backfill past a blocked job: when a job must wait, the clusters it could use are
  closed to lower-ordered jobs in this pass. Big jobs are not starved by a stream of small
  ones. (Backfill that cannot delay the blocked job needs run-time estimates; see HOOKS.)
- Never fits: a job whose workers cannot be packed onto a cluster's *maximum* nodes
  (what the nodes report, or the autoscaler's limits in `max_nodes`) on any candidate
  cluster is rejected with a message that names the field and the fix.

HOOKS -- `schedule()` stays plain priority+FIFO; the multi-project rules are built as pure
modules next to this one, tied together by `plan.plan_tick(queue, running=, clusters=,
projects=, usage=, now=, config=) -> TickPlan` over the data types of `model.py` (not wired
into the controller yet):
- quotas: `quotas.QuotaLedger` (Kueue-style nominal / borrowing / lending limits per
  project); a job over its quota waits with code 'quota' and does not block others.
  `SchedulerHooks.admit(job, cluster) -> str | None` still lets a caller of schedule() hold
  a job back; a held job does not close the cluster to the jobs behind it.
- budgets: `budgets.budget_statuses` / `budget_reason` (GPU- and CPU-hours over a rolling
  window, from usage records).
- fair share: `fairshare.FairQueue` / `fair_order` (priority first; among equal priorities,
  weighted DRF across projects; FIFO within one). `SchedulerHooks.order(jobs) -> jobs`
  re-orders schedule()'s queue.
- preemption: `preemption.choose_victims` (priority or reclaim, never below min_runtime).
- backfill: `backfill.reserve` / `may_backfill` (EASY: cannot delay the head job).
- placement: `placement.rank_clusters` (fit, accelerator, price, locality).
- why pending: `reasons.Reason` / `Pending` (code, positions, estimated start from
  `eta.Forecast`).
- `simulate.simulate_fair_share`: a seeded, Ray-free simulation of projects sharing a cluster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import Callable, Iterable, Mapping, Sequence

from trainyard.scheduler.model import demand_of

__all__ = [
    "QueuedJob", "ClusterView", "Decision", "SchedulerHooks", "DISPATCH", "WAIT", "REJECT",
    "order_queue", "pack", "fits", "never_fits_reason", "schedule", "worker_bundle", "subtract_reserved",
]

DISPATCH, WAIT, REJECT = "dispatch", "wait", "reject"
_EPS = 1e-9
Res = Mapping[str, float]


def worker_bundle(per_worker: Mapping[str, float], accelerator_type: str | None = None) -> dict[str, float]:
    """Ray resources one worker needs, with the accelerator as Ray names it."""
    bundle = {k: float(v) for k, v in per_worker.items() if v}
    if accelerator_type:
        bundle[f"accelerator_type:{accelerator_type}"] = 0.001
    return bundle


@dataclass(frozen=True)
class QueuedJob:
    id: str
    workers: int
    per_worker: Mapping[str, float]  # one bundle, e.g. {"CPU": 1.0}
    priority: int = 0
    seq: float = 0.0  # FIFO key: submit time or an increasing number
    cluster: str | None = None  # pinned cluster
    project: str = "default"
    # Used by plan_tick (scheduler/plan.py) only; schedule() ignores them.
    max_runtime: float | None = None  # seconds, as declared in the spec
    progress: float | None = None  # 0..1 done before it was preempted/requeued
    progress_rate: float | None = None  # fraction of the job per second, measured while it ran
    checkpoint_cluster: str | None = None  # where its checkpoint lives (locality)
    checkpoint_region: str | None = None
    # an elastic job (resources.workers {min, max}) is admitted at `workers` (its min) and grows
    # to this when nodes are free; autoscaling demand asks for it. None: a fixed job
    max_workers: int | None = None

    @property
    def most_workers(self) -> int:
        """The most workers it can hold: max_workers for an elastic job, else workers."""
        return max(self.workers, self.max_workers or 0)

    def total(self) -> dict[str, float]:
        return {k: v * self.workers for k, v in self.per_worker.items()}

    # Derived once per job object and kept on it (a cached_property writes the instance's
    # __dict__, which a frozen dataclass allows; equality and repr ignore it). The
    # controller keeps its QueuedJobs between ticks, so a tick at 10,000 queued jobs does
    # not rebuild them. `per_worker` is never changed after a job is made.
    @cached_property
    def rank(self) -> tuple[int, float, str]:
        """The queue order: priority (higher first), then FIFO, ties by id."""
        return (-self.priority, self.seq, self.id)

    @cached_property
    def shape(self) -> tuple[int, tuple[tuple[str, float], ...]]:
        """The gang's shape, hashable: jobs of one shape pack and fit alike."""
        return (self.workers, tuple(sorted(self.per_worker.items())))

    @cached_property
    def demand(self) -> Mapping[str, float]:
        """model.demand_of(per_worker, workers): what the gang holds in accounting space.
        Shared: read it, never change it."""
        return demand_of(self.per_worker, self.workers)


@dataclass
class ClusterView:
    name: str
    nodes_free: list[dict[str, float]]  # per alive node: what is free now
    nodes_total: list[dict[str, float]] = field(default_factory=list)
    # the most the cluster can ever have (autoscaler limits); default: nodes_total
    max_nodes: list[dict[str, float]] | None = None
    healthy: bool = True
    # Used by plan_tick's placement only: cost per resource-hour (e.g. {"GPU": 2.5}), storage region.
    prices: Mapping[str, float] | None = None
    region: str | None = None

    def capacity_nodes(self) -> list[dict[str, float]]:
        return self.max_nodes if self.max_nodes is not None else (self.nodes_total or self.nodes_free)

    def totals(self, nodes: Iterable[Mapping[str, float]] | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for node in (self.capacity_nodes() if nodes is None else nodes):
            for key, value in node.items():
                out[key] = out.get(key, 0.0) + float(value)
        return out


@dataclass(frozen=True)
class Decision:
    job_id: str
    action: str  # dispatch | wait | reject
    cluster: str | None = None
    reason: str = ""
    field: str | None = None  # for reject: the spec field to change


@dataclass
class SchedulerHooks:
    """Extension points; the defaults implement plain priority+FIFO with no quotas."""

    order: Callable[[list[QueuedJob]], list[QueuedJob]] | None = None
    admit: Callable[[QueuedJob, str], str | None] | None = None


_rank = attrgetter("rank")


def order_queue(jobs: Iterable[QueuedJob]) -> list[QueuedJob]:
    return sorted(jobs, key=_rank)


def _fits_bundle(node: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(node.get(k, 0.0) + _EPS >= v for k, v in bundle.items())


def pack(bundle: Mapping[str, float], count: int, nodes: Sequence[Mapping[str, float]]
         ) -> list[dict[str, float]] | None:
    """Place `count` copies of `bundle` on `nodes` (first fit). Returns the nodes' remaining
    resources, or None when not all fit (gang: all or nothing).

    Identical bundles fill first-fit node by node, so each node takes as many as fit at
    once: the cost is O(nodes x keys) whatever `count` is (a request for a million
    workers costs no more to answer than one for two)."""
    left = [dict(n) for n in nodes]
    need = [(k, float(v)) for k, v in bundle.items() if v > 0]
    remaining = count
    for node in left:
        if remaining <= 0:
            break
        room = min((math.floor((node.get(k, 0.0) + _EPS) / v) for k, v in need), default=remaining)
        take = max(0, min(remaining, room))
        # a float floor can overshoot by one where the one-by-one check would stop
        while take and not _fits_bundle(node, {k: v * take for k, v in need}):
            take -= 1
        for k, v in need:
            node[k] = node.get(k, 0.0) - v * take
        remaining -= take
    return left if remaining <= 0 else None


def fits(job: QueuedJob, nodes: Sequence[Mapping[str, float]]) -> bool:
    return pack(job.per_worker, job.workers, nodes) is not None


def _fmt(amount: float) -> str:
    return str(int(amount)) if float(amount).is_integer() else f"{amount:g}"


def _unit(key: str, amount: float) -> str:
    names = {"CPU": "CPU", "GPU": "GPU"}
    name = names.get(key, f"'{key}'")
    plural = "s" if key in names and amount != 1 else ""
    return f"{_fmt(amount)} {name}{plural}"


def never_fits_reason(job: QueuedJob, clusters: Sequence[ClusterView]) -> tuple[str, str] | None:
    """(field, message) when the job can never run on any of `clusters`, else None."""
    if not clusters:
        return ("resources.cluster", "no cluster is registered; register one with "
                "`trainyard clusters add NAME --address URL`, or start the local stack with `trainyard up`")
    for cluster in clusters:
        if fits(job, cluster.capacity_nodes()):
            return None
    # Pick the key that fails, and describe it against the largest cluster.
    largest = max(clusters, key=lambda c: (c.totals().get("CPU", 0.0), c.name))
    totals = largest.totals()
    need = job.total()
    where = f"cluster '{largest.name}'" if job.cluster else f"the largest cluster, '{largest.name}',"
    for key in sorted(need, key=lambda k: (k != "CPU", k != "GPU", k)):
        if need[key] > totals.get(key, 0.0) + _EPS:
            per = "cpus_per_worker" if key == "CPU" else "gpus_per_worker" if key == "GPU" else "custom_resources"
            if key.startswith("accelerator_type:"):
                return ("resources.accelerator_type",
                        f"needs accelerator {key.split(':', 1)[1]!r} but {where} has none; "
                        f"pick an accelerator_type the cluster has, or add a cluster that has it")
            return ("resources.workers" if key == "CPU" else f"resources.{per}",
                    f"needs {_unit(key, need[key])} in total but {where} has {_fmt(totals.get(key, 0.0))}; "
                    f"lower resources.workers or {per}, or add a bigger cluster")
    # Enough in total, but one worker does not fit on any single node.
    biggest = max((n.get("CPU", 0.0) for n in largest.capacity_nodes()), default=0.0)
    return ("resources.cpus_per_worker",
            f"one worker needs {_fmt(job.per_worker.get('CPU', 0.0))} CPUs (plus "
            f"{', '.join(f'{k}={_fmt(v)}' for k, v in job.per_worker.items() if k != 'CPU') or 'nothing else'}) "
            f"on a single node, but the biggest node of {where.rstrip(',')} has {_fmt(biggest)} CPUs; "
            f"use more, smaller workers")


def _free_cpu(nodes: Sequence[Mapping[str, float]]) -> float:
    return sum(n.get("CPU", 0.0) for n in nodes)


def schedule(queue: Iterable[QueuedJob], clusters: Sequence[ClusterView], *,
             hooks: SchedulerHooks | None = None) -> list[Decision]:
    """One scheduling pass. Returns a decision per queued job, in queue order."""
    hooks = hooks or SchedulerHooks()
    jobs = list(queue)
    ordered = hooks.order(jobs) if hooks.order else order_queue(jobs)
    free = {c.name: [dict(n) for n in c.nodes_free] for c in clusters}
    by_name = {c.name: c for c in clusters}
    blocked: set[str] = set()
    decisions: list[Decision] = []
    for job in ordered:
        if job.cluster is not None and job.cluster not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            decisions.append(Decision(job.id, REJECT, None, f"cluster {job.cluster!r} is not registered "
                                      f"(registered: {known})", "resources.cluster"))
            continue
        candidates = [by_name[job.cluster]] if job.cluster else list(clusters)
        never = never_fits_reason(job, candidates)
        if never is not None:
            decisions.append(Decision(job.id, REJECT, None, never[1], never[0]))
            continue
        best: tuple[float, str, list] | None = None
        reasons = []
        held_only, admit_held = True, False  # every cluster with room said no through hooks.admit
        for cluster in candidates:
            if not cluster.healthy:
                reasons.append(f"cluster '{cluster.name}' is unreachable")
                continue
            if cluster.name in blocked:
                reasons.append(f"cluster '{cluster.name}' is held for a job ahead in the queue")
                held_only = False
                continue
            left = pack(job.per_worker, job.workers, free[cluster.name])
            if left is None:
                held_only = False
                have = _fmt(_free_cpu(free[cluster.name]))
                reasons.append(f"cluster '{cluster.name}' has {have} CPUs free, the job needs "
                               f"{_fmt(job.total().get('CPU', 0.0))} across {job.workers} worker(s)")
                continue
            if hooks.admit is not None:
                held = hooks.admit(job, cluster.name)
                if held:
                    reasons.append(held)
                    admit_held = True
                    continue
            key = (_free_cpu(left), cluster.name, left)
            if best is None or key[0] > best[0] or (key[0] == best[0] and key[1] < best[1]):
                best = key
        if best is not None:
            free[best[1]] = best[2]
            decisions.append(Decision(job.id, DISPATCH, best[1], "admitted"))
        else:
            if not (held_only and admit_held):
                blocked.update(c.name for c in candidates)
            decisions.append(Decision(job.id, WAIT, None, "; ".join(reasons) or "waiting for capacity"))
    return decisions


def subtract_reserved(nodes_free: Sequence[Mapping[str, float]], nodes_total: Sequence[Mapping[str, float]],
                      reserved: Mapping[str, float]) -> list[dict[str, float]]:
    """Free resources per node, after what we dispatched ourselves but the cluster's (lagging)
    usage report does not show yet. Takes the larger of the two views of "used", per resource."""
    left = [dict(n) for n in nodes_free]
    for key, amount in reserved.items():
        used = sum(t.get(key, 0.0) for t in nodes_total) - sum(f.get(key, 0.0) for f in nodes_free)
        extra = amount - max(0.0, used)
        for node in left:
            if extra <= _EPS:
                break
            take = min(extra, node.get(key, 0.0))
            if take > 0:
                node[key] = node.get(key, 0.0) - take
                extra -= take
    return left

"""One scheduling tick over a shared fleet: `plan_tick(queue, ...) -> TickPlan`. Pure.

For each queued job, in weighted-DRF order (fairshare.py; or priority then FIFO when
`config.fair_share` is off):
1. pinned to an unknown cluster, or never fits  -> reject (as schedule() does);
2. its project's budget is spent                -> wait 'budget'  (blocks nobody);
3. over its project's quota                     -> wait 'quota'   (blocks nobody);
4. every cluster it may use is unhealthy        -> wait 'cluster_unhealthy'; a job that is
   not pinned simply goes to a healthy cluster (an unhealthy cluster is drained);
5. it fits now on some cluster (free, or by backfill past that cluster's head job without
   delaying it, backfill.py) -> dispatch to the best-scoring cluster (placement.py); an
   elastic job (admitted at its min) is granted the most workers its quota lets it grow to
   (elastic.py, `Dispatch.workers_max`);
6. else, on each cluster where it is first in line, it becomes the head: it may preempt
   (preemption.py) -> wait 'preempting', the victims listed in `TickPlan.preempt`; or it
   reserves the cluster (its earliest start is its estimated start) -> wait 'capacity';
7. else it waits behind the head of the cluster's line -> 'behind_job', or 'fair_share'
   when that head's project is further under its fair share.
Every waiting job gets a `Pending` (reasons.py) with its positions; the first
`config.eta_depth` jobs in each cluster's line also get an estimated start (eta.py) when the
running jobs ahead of them have expected ends.

The controller reads the store, builds these plain values, calls plan_tick, then applies
the plan: dispatch, ask victims to checkpoint and stop, and write the reasons in one batch.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

from trainyard.scheduler.backfill import (Reservation, commit, expected_end, grow, may_backfill, reserve,
                                          runtime_estimate)
from trainyard.scheduler.elastic import grant_workers
from trainyard.scheduler.eta import Forecast, demand_total
from trainyard.scheduler.budgets import BudgetStatus, budget_reason, budget_statuses
from trainyard.scheduler.fairshare import FairQueue, dominant_share
from trainyard.scheduler.model import (ACCEL_PREFIX, Project, RunningJob, TickConfig, UsageRecord, add_into,
                                      capacity_of)
from trainyard.scheduler.placement import Score, rank_clusters
from trainyard.scheduler.policy import (DISPATCH, REJECT, WAIT, ClusterView, Decision, QueuedJob, _unit, fits,
                                        never_fits_reason, order_queue, pack)
from trainyard.scheduler.preemption import Preemption, choose_victims
from trainyard.scheduler.quotas import QuotaLedger
from trainyard.scheduler.reasons import (BEHIND_JOB, CAPACITY, CLUSTER_UNHEALTHY, FAIR_SHARE, PREEMPTING, Pending,
                                         Reason)

__all__ = ["Dispatch", "TickPlan", "plan_tick"]


@dataclass(frozen=True)
class Dispatch:
    job_id: str
    cluster: str
    reason: str  # "admitted", or how it was backfilled
    score: Score | None = None
    # an elastic job's ceiling (elastic.grant_workers): the most workers its project's quota
    # lets it grow to; None for a fixed job
    workers_max: int | None = None


@dataclass
class TickPlan:
    """What one tick decided. `order` is the queue's (fair) order, job ids."""

    dispatch: list[Dispatch] = field(default_factory=list)
    wait: list[Pending] = field(default_factory=list)
    reject: list[Decision] = field(default_factory=list)
    preempt: list[Preemption] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    budgets: dict[str, BudgetStatus] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def pending(self, job_id: str) -> Pending | None:
        return next((p for p in self.wait if p.job_id == job_id), None)

    def decisions(self) -> list[Decision]:
        """The plan as schedule()-style decisions, in queue order."""
        by_id: dict[str, Decision] = {}
        for d in self.dispatch:
            by_id[d.job_id] = Decision(d.job_id, DISPATCH, d.cluster, d.reason)
        for p in self.wait:
            by_id[p.job_id] = Decision(p.job_id, WAIT, None, p.reason.message)
        for r in self.reject:
            by_id[r.job_id] = r
        return [by_id[i] for i in self.order if i in by_id]


def _fmt(x: float) -> str:
    return f"{x:g}"


def _shortfall(job: QueuedJob, free: Sequence[Mapping[str, float]]) -> str:
    """What the cluster lacks for the job now, in words."""
    need = {k: v for k, v in job.total().items() if not k.startswith(ACCEL_PREFIX)}
    have = {k: sum(n.get(k, 0.0) for n in free) for k in need}
    short = [k for k in sorted(need) if have[k] + 1e-9 < need[k]]
    if short:
        return "; ".join(f"the job needs {_unit(k, need[k])}, {_fmt(have[k])} free" for k in short)
    return (f"enough is free in total, but no set of nodes has room for its {job.workers} worker(s) of "
            + ", ".join(_unit(k, v) for k, v in sorted(job.per_worker.items()) if v and not k.startswith(ACCEL_PREFIX))
            + " each")


def plan_tick(queue: Iterable[QueuedJob], *, running: Iterable[RunningJob] = (), clusters: Sequence[ClusterView] = (),
              projects: Mapping[str, Project] | Iterable[Project] = (), usage: Iterable[UsageRecord] = (),
              now: float, config: TickConfig | None = None, pace: Callable[[], None] | None = None) -> TickPlan:
    """Plan one tick. `projects` without an entry get weight 1, no quota and no budget.
    `pace`, when given, is called every 256 jobs: the caller's chance to rest its thread (the
    controller keeps its ticks to a share of the CPU); it must not touch the inputs."""
    config = (config or TickConfig()).validate()
    if not isinstance(projects, Mapping):
        projects = {p.name: p for p in projects}
    for project in projects.values():
        project.validate()
    running = list(running)
    by_name = {c.name: c for c in clusters}
    healthy = [c for c in clusters if c.healthy]
    capacity = capacity_of((c.nodes_total or c.nodes_free) for c in healthy)
    held: dict[str, dict[str, float]] = defaultdict(dict)
    running_on: dict[str, list[RunningJob]] = defaultdict(list)
    running_by_id = {r.id: r for r in running}
    for r in running:
        add_into(held[r.project], r.demand())
        running_on[r.cluster].append(r)
    weights = {name: p.weight for name, p in projects.items()}
    shares = {name: dominant_share(h, capacity, weights.get(name, 1.0)) for name, h in held.items()}
    ledger = QuotaLedger({name: p.quota for name, p in projects.items()}, capacity, running)
    budgets = budget_statuses(projects, usage, now=now, burn_window_s=config.burn_window_s)

    jobs = list(queue)
    dispatched: dict[str, list[QueuedJob]] = defaultdict(list)
    fair = FairQueue(jobs, held=held, capacity=capacity, weights=weights) if config.fair_share else None
    ordered = fair if fair is not None else order_queue(jobs)
    plan = TickPlan(budgets=budgets)
    free = {c.name: [dict(n) for n in c.nodes_free] for c in clusters}
    reservations: dict[str, Reservation] = plan.reservations
    taken: set[str] = set()
    # Free space only shrinks during a tick, so a gang shape that did not fit a cluster
    # will not fit it later in the tick either: remember it instead of packing again.
    no_room: dict[str, set[tuple]] = {c.name: set() for c in clusters}
    # Most of a long queue is many jobs of a few shapes, waiting behind the same heads.
    # Per (pinned cluster, shape), once for the tick: where it may go at all ...
    routes: dict[tuple, tuple[list[ClusterView], list[ClusterView], list[ClusterView], Decision | None]] = {}
    # ... and, once every cluster it may use is held by a head job it cannot backfill
    # beside (a reservation is never taken back within a tick, and free space only shrinks),
    # what blocks it for the rest of the tick, and the reason per (project, priority).
    settled: dict[tuple, tuple[Reservation, str]] = {}
    settled_reasons: dict[tuple, Reason] = {}
    # projects a budget or a quota may hold back (the others never are)
    limited = set(budgets) | {name for name, p in projects.items() if p.quota is not None}
    # positions count jobs that stay queued after this tick
    in_queue = 0
    in_project: dict[str, int] = defaultdict(int)
    in_cluster: dict[str, int] = defaultdict(int)
    waiting: list[QueuedJob] = []  # the job of each plan.wait entry

    def wait(job: QueuedJob, reason: Reason, candidates: Sequence[ClusterView], eta: float | None = None) -> None:
        nonlocal in_queue
        in_queue += 1
        in_project[job.project] += 1
        for c in candidates:
            in_cluster[c.name] += 1
        where = reason.cluster or job.cluster
        waiting.append(job)
        plan.wait.append(Pending(job.id, reason, in_queue, in_project[job.project],
                                 in_cluster[where] if where else None, eta))

    def route(job: QueuedJob) -> tuple[list[ClusterView], list[ClusterView], list[ClusterView], Decision | None]:
        """(candidates, the ones it could ever fit on, the healthy ones among those, or why never)."""
        if job.cluster is not None and job.cluster not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            never = Decision(job.id, REJECT, None, f"cluster {job.cluster!r} is not registered "
                             f"(registered: {known})", "resources.cluster")
            return [], [], [], never
        candidates = [by_name[job.cluster]] if job.cluster else list(clusters)
        # Only clusters it could ever fit on: a job must not hold a line it can never lead.
        possible = [c for c in candidates if fits(job, c.capacity_nodes())]
        if not possible:
            found = never_fits_reason(job, candidates)
            assert found is not None
            return candidates, [], [], Decision(job.id, REJECT, None, found[1], found[0])
        return candidates, possible, [c for c in possible if c.healthy], None

    def blocked_reason(job: QueuedJob, res: Reservation, why: str) -> Reason:
        head = res.job
        if (head.project != job.project and head.priority == job.priority
                and shares.get(head.project, 0.0) < shares.get(job.project, 0.0) - 1e-12):
            return Reason(FAIR_SHARE, f"{why}; project '{head.project}' is further under its fair share than "
                          f"project '{job.project}'", cluster=res.cluster, blocking_job=head.id)
        return Reason(BEHIND_JOB, why or f"behind job '{head.id}'", cluster=res.cluster, blocking_job=head.id)

    for n, job in enumerate(ordered):
        if pace is not None and not n & 255:
            pace()
        plan.order.append(job.id)
        shape = job.shape
        key = (job.cluster, shape)
        where = routes.get(key)
        if where is None:
            where = routes[key] = route(job)
        candidates, possible, live, never = where
        if never is not None:
            plan.reject.append(never if never.job_id == job.id else replace(never, job_id=job.id))
            continue
        demand = job.demand
        if job.project in limited:
            held_back = budget_reason(budgets.get(job.project), demand) or ledger.check(job.project, demand)
            if held_back is not None:
                wait(job, held_back, candidates)
                continue
        if not live:
            names = ", ".join(f"'{c.name}'" for c in possible)
            pinned = " (the job is pinned by resources.cluster)" if job.cluster else ""
            wait(job, Reason(CLUSTER_UNHEALTHY, f"cluster {names} is unreachable{pinned}",
                             cluster=possible[0].name if len(possible) == 1 else None), possible)
            continue
        stuck = settled.get(key)
        if stuck is not None:
            rkey = (key, job.project, job.priority)
            reason = settled_reasons.get(rkey)
            if reason is None:
                reason = settled_reasons[rkey] = blocked_reason(job, *stuck)
            # wait(job, reason, live), inline: this is most of a long queue
            in_queue += 1
            mine = in_project[job.project] = in_project[job.project] + 1
            for c in live:
                in_cluster[c.name] += 1
            where = reason.cluster or job.cluster
            waiting.append(job)
            plan.wait.append(Pending(job.id, reason, in_queue, mine, in_cluster[where] if where else None, None))
            continue

        options: list[tuple[ClusterView, list, Reservation | None, list | None]] = []
        full: list[ClusterView] = []
        blocked_by: tuple[Reservation, str] | None = None
        for c in live:
            res = reservations.get(c.name)
            if res is not None and not config.backfill:
                blocked_by = blocked_by or (res, f"behind job '{res.job.id}'")
                continue
            left = None if shape in no_room[c.name] else pack(job.per_worker, job.workers, free[c.name])
            if left is None:
                no_room[c.name].add(shape)
                if res is None:
                    full.append(c)
                else:
                    blocked_by = blocked_by or (res, f"behind job '{res.job.id}'; the cluster is full")
                continue
            if res is None:
                options.append((c, left, None, None))
                continue
            left, at_start, why = may_backfill(job, res, free[c.name], now=now, left=left)
            if left is None:
                blocked_by = blocked_by or (res, why)
            else:
                options.append((c, left, res, at_start))

        if options:
            best = rank_clusters(job, [(c, left) for c, left, _, _ in options], config=config)[0]
            c, left, res, at_start = next(o for o in options if o[0].name == best.cluster)
            free[c.name] = left
            dispatched[c.name].append(job)
            # the grant is measured before the job's own min is on the ledger
            grant = grant_workers(job, ledger=ledger) if job.max_workers is not None else None
            ledger.add(job.project, demand)
            if fair is not None:
                fair.admitted(job)
            if res is None:
                plan.dispatch.append(Dispatch(job.id, c.name, "admitted", best, workers_max=grant))
            else:
                commit(res, job.id, at_start)
                how = "ends before" if at_start is None else "fits beside"
                plan.dispatch.append(Dispatch(job.id, c.name, f"backfilled: {how} job '{res.job.id}', "
                                              f"reserved to start at {res.start:.0f}", best, workers_max=grant))
            continue

        if full:
            victims: list[Preemption] = []
            if config.preemption:
                room = config.max_victims_per_tick - len(plan.preempt)
                for c in sorted(full, key=lambda c: c.name):
                    found = choose_victims(job, cluster=c.name, free=free[c.name], running=running_on[c.name],
                                           now=now, config=config, ledger=ledger, taken=taken)
                    if found and len(found) <= room:
                        victims = found
                        # Held from now on: later jobs may still start beside it, never in its way.
                        at_start = [dict(n) for n in free[c.name]]
                        for v in found:
                            grow(at_start, running_by_id[v.job_id].freed_nodes(merged=False), len(free[c.name]))
                        reservations[c.name] = Reservation(job, c.name, now, at_start)
                        break
            if victims:
                taken.update(v.job_id for v in victims)
                plan.preempt.extend(victims)
                ids = tuple(v.job_id for v in victims)
                wait(job, Reason(PREEMPTING, f"preempting {', '.join(repr(i) for i in ids)} on cluster "
                                 f"'{victims[0].cluster}' to make room", cluster=victims[0].cluster,
                                 victims=ids), live)
                continue
            best_res: Reservation | None = None
            for c in full:
                res = reserve(job, c.name, free[c.name], running_on[c.name], now=now)
                reservations[c.name] = res
                earlier = res.start is not None and (best_res is None or best_res.start is None
                                                     or res.start < best_res.start)
                if best_res is None or earlier:
                    best_res = res
            assert best_res is not None
            msg = f"first in line on cluster '{best_res.cluster}': {_shortfall(job, free[best_res.cluster])}"
            wait(job, Reason(CAPACITY, msg, cluster=best_res.cluster), live, best_res.start)
            continue

        assert blocked_by is not None
        if all(c.name in reservations and (not config.backfill or shape in no_room[c.name]) for c in live):
            settled[key] = blocked_by  # see `settled` above: it stays so for this tick
        wait(job, blocked_reason(job, *blocked_by), live)

    if config.eta_depth:
        _estimate_starts(plan, waiting, clusters, running_on, free, dispatched, taken, now=now,
                         depth=config.eta_depth)
    return plan


_LINE = (CAPACITY, PREEMPTING, BEHIND_JOB, FAIR_SHARE)


def _estimate_starts(plan: TickPlan, waiting: Sequence[QueuedJob], clusters: Sequence[ClusterView],
                     running_on: Mapping[str, list[RunningJob]], free: Mapping[str, list[dict[str, float]]],
                     dispatched: Mapping[str, list[QueuedJob]], taken: set[str], *, now: float, depth: int) -> None:
    """Fill in estimated starts for the first `depth` jobs in each cluster's line (eta.py)."""
    lines: dict[str, list[int]] = defaultdict(list)
    names = {c.name for c in clusters}
    filled = 0  # lines that have `depth` jobs: once all have, the rest of the queue is not looked at
    for i, pending in enumerate(plan.wait):
        cluster = pending.reason.cluster
        if pending.reason.code in _LINE and cluster is not None and len(lines[cluster]) < depth:
            line = lines[cluster]
            line.append(i)
            if len(line) == depth and cluster in names:
                filled += 1
                if filled == len(names):
                    break
    for c in clusters:
        if c.name not in lines:
            continue
        forecast = Forecast(free[c.name], now=now)
        for r in running_on.get(c.name, ()):
            # preempted jobs checkpoint and leave: count them as gone now
            forecast.release(now if r.id in taken else expected_end(r, now=now), demand_total(r.per_worker, r.workers))
        for job in dispatched.get(c.name, ()):
            runtime = runtime_estimate(job)
            forecast.release(None if runtime is None else now + runtime, demand_total(job.per_worker, job.workers))
        last = now
        for i in lines[c.name]:
            pending = plan.wait[i]
            job = waiting[i]
            need = demand_total(job.per_worker, job.workers)
            start = pending.estimated_start  # the head's per-node reservation, when it has one
            if start is None:
                start = forecast.earliest(need, not_before=last)
            if start is None:
                break  # everyone behind it waits on it too
            start = max(start, last)
            forecast.claim(start, runtime_estimate(job), need)
            last = start
            plan.wait[i] = replace(pending, estimated_start=start)

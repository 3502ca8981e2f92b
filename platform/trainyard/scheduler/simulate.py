"""A pure, seeded simulation of projects flooding one cluster, driven by plan_tick.

No Ray and no clock: time jumps from one job end to the next. Each project keeps `backlog`
jobs queued at all times (random sizes and durations, durations declared as max_runtime);
at every event plan_tick decides, dispatched jobs take their nodes, ends give them back.
Returns each project's share of the GPU-time used over the horizon, which weighted DRF
should bring close to weight / sum(weights).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

from trainyard.scheduler.model import Project, RunningJob, TickConfig
from trainyard.scheduler.plan import plan_tick
from trainyard.scheduler.policy import ClusterView, QueuedJob, pack

__all__ = ["SimulationResult", "simulate_fair_share"]


@dataclass(frozen=True)
class SimulationResult:
    shares: dict[str, float]  # project -> share of GPU-seconds used
    gpu_seconds: dict[str, float]
    utilization: float  # GPU-seconds used / GPU-seconds available
    jobs_started: int
    ticks: int


def simulate_fair_share(weights: Mapping[str, float], *, hours: float = 24.0, seed: int = 0, nodes: int = 4,
                        gpus_per_node: int = 8, backlog: int = 10, min_minutes: float = 5.0,
                        max_minutes: float = 60.0, config: TickConfig | None = None) -> SimulationResult:
    rng = random.Random(seed)
    horizon = hours * 3600.0
    node_total = {"CPU": 4.0 * gpus_per_node, "GPU": float(gpus_per_node)}
    free = [dict(node_total) for _ in range(nodes)]
    projects = {name: Project(name, weight=w) for name, w in weights.items()}
    queued: dict[str, QueuedJob] = {}
    durations: dict[str, float] = {}
    running: dict[str, tuple[RunningJob, float, list[dict[str, float]]]] = {}
    used = {name: 0.0 for name in weights}
    seq = 0

    def refill(now: float) -> None:
        nonlocal seq
        counts = {name: 0 for name in weights}
        for job in queued.values():
            counts[job.project] += 1
        for name in sorted(weights):
            for _ in range(backlog - counts[name]):
                seq += 1
                gpus = rng.choice((1, 1, 2, 4))
                duration = rng.uniform(min_minutes, max_minutes) * 60.0
                job = QueuedJob(id=f"{name}-{seq}", workers=1, per_worker={"CPU": 2.0 * gpus, "GPU": float(gpus)},
                                seq=float(seq), project=name, max_runtime=duration)
                queued[job.id] = job
                durations[job.id] = duration

    now, ticks, started = 0.0, 0, 0
    while now < horizon:
        refill(now)
        view = ClusterView("sim", nodes_free=[dict(n) for n in free], nodes_total=[dict(node_total)] * nodes)
        plan = plan_tick(list(queued.values()), running=[r for r, _, _ in running.values()], clusters=[view],
                         projects=projects, now=now, config=config)
        ticks += 1
        for d in plan.dispatch:
            job = queued.pop(d.job_id)
            before = [dict(n) for n in free]
            left = pack(job.per_worker, job.workers, free)
            assert left is not None, "plan_tick dispatched a job that does not fit"
            free[:] = left
            held = [{k: before[i][k] - left[i].get(k, 0.0) for k in before[i]} for i in range(nodes)]
            end = now + durations.pop(job.id)
            running[job.id] = (RunningJob(job.id, job.project, "sim", job.workers, job.per_worker, started_at=now,
                                          max_runtime=job.max_runtime, nodes=tuple(held)), end, held)
            started += 1
        if not running:
            break
        now = min(end for _, end, _ in running.values())
        for job_id in [i for i, (_, end, _) in running.items() if end <= now]:
            job, end, held = running.pop(job_id)
            used[job.project] += job.per_worker.get("GPU", 0.0) * job.workers * (min(end, horizon) - job.started_at)
            for node, back in zip(free, held):
                for k, v in back.items():
                    node[k] = node.get(k, 0.0) + v
    for job, _, _ in running.values():  # still running at the horizon
        used[job.project] += job.per_worker.get("GPU", 0.0) * job.workers * max(0.0, horizon - job.started_at)
    total = sum(used.values()) or 1.0
    return SimulationResult(shares={k: v / total for k, v in used.items()}, gpu_seconds=used,
                            utilization=sum(used.values()) / (horizon * nodes * gpus_per_node),
                            jobs_started=started, ticks=ticks)

"""Placement across several clusters: a score per cluster the job fits on now.

Each part is in [0, 1] and weighted by TickConfig:
- fit (w_fit): the share of the cluster still free after placing the job, in the scarcest
  of the resources the job asks for (spreads load, like schedule()'s "most free CPU");
- accelerator (w_accelerator): 1 when the cluster's accelerators match the job: a GPU job on
  a GPU cluster, or a CPU-only job on a cluster without GPUs (keeps GPU clusters for GPU work);
- price (w_price): for clusters that declare `prices` (per resource-hour), the cheapest gets
  1 and others cheapest/cost; a cluster with no price gets 0.5;
- locality: w_locality_cluster when the cluster holds the job's checkpoint, w_locality_region
  when its storage region does (a resumed or preempted job goes back to its checkpoint).
Highest total wins; ties go by cluster name. Unhealthy and pinned-away clusters never get
here (plan_tick leaves them out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from trainyard.scheduler.model import ACCEL_PREFIX, TickConfig, demand_of
from trainyard.scheduler.policy import ClusterView, QueuedJob

__all__ = ["Score", "rank_clusters", "hourly_cost"]


@dataclass(frozen=True)
class Score:
    cluster: str
    total: float
    parts: Mapping[str, float]


def hourly_cost(job: QueuedJob, cluster: ClusterView) -> float | None:
    if cluster.prices is None:
        return None
    need = demand_of(job.per_worker, job.workers)
    return sum(amount * float(cluster.prices.get(key, 0.0)) for key, amount in need.items())


def _has_gpus(cluster: ClusterView) -> bool:
    return any(n.get("GPU", 0.0) > 0 for n in cluster.capacity_nodes())


def rank_clusters(job: QueuedJob, options: Sequence[tuple[ClusterView, Sequence[Mapping[str, float]]]], *,
                  config: TickConfig) -> list[Score]:
    """Scores of `options` (cluster, its free nodes after placing the job), best first."""
    costs = {c.name: hourly_cost(job, c) for c, _ in options}
    declared = [v for v in costs.values() if v is not None]
    cheapest = min(declared) if declared else None
    wants_gpu = job.per_worker.get("GPU", 0.0) > 0
    keys = [k for k, v in job.per_worker.items() if v and not k.startswith(ACCEL_PREFIX)] or ["CPU"]
    scores = []
    for cluster, left in options:
        totals = cluster.nodes_total or cluster.nodes_free
        fit = 1.0
        for key in keys:
            total = sum(n.get(key, 0.0) for n in totals)
            if total > 0:
                fit = min(fit, max(0.0, sum(n.get(key, 0.0) for n in left) / total))
        accel = 1.0 if wants_gpu == _has_gpus(cluster) else 0.0
        cost = costs[cluster.name]
        if cost is None:
            price = 0.5
        elif cost <= 0:
            price = 1.0
        else:
            price = (cheapest or 0.0) / cost if cheapest and cheapest > 0 else 0.0
        near_cluster = 1.0 if job.checkpoint_cluster and job.checkpoint_cluster == cluster.name else 0.0
        near_region = 1.0 if job.checkpoint_region and job.checkpoint_region == cluster.region else 0.0
        parts = {"fit": fit, "accelerator": accel, "price": price, "locality_cluster": near_cluster,
                 "locality_region": near_region}
        total = (config.w_fit * fit + config.w_accelerator * accel + config.w_price * price
                 + config.w_locality_cluster * near_cluster + config.w_locality_region * near_region)
        scores.append(Score(cluster.name, total, parts))
    scores.sort(key=lambda s: (-round(s.total, 9), s.cluster))
    return scores

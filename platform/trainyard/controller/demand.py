"""The controller's demand step: once per tick, tell autoscaling clusters what the queue needs.

The controller hands it the queue, the decisions and the clusters its dispatch step already
read and planned (`plan_from`: no second read of the store), and the result goes to
trainyard.clusters.demand (which decides what changed and sends it as a tiny Ray job). See
that module for the rules.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from trainyard.clusters.demand import ClusterDemand, DemandSender, plan_demand
from trainyard.config import Settings
from trainyard.controller import views
from trainyard.scheduler import ClusterView, Decision, QueuedJob, schedule
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

__all__ = ["DemandStep"]

log = logging.getLogger("trainyard.controller")


class DemandStep:
    def __init__(self, db: Database, client_for: Callable[[str], Any], *, health: dict[str, dict],
                 python: str | None = None):
        self.db = db
        self.health = health  # the controller's own dict: reachable clusters
        env = Settings.from_env()
        python = python or env.cluster_python
        self.sender = DemandSender(client_for, python=python, log=log.info)
        self.last: dict[str, ClusterDemand] = {}
        # off switch (TRAINYARD_AUTOSCALER_DEMAND=off): leave scaling to Ray's own demand
        self.enabled = env.autoscaler_demand
        # A job's trainer registers its own request with Ray (AutoscalingCoordinator) once it
        # starts, so a RUNNING job leaves our request: counting it in both made the merged
        # request twice its size and launched a second node for nothing (measured with the cnn
        # runner). The gap between the driver starting and the trainer asking is harmless
        # where nodes idle for minutes before removal (cloud: 10). A grace period keeps a
        # RUNNING job in our request that long, for drivers that never ask Ray themselves.
        self.running_grace_s = env.demand_running_grace_s

    def fresh(self, phase: str, started_at: datetime | None, *, now: datetime) -> bool:
        """Whether an active job's needs are ours to request (Ray does not know them yet)."""
        if phase in (st.DISPATCHING, st.SUBMITTED):
            return True
        if phase != st.RUNNING:
            return False
        if started_at is not None and started_at.tzinfo is None:
            started_at = started_at.replace(tzinfo=timezone.utc)
        return started_at is None or (now - started_at).total_seconds() < self.running_grace_s

    def plan(self) -> dict[str, ClusterDemand]:
        """Read the store and plan (for callers without a controller tick at hand)."""
        with self.db.session() as s:
            pending = jobs_repo.pending_jobs(s)
            queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                      project=j.project) for j in pending]
            active_rows = jobs_repo.active_jobs(s)
            active = [(j.phase, j.cluster, j.started_at, views.row_job(j)) for j in active_rows]
            reserved = views.reserved_by_cluster(active_rows)
            rows = clusters_repo.list_clusters(s)
            live = {r.name: [dict(n.get("total") or {}) for n in (r.last_resources or {}).get("nodes") or []]
                    for r in rows}
            cluster_views = [v for v in (views.cluster_view(r, healthy=self.health.get(r.name, {}).get("ok", False),
                                                            reserved=reserved.get(r.name)) for r in rows)
                             if v is not None]
        decisions = schedule(queue, cluster_views) if queue else []
        return self.plan_from(queue, decisions, cluster_views, active=active, live_nodes=live)

    def plan_from(self, queue: Sequence[QueuedJob], decisions: Sequence[Decision],
                  cluster_views: Sequence[ClusterView], *,
                  active: Iterable[tuple[str, str | None, datetime | None, QueuedJob]],
                  live_nodes: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, ClusterDemand]:
        """Plan from what the controller's tick already read and decided (no store read).

        active: (phase, cluster, started_at, job) of every job that may hold resources."""
        if not any(v.max_nodes is not None for v in cluster_views):
            return {}  # no autoscaling cluster: nothing to ask for (and no pass over the queue)
        now = datetime.now(timezone.utc)
        fresh: dict[str, list] = {}
        running: dict[str, list] = {}
        for phase, cluster, started_at, job in active:
            if cluster:
                (fresh if self.fresh(phase, started_at, now=now) else running).setdefault(cluster, []).append(job)
        # an unreachable cluster cannot be sent anything: leave its request as it is
        reachable = [v for v in cluster_views if v.healthy]
        return plan_demand(queue, decisions, reachable, active=fresh, live_nodes=live_nodes, running=running)

    def tick(self, demands: dict[str, ClusterDemand] | None = None) -> list[dict]:
        """Send what changed. `demands`: planned by the controller's tick; None: read the store."""
        if not self.enabled:
            return []
        self.last = self.plan() if demands is None else demands
        return self.sender.update(self.last)

    def snapshot(self) -> dict[str, Any]:
        return {name: {"bundles": d.as_lists(), "waiting": list(d.waiting), "active": list(d.active),
                       "fits_now": d.fits_now,
                       "requested": ([dict(b) for b in st.sent] if (st := self.sender.tracker.states.get(name))
                                     and st.sent is not None else None)}
                for name, d in self.last.items()}

"""The controller's demand step: once per tick, tell autoscaling clusters what the queue needs.

Reads the store (pending and active jobs, clusters), asks the scheduler for the same pass
the dispatch step made, and hands the result to trainyard.clusters.demand (which decides
what changed and sends it as a tiny Ray job). See that module for the rules.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

from trainyard.clusters.demand import ClusterDemand, DemandSender, plan_demand
from trainyard.config import Settings
from trainyard.controller import views
from trainyard.scheduler import schedule
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

    def plan(self) -> dict[str, ClusterDemand]:
        with self.db.session() as s:
            pending = jobs_repo.pending_jobs(s)
            queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                      project=j.project) for j in pending]
            active_rows = jobs_repo.active_jobs(s)
            now = datetime.now(timezone.utc)
            active: dict[str, list] = {}
            running: dict[str, list] = {}
            for job in active_rows:
                if not job.cluster:
                    continue
                started = job.started_at
                if started is not None and started.tzinfo is None:
                    started = started.replace(tzinfo=timezone.utc)
                fresh = job.phase in (st.DISPATCHING, st.SUBMITTED) or (
                    job.phase == st.RUNNING and (started is None
                                                 or (now - started).total_seconds() < self.running_grace_s))
                (active if fresh else running).setdefault(job.cluster, []).append(
                    views.queued_job(job.id, job.spec))
            reserved = views.reserved_by_cluster(active_rows)
            rows = clusters_repo.list_clusters(s)
            live = {r.name: [dict(n.get("total") or {}) for n in (r.last_resources or {}).get("nodes") or []]
                    for r in rows}
            cluster_views = [v for v in (views.cluster_view(r, healthy=self.health.get(r.name, {}).get("ok", False),
                                                            reserved=reserved.get(r.name)) for r in rows)
                             if v is not None]
        decisions = schedule(queue, cluster_views) if queue else []
        # an unreachable cluster cannot be sent anything: leave its request as it is
        reachable = [v for v in cluster_views if v.healthy]
        return plan_demand(queue, decisions, reachable, active=active, live_nodes=live, running=running)

    def tick(self) -> list[dict]:
        if not self.enabled:
            return []
        self.last = self.plan()
        return self.sender.update(self.last)

    def snapshot(self) -> dict[str, Any]:
        return {name: {"bundles": d.as_lists(), "waiting": list(d.waiting), "active": list(d.active),
                       "fits_now": d.fits_now,
                       "requested": ([dict(b) for b in st.sent] if (st := self.sender.tracker.states.get(name))
                                     and st.sent is not None else None)}
                for name, d in self.last.items()}

"""The controller: store -> scheduler -> clusters -> store, once per tick.

Each tick (run in a worker thread, so the API's event loop never waits on Ray):
  1. refresh    every few seconds, each cluster's node resources (kept in the store).
  2. reconcile  every job that may have a Ray job is compared with what Ray reports, and
                adopts it; preemptions, overruns and stalls are followed up (reconcile.py).
  3. dispatch   the scheduler's plan for the PENDING queue is applied, write-ahead, and the
                plan feeds the autoscaler's demand (dispatch.py).
Both write through one Transitions (transitions.py): optimistic moves, with the budgets'
ledger and the cost record in the same transaction.

Restart = the same tick: reconciliation is not a special mode, so it is exercised all
the time. Writes use optimistic locking (jobs.version): if the API changed a job while
the controller looked at Ray, the controller's write fails and the next tick decides again.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings
from trainyard.controller.dispatch import Dispatcher
from trainyard.controller.pacing import Pacer, RequestGauge, pause_after
from trainyard.controller.queue import QueueMirror
from trainyard.controller.reconcile import Reconciler
from trainyard.controller.transitions import Transitions
from trainyard.errors import ClusterError, NotFoundError
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo

__all__ = ["Controller", "pause_after"]

log = logging.getLogger("trainyard.controller")


class Controller:
    """The three steps' owner: it holds what they share (the store, the clusters, the queue in
    memory, cluster health) and runs them in order."""

    def __init__(self, db: Database, registry: ClusterRegistry, settings: Settings, *,
                 resources_interval_s: float = 2.0, resync_interval_s: float = 15.0,
                 replan_interval_s: float = 15.0, positions_interval_s: float = 10.0,
                 projects_interval_s: float = 60.0, commit=None, requests: RequestGauge | None = None):
        """`commit`: how the tick's "waiting" notes are written (the server passes its group
        committer's `run`, so that they share the submissions' commits; see Dispatcher).
        `requests`: the API's request count; while it moves, ticks keep to
        `controller_busy_share` of the CPU (pacing.py)."""
        self.db = db
        self.registry = registry
        self.settings = settings
        self.resources_interval_s = resources_interval_s
        self.health: dict[str, dict[str, Any]] = {}
        self.ticks = 0
        self.last_tick_at: float | None = None
        self.last_error: str | None = None
        self.last_wait_s: float | None = None  # the loop's pause after its last tick (pause_after)
        self.last_tick_cpu_s = 0.0  # the CPU its thread spent in the loop's last tick
        self._last_refresh = 0.0
        self._tick_lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None  # made in start(), on the running loop
        # demand-driven autoscaling (trainyard.clusters.demand): own module, own state
        from trainyard.controller.cost_sink import CostSink
        from trainyard.controller.demand import DemandStep

        self.demand = DemandStep(db, registry.client, health=self.health)
        # the loop's ticks rest within themselves too (pacing.py)
        self.pacer = Pacer(settings.controller_max_share, busy_share=settings.controller_busy_share,
                           activity=(lambda: requests.started) if requests is not None else None)
        # the queue in memory (queue.py)
        self.queue = QueueMirror(db, resync_interval_s=resync_interval_s, pace=self.pacer.step)
        self.moves = Transitions(db, CostSink(settings.mlflow_uri))
        self.dispatcher = Dispatcher(db, registry, settings, self.moves, health=self.health, demand=self.demand,
                                     queue=self.queue, replan_interval_s=replan_interval_s,
                                     positions_interval_s=positions_interval_s,
                                     projects_interval_s=projects_interval_s, commit=commit,
                                     pace=self.pacer.step, busy=self.pacer.busy)
        self.reconciler = Reconciler(db, registry, settings, self.moves, submit=self.dispatcher.submit)

    # ------------------------------------------------------------------ what tests and the API reach
    def reconcile(self) -> None:
        self.reconciler.reconcile()

    def dispatch(self) -> None:
        self.dispatcher.dispatch()

    def projects_changed(self) -> None:
        """A project's weight, quota or budget changed (the API calls this): read them again."""
        self.dispatcher.projects_changed()

    # Counters and figures live with the step that keeps them (controller.dispatcher.plans,
    # .reconciler.clock, .moves.usage_records): no pass-through properties here, so each has
    # one home and one name.

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="trainyard-controller")

    async def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=15)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()

    async def _run(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self._cpu_timed_tick)
            except Exception as exc:  # the loop must survive anything one tick does
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("controller tick failed")
            self.last_wait_s = pause_after(self.last_tick_cpu_s, poll_interval_s=self.settings.poll_interval_s,
                                           max_share=self.pacer.tick_share,
                                           slept_s=self.pacer.slept_s)
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.last_wait_s)
            except asyncio.TimeoutError:
                pass

    def _cpu_timed_tick(self) -> None:
        # CPU time, not wall time: a tick that waits on Ray's dashboard or the store's lock
        # leaves the CPU to the API, and pacing it would only delay dispatch (a job asked to
        # leave for a preemption would be stopped seconds later)
        started = time.thread_time()
        try:
            with self.pacer.pacing():
                self.tick()
        finally:
            self.last_tick_cpu_s = time.thread_time() - started

    def tick(self, *, refresh: bool | None = None) -> None:
        with self._tick_lock:
            now = time.monotonic()
            if refresh or (refresh is None and now - self._last_refresh >= self.resources_interval_s):
                self.refresh_clusters()
                self._last_refresh = now
            self.reconcile()
            self.dispatch()
            self.reconciler.prune(set(self.queue.active))
            try:
                if self.demand.enabled:
                    self.demand.tick(self.dispatcher.demands)
            except Exception:  # autoscaling hints must never stop dispatching
                log.exception("autoscaler demand step failed")
            self.ticks += 1
            self.last_tick_at = time.time()
            self.last_error = None

    # ------------------------------------------------------------------ 1. resources
    def refresh_clusters(self) -> None:
        for name in self.registry.names():
            try:
                resources = self.registry.client(name).resources()
            except (ClusterError, NotFoundError) as exc:
                self.health[name] = {"ok": False, "error": str(exc), "at": time.time()}
                with self.db.session() as s:
                    clusters_repo.record_error(s, name, str(exc))
                continue
            except Exception as exc:  # malformed answer: treat as unreachable, keep going
                self.health[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "at": time.time()}
                continue
            self.health[name] = {"ok": True, "error": None, "at": time.time()}
            with self.db.session() as s:
                clusters_repo.record_resources(s, name, resources)
            self.registry.invalidate()  # submissions' capacity checks see what the cluster has now

    # ------------------------------------------------------------------ status
    def snapshot(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "last_tick_at": (datetime.fromtimestamp(self.last_tick_at, tz=timezone.utc).isoformat()
                             .replace("+00:00", "Z") if self.last_tick_at else None),
            "last_error": self.last_error,
            "poll_interval_s": self.settings.poll_interval_s,
            "last_wait_s": round(self.last_wait_s, 3) if self.last_wait_s is not None else None,
            "busy_rests": self.pacer.busy_rests,
            "autoscaler_demand": self.demand.snapshot(),
            "queue": {"pending": len(self.queue.pending), "active": len(self.queue.active),
                      "plans": self.dispatcher.plans, "skipped": self.dispatcher.skipped, "scans": self.queue.scans,
                      "rows_read": self.queue.rows_read, "notes_written": self.dispatcher.notes_written,
                      "preemptions": self.dispatcher.preemptions,
                      "last_plan_ms": round(self.dispatcher.last_plan_s * 1000, 1) if self.dispatcher.last_plan_s is not None else None,
                      "last_dispatch_ms": (round(self.dispatcher.last_tick_s * 1000, 1) if self.dispatcher.last_tick_s is not None
                                           else None)},
        }

"""The controller: store -> scheduler -> clusters -> store, once per tick.

Each tick (run in a worker thread, so the API's event loop never waits on Ray):
  1. refresh  every few seconds, each cluster's node resources (kept in the store).
  2. reconcile  every job that may have a Ray job (DISPATCHING/SUBMITTED/RUNNING/CANCELLING)
     is compared with what Ray reports for its submission_id, and adopts it:
       Ray has no such job   DISPATCHING -> submit again with the same submission_id
                             SUBMITTED   -> re-queued (PENDING, next attempt): it never started
                             RUNNING     -> FAILED ("the driver is gone")
                             CANCELLING  -> CANCELLED
       Ray PENDING/RUNNING   -> SUBMITTED/RUNNING (CANCELLING: ask Ray to stop, again)
       Ray SUCCEEDED/FAILED  -> same, with TRAINYARD_RESULT parsed from the logs
       Ray STOPPED           -> CANCELLED
  3. dispatch  the scheduler's decisions for the PENDING queue. Write-ahead: the attempt,
     the submission_id and the cluster are committed (DISPATCHING) *before* Ray is called.
     A crash between the two is repaired by step 2, and Ray refuses a second job with
     the same submission_id: a job never runs twice.

Restart = the same tick: reconciliation is not a special mode, so it is exercised all
the time. Writes use optimistic locking (jobs.version): if the API changed a job while
the controller looked at Ray, the controller's write fails and the next tick decides again.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.orm.exc import StaleDataError

from trainyard import redact
from trainyard.clusters.ray_client import SubmitRejected
from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings
from trainyard.controller import runtime, views
from trainyard.controller.service import packages_dir
from trainyard.errors import ClusterError, NotFoundError
from trainyard.scheduler import DISPATCH, REJECT, WAIT, schedule
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow

__all__ = ["Controller"]

log = logging.getLogger("trainyard.controller")
_MESSAGE_LIMIT = 2000
_UNREACHABLE = "unreachable: "


def _failpoint(name: str) -> None:
    """Die here, as a crash would, when $TRAINYARD_FAILPOINT names this point (crash tests)."""
    if os.environ.get("TRAINYARD_FAILPOINT") == name:
        log.warning("failpoint %s: exiting as a crash would", name)
        os._exit(17)


def _ray_time(ms: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(ms) / 1000.0, tz=timezone.utc) if ms else None
    except (TypeError, ValueError):
        return None


class Controller:
    def __init__(self, db: Database, registry: ClusterRegistry, settings: Settings, *,
                 resources_interval_s: float = 2.0):
        self.db = db
        self.registry = registry
        self.settings = settings
        self.resources_interval_s = resources_interval_s
        self.health: dict[str, dict[str, Any]] = {}
        self.ticks = 0
        self.last_tick_at: float | None = None
        self.last_error: str | None = None
        self._last_refresh = 0.0
        self._tick_lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None  # made in start(), on the running loop
        # demand-driven autoscaling (trainyard.clusters.demand): own module, own state
        from trainyard.controller.demand import DemandStep

        self.demand = DemandStep(db, registry.client, health=self.health)

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
                await asyncio.to_thread(self.tick)
            except Exception as exc:  # the loop must survive anything one tick does
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("controller tick failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.poll_interval_s)
            except asyncio.TimeoutError:
                pass

    def tick(self, *, refresh: bool | None = None) -> None:
        with self._tick_lock:
            now = time.monotonic()
            if refresh or (refresh is None and now - self._last_refresh >= self.resources_interval_s):
                self.refresh_clusters()
                self._last_refresh = now
            self.reconcile()
            self.dispatch()
            try:
                self.demand.tick()
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

    # ------------------------------------------------------------------ 2. reconcile
    def reconcile(self) -> None:
        with self.db.session() as s:
            active = [(j.id, j.phase, j.cluster, j.submission_id, j.message) for j in jobs_repo.active_jobs(s)]
        for job_id, phase, cluster, submission_id, message in active:
            try:
                self._reconcile_one(job_id, phase, cluster, submission_id, message)
            except StaleDataError:
                log.info("job %s changed while reconciling; next tick decides", job_id)
            except ClusterError as exc:
                # state unknown, not changed: a network blip must not fail a healthy job
                self._note(job_id, f"{_UNREACHABLE}state unknown, {exc.message}")

    def _note(self, job_id: str, message: str) -> None:
        try:
            with self.db.session() as s:
                job = jobs_repo.find_job(s, job_id)
                if job is not None and job.phase not in st.TERMINAL and job.message != message:
                    jobs_repo.update_job(s, job, message=message[:_MESSAGE_LIMIT])
        except StaleDataError:
            pass

    def _reconcile_one(self, job_id: str, phase: str, cluster: str | None, submission_id: str | None,
                       message: str | None = None) -> None:
        if not cluster or not submission_id:
            self._move(job_id, phase, st.FAILED, reason="inconsistent record: active without a submission",
                       message="internal error: the job was marked dispatched without a Ray submission id")
            return
        if cluster not in self.registry.names():
            self._move(job_id, phase, st.FAILED, reason=f"cluster '{cluster}' was removed",
                       message=f"cluster '{cluster}' was removed while the job was on it")
            return
        client = self.registry.client(cluster)
        info = client.status(submission_id)
        if info is None:
            self._adopt_missing(job_id, phase, cluster, submission_id)
            return
        ray_phase = st.ray_status_to_phase(info.get("status", ""))
        if phase == st.CANCELLING:
            if ray_phase in (st.SUBMITTED, st.RUNNING):
                client.stop(submission_id)
                return
            self._finish(job_id, phase, ray_phase, info, client, submission_id, cancelling=True)
            return
        if ray_phase == phase and message and message.startswith(_UNREACHABLE):
            # the cluster answers again: drop the "did not answer" note
            self._note(job_id, "running" if phase == st.RUNNING else "submitted; Ray is starting the driver")
        if ray_phase in st.TERMINAL:
            self._finish(job_id, phase, ray_phase, info, client, submission_id)
        elif ray_phase != phase and st.can_transition(phase, ray_phase):
            reason = "Ray accepted the job" if ray_phase == st.SUBMITTED else "the job driver started"
            self._move(job_id, phase, ray_phase, reason=reason,
                       message="running" if ray_phase == st.RUNNING else "submitted; Ray is starting the driver")

    def _adopt_missing(self, job_id: str, phase: str, cluster: str, submission_id: str) -> None:
        if phase == st.DISPATCHING:
            # The write-ahead record exists but Ray never got (or never kept) the job:
            # send it again under the same submission_id.
            self._submit(job_id)
        elif phase == st.SUBMITTED:
            self._move(job_id, phase, st.PENDING,
                       reason=f"Ray on '{cluster}' has no job {submission_id} (cluster restarted?); "
                              "it never started, so it is queued again",
                       message="re-queued: the cluster lost the job before it started")
        elif phase == st.RUNNING:
            self._move(job_id, phase, st.FAILED,
                       reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message=f"the job driver is gone: cluster '{cluster}' has no record of submission "
                               f"{submission_id} (was the cluster restarted?); submit the job again")
        elif phase == st.CANCELLING:
            self._move(job_id, phase, st.CANCELLED, reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message="cancelled (the cluster had nothing left to stop)")

    def _move(self, job_id: str, expected: str, new: str, *, reason: str, at: datetime | None = None,
              **fields: Any) -> bool:
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != expected:
                return False  # someone else moved it: the next tick looks again
            if "message" in fields and fields["message"]:
                fields["message"] = str(fields["message"])[:_MESSAGE_LIMIT]
            jobs_repo.transition(s, job, new, reason=reason, at=at, **fields)
        log.info("job %s: %s -> %s (%s)", job_id, expected, new, reason)
        return True

    def _finish(self, job_id: str, phase: str, ray_phase: str, info: dict, client, submission_id: str,
                *, cancelling: bool = False) -> None:
        from trainyard.runner.protocol import ERROR, parse_line

        try:
            text = client.logs(submission_id) or ""
        except ClusterError:
            text = ""
        result = None
        error_payload = None
        for line in text.splitlines():
            parsed = parse_line(line)
            if parsed and parsed[0] == "TRAINYARD_RESULT":
                result = parsed[1]
            elif parsed and parsed[0] == ERROR:
                error_payload = parsed[1]
        with self.db.session() as s:
            spec = (jobs_repo.find_job(s, job_id) or JobRow(spec={})).spec or {}
        secrets = runtime.secret_values(spec, self.settings)
        fields: dict[str, Any] = {}
        if ray_phase == st.SUCCEEDED:
            message = "succeeded" if result else "succeeded, but the runner printed no TRAINYARD_RESULT line"
            reason = "Ray reports SUCCEEDED"
        elif ray_phase == st.FAILED:
            ray_msg = (info.get("message") or "").strip()
            first = ray_msg.splitlines()[0] if ray_msg else "the job failed"
            if error_payload:
                message = f"{error_payload.get('error', 'error')}: {error_payload.get('message', '')}".strip()
                message = f"{message} ({first})"
            else:
                tail = [ln for ln in text.splitlines() if ln.strip()][-5:]
                message = first + ("\nlast log lines:\n" + "\n".join(tail) if tail else "")
            reason = f"Ray reports FAILED: {first}"
        else:
            message = "cancelled" if cancelling else "stopped on the cluster (not through Trainyard)"
            reason = "Ray reports STOPPED"
        message = redact.redact(message, secrets)
        if result is not None:
            fields["result"] = result
            fields["mlflow_run_id"] = result.get("mlflow_run_id")
            fields["mlflow_experiment_id"] = (str(result["mlflow_experiment_id"])
                                              if result.get("mlflow_experiment_id") is not None else None)
        started = _ray_time(info.get("start_time"))
        self._move(job_id, phase, ray_phase, reason=reason, at=_ray_time(info.get("end_time")),
                   message=message, **fields)
        # a job that finished before we ever saw it RUNNING still gets a start time
        if started is not None:
            with self.db.session() as s:
                job = jobs_repo.find_job(s, job_id)
                if job is not None and job.started_at is None:
                    jobs_repo.update_job(s, job, started_at=started)

    # ------------------------------------------------------------------ 3. dispatch
    def dispatch(self) -> None:
        with self.db.session() as s:
            pending = jobs_repo.pending_jobs(s)
            if not pending:
                return
            queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                      project=j.project) for j in pending]
            messages = {j.id: j.message for j in pending}
            reserved = views.reserved_by_cluster(jobs_repo.active_jobs(s))
            cluster_rows = clusters_repo.list_clusters(s)
        cluster_views = []
        for row in cluster_rows:
            healthy = self.health.get(row.name, {}).get("ok", False)
            view = views.cluster_view(row, healthy=healthy, reserved=reserved.get(row.name))
            if view is not None:
                cluster_views.append(view)
        unknown = [r.name for r in cluster_rows if views.cluster_view(r) is None]
        for decision in schedule(queue, cluster_views):
            try:
                if decision.action == DISPATCH:
                    self._write_ahead(decision.job_id, decision.cluster)
                    _failpoint("after_write_ahead")
                    self._submit(decision.job_id)
                elif decision.action == REJECT:
                    job = next(q for q in queue if q.id == decision.job_id)
                    if job.cluster is None and unknown or job.cluster in unknown:
                        # a cluster we know nothing about yet might take it: keep waiting
                        self._note(decision.job_id, f"waiting: nothing known yet about cluster(s) "
                                                    f"{', '.join(unknown)}")
                        continue
                    self._move(decision.job_id, st.PENDING, st.FAILED, reason="rejected by the scheduler",
                               message=f"{decision.field}: {decision.reason}" if decision.field else decision.reason)
                elif decision.action == WAIT:
                    text = f"waiting: {decision.reason}"
                    if messages.get(decision.job_id) != text:
                        self._note(decision.job_id, text)
            except StaleDataError:
                log.info("job %s changed while dispatching; next tick decides", decision.job_id)

    def _write_ahead(self, job_id: str, cluster: str) -> None:
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != st.PENDING:
                return
            attempt = job.attempt + 1
            jobs_repo.transition(s, job, st.DISPATCHING, reason=f"admitted to cluster '{cluster}'",
                                 attempt=attempt, cluster=cluster,
                                 submission_id=jobs_repo.submission_id_for(job.id, attempt),
                                 message=f"dispatching to cluster '{cluster}'")
        log.info("job %s: PENDING -> DISPATCHING (cluster '%s', attempt %d)", job_id, cluster, attempt)

    def _submit(self, job_id: str) -> None:
        """Send a DISPATCHING job to Ray under its recorded submission_id (idempotent)."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != st.DISPATCHING:
                return
            cluster, submission_id, spec, package = job.cluster, job.submission_id, job.spec, job.package
            attempt, kind = job.attempt, job.kind
        client = self.registry.client(cluster)
        working_dir = None
        try:
            if package:
                path = packages_dir(self.settings) / f"{package}.zip"
                if not path.exists():
                    self._move(job_id, st.DISPATCHING, st.FAILED, reason="working_dir package missing",
                               message=f"working_dir: the uploaded folder ({path.name}) is gone from the "
                                       f"server's package store; submit the job again")
                    return
                working_dir = client.upload_package(path.read_bytes())
            env = runtime.runtime_env_for(job_id, spec, self.settings, working_dir_uri=working_dir)
            outcome = client.submit(submission_id=submission_id,
                                    entrypoint=runtime.entrypoint_for(job_id, self.settings, kind=kind),
                                    runtime_env=env, metadata={"trainyard_job_id": job_id,
                                                               "trainyard_attempt": attempt},
                                    secrets=runtime.secret_values(spec, self.settings))
        except SubmitRejected as exc:
            self._move(job_id, st.DISPATCHING, st.FAILED, reason="Ray refused the submission",
                       message=exc.message)
            return
        except ClusterError as exc:
            # unknown outcome (network): stay DISPATCHING; reconciliation asks Ray next tick
            self._note(job_id, f"dispatching to cluster '{cluster}': {exc.message}; retrying")
            return
        _failpoint("after_submit")
        self._move(job_id, st.DISPATCHING, st.SUBMITTED,
                   reason="Ray accepted the job" if outcome == "submitted"
                   else "Ray already had this submission (resubmitted after a restart)",
                   message="submitted; Ray is starting the driver")

    # ------------------------------------------------------------------ status
    def snapshot(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "last_tick_at": (datetime.fromtimestamp(self.last_tick_at, tz=timezone.utc).isoformat()
                             .replace("+00:00", "Z") if self.last_tick_at else None),
            "last_error": self.last_error,
            "poll_interval_s": self.settings.poll_interval_s,
            "autoscaler_demand": self.demand.snapshot(),
        }

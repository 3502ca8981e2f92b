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
       PREEMPTING: Ray still running -> ask it to stop again (Ray's stop_job sends SIGTERM;
                             the driver checkpoints at the next step boundary); ended ->
                             PREEMPTED (queued again, place kept; checkpointed or, past
                             the grace period, killed by Ray and the steps since its last
                             checkpoint lost)
  3. dispatch  plan_tick's plan for the PENDING queue (fair share across projects, why
     pending, positions, estimated starts), from the queue held in memory (queue.py: only
     what changed is read) and planned only when a job, a cluster or its health changed;
     the "waiting" reasons of jobs whose reason changed go in one batched write, and the
     same plan feeds the autoscaler's demand (demand.py). Write-ahead: the attempt,
     the submission_id and the cluster are committed (DISPATCHING) *before* Ray is called.
     A crash between the two is repaired by step 2, and Ray refuses a second job with
     the same submission_id: a job never runs twice.
     The plan's preemptions are applied here too: the victim goes RUNNING -> PREEMPTING
     (write-ahead again) and then Ray is asked to stop it (see runner/preempt.py).

Restart = the same tick: reconciliation is not a special mode, so it is exercised all
the time. Writes use optimistic locking (jobs.version): if the API changed a job while
the controller looked at Ray, the controller's write fails and the next tick decides again.
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, bindparam, literal, or_, update
from sqlalchemy.orm.exc import StaleDataError

from trainyard import redact
from trainyard.clusters.ray_client import SubmitRejected
from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings
from trainyard.controller import costs, quotas, runtime, views
from trainyard.controller.queue import QUIET, QueueMirror
from trainyard.controller.service import packages_dir
from trainyard.controller.stall import RESUMED, STALLED, StallWatch, policy_for
from trainyard.errors import ClusterError, NotFoundError
from trainyard.scheduler import ClusterView, QueuedJob, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.model import Project, UsageRecord
from trainyard.scheduler.preemption import LEAVING, Preemption
from trainyard.scheduler.reasons import CLUSTER_UNHEALTHY, Pending, Reason
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow, utcnow

__all__ = ["Controller"]

log = logging.getLogger("trainyard.controller")
_MESSAGE_LIMIT = 2000
_UNREACHABLE = "unreachable: "
_OVERRUN = "ran past its max_runtime_s"


def _overrun(job: JobRow, now: datetime) -> str | None:
    """The stop note of a RUNNING job past its declared max_runtime_s, else None. Backfill let
    it start on that promise, so a job that breaks it would delay the job it jumped."""
    limit = (job.spec or {}).get("max_runtime_s")
    if job.phase != st.RUNNING or not limit or job.started_at is None:
        return None
    ran = (now - job.started_at).total_seconds()
    return f"{_OVERRUN} ({int(limit)} s; it ran {ran:.0f} s)" if ran > limit else None
_HOLDING = (st.RUNNING, st.STALLED, st.CANCELLING, st.PREEMPTING)  # phases whose job holds what it asked for


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
                 resources_interval_s: float = 2.0, resync_interval_s: float = 15.0,
                 replan_interval_s: float = 15.0, positions_interval_s: float = 10.0,
                 projects_interval_s: float = 60.0):
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
        # the queue in memory (queue.py) and what the last plan depended on
        self.queue = QueueMirror(db, resync_interval_s=resync_interval_s)
        # Projects' weights, quotas and budgets come from the store (controller/quotas.py), read
        # again when one changes (projects_changed(), or every projects_interval_s for
        # changes made through another server). Preemption: settings.preemption*.
        self.tick_config = TickConfig(preemption=settings.preemption,
                                      min_runtime_s=settings.preemption_min_runtime_s).validate()
        self.preemptions = 0
        self.projects_interval_s = projects_interval_s
        self._projects: dict[str, Project] = {}
        self._projects_read_at = float("-inf")
        self._projects_stale = True
        self._projects_rev = 0
        self.usage_records = 0
        self.replan_interval_s = replan_interval_s
        self.positions_interval_s = positions_interval_s
        self._plan_key: str | None = None
        self._planned_at = float("-inf")
        self._positions_at = float("-inf")
        self._demands: dict = {}
        self._last_demand_inputs: tuple = ([], [], [], {}, [])
        self._last_demand_key: tuple = ()
        self.plans = 0
        self.skipped = 0
        self.notes_written = 0
        self.last_plan_s: float | None = None
        self.last_tick_s: float | None = None
        # stuck-job detection (stall.py): steps seen per running job, on this clock (tests
        # put a fake one here), with the job's logs read at most every few seconds
        self.clock = time.monotonic
        self.stalls = StallWatch()
        self._stall_checked: dict[str, float] = {}
        self._stall_policies: dict[str, Any] = {}
        self.stalled_jobs = 0
        from trainyard.controller.cost_sink import CostSink

        self.cost_sink = CostSink(settings.mlflow_uri)

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
            self._prune_stalls()
            try:
                if self.demand.enabled:
                    self.demand.tick(self._demands)
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
        now = datetime.now(timezone.utc)
        with self.db.session() as s:
            active = [(j.id, j.phase, j.cluster, j.submission_id, j.message, j.preempt_requested_at,
                       _overrun(j, now)) for j in jobs_repo.active_jobs(s)]
        for job_id, phase, cluster, submission_id, message, asked_at, overrun in active:
            try:
                if phase == st.PREEMPTING:
                    self._reconcile_preempting(job_id, cluster, submission_id, asked_at)
                    continue
                if overrun and self._move(job_id, phase, st.CANCELLING, reason="max_runtime_s reached",
                                          cancel_requested=1, message=overrun):
                    phase, message = st.CANCELLING, overrun
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
        if phase == st.STALLED and ray_phase == st.CANCELLED:
            self._stalled_and_stopped(job_id)
            return
        if phase == st.CANCELLING:
            if ray_phase in (st.SUBMITTED, st.RUNNING):
                client.stop(submission_id)
                return
            self._finish(job_id, phase, ray_phase, info, client, submission_id, cancelling=True, note=message)
            return
        if ray_phase == phase and message and message.startswith(_UNREACHABLE):
            # the cluster answers again: drop the "did not answer" note
            self._note(job_id, "running" if phase == st.RUNNING else "submitted; Ray is starting the driver")
        if phase in (st.RUNNING, st.STALLED) and ray_phase == st.RUNNING:
            self._check_stall(job_id, phase, cluster, submission_id, client)
            return
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
        elif phase in (st.RUNNING, st.STALLED):
            self._move(job_id, phase, st.FAILED,
                       reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message=f"the job driver is gone: cluster '{cluster}' has no record of submission "
                               f"{submission_id} (was the cluster restarted?); submit the job again")
        elif phase == st.CANCELLING:
            self._move(job_id, phase, st.CANCELLED, reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message="cancelled (the cluster had nothing left to stop)")

    # ------------------------------------------------------------------ preemption
    def _preempt(self, p: Preemption) -> None:
        """Ask a running victim to checkpoint and stop: PREEMPTING first (write-ahead: a crash
        after it leaves a record that the next tick's reconcile finishes), then Ray's stop_job,
        whose SIGTERM the driver turns into "checkpoint at the next step boundary, then exit"
        (Ray waits the grace period before it kills: RAY_JOB_STOP_WAIT_TIME_S, runtime.py)."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, p.job_id)
            if job is None or job.phase != st.RUNNING or job.kind != "job":
                return  # it moved meanwhile (ended, cancelled): nothing to take
            jobs_repo.transition(s, job, st.PREEMPTING, reason=p.reason, preempt_requested_at=utcnow(),
                                 message=f"preempting: {p.reason}; asked to checkpoint and stop"[:_MESSAGE_LIMIT])
            cluster, submission_id = job.cluster, job.submission_id
        self.preemptions += 1
        log.info("job %s: RUNNING -> PREEMPTING (%s)", p.job_id, p.reason)
        _failpoint("after_preempting")
        try:
            self.registry.client(cluster).stop(submission_id)
        except (ClusterError, NotFoundError) as exc:  # reconcile asks again next tick
            log.warning("stop of %s on %s failed, will retry: %s", submission_id, cluster, exc)

    def _reconcile_preempting(self, job_id: str, cluster: str | None, submission_id: str | None,
                              asked_at: datetime | None) -> None:
        if not cluster or not submission_id or cluster not in self.registry.names():
            self._requeue_preempted(job_id, st.PREEMPTING, checkpoint=None, step=None,
                                    why=f"cluster '{cluster}' is gone")
            return
        client = self.registry.client(cluster)
        info = client.status(submission_id)
        if info is None:
            self._requeue_preempted(job_id, st.PREEMPTING, checkpoint=None, step=None,
                                    why=f"Ray on '{cluster}' has no job {submission_id}")
            return
        ray_phase = st.ray_status_to_phase(info.get("status", ""))
        if ray_phase in (st.SUBMITTED, st.RUNNING):
            # Ask again (idempotent for Ray): the first stop may not have arrived. Ray kills
            # the driver itself once the grace period is over; this only says so.
            client.stop(submission_id)
            waited = (utcnow() - asked_at).total_seconds() if asked_at else 0.0
            if waited > self.settings.preemption_grace_s:
                # the same words every tick: _note writes only a change
                self._note(job_id, f"preempting: no checkpoint within the grace period "
                                   f"({self.settings.preemption_grace_s:g}s); Ray is stopping the job")
            return
        self._finish(job_id, st.PREEMPTING, ray_phase, info, client, submission_id)

    def _requeue_preempted(self, job_id: str, expected: str, *, checkpoint: str | None, step: Any,
                           why: str, at: datetime | None = None, started: datetime | None = None) -> bool:
        """PREEMPTING (or RUNNING, for a stop notice nobody here sent) -> PREEMPTED: queued
        again with its place (created_at) kept, the attempt's usage closed with reason
        "preemption", the time since the request added to preempted_s."""
        end = at or utcnow()
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != expected:
                return False
            if started is not None and (job.started_at is None or started < job.started_at):
                job.started_at = started
            asked = job.preempt_requested_at
            held = max(0.0, (end - asked).total_seconds()) if asked is not None else 0.0
            if checkpoint:
                message = (f"preempted at step {step}: checkpoint saved ({checkpoint}); queued again with its "
                           f"place kept, it resumes from there")
                reason = f"preempted: checkpointed at step {step} ({checkpoint})"
            else:
                message = (f"preempted without a fresh checkpoint ({why}): the steps since its last checkpoint are "
                           f"lost; queued again with its place kept")
                reason = f"preempted: {why}; no checkpoint at the stop, steps since the last one lost"
            # the ledger's entry for this attempt first: it reads started_at, which the next
            # attempt's start replaces
            if quotas_repo.record_usage(s, job, resources=views.job_demand(job), ended_at=end, reason="preemption"):
                self.usage_records += 1
            jobs_repo.transition(s, job, st.PREEMPTED, reason=reason, at=end, message=message[:_MESSAGE_LIMIT],
                                 preemptions=int(job.preemptions or 0) + 1,
                                 preempted_s=float(job.preempted_s or 0.0) + held,
                                 preempt_requested_at=None, started_at=None)
        log.info("job %s: %s -> PREEMPTED (%s)", job_id, expected, reason)
        return True

    def _move(self, job_id: str, expected: str | frozenset, new: str, *, reason: str, at: datetime | None = None,
              started: datetime | None = None, **fields: Any) -> bool:
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or (job.phase not in expected if isinstance(expected, frozenset) else job.phase != expected):
                return False  # someone else moved it: the next tick looks again
            if "message" in fields and fields["message"]:
                fields["message"] = str(fields["message"])[:_MESSAGE_LIMIT]
            if started is not None and (job.started_at is None or started < job.started_at):
                # Ray's own start time: it finished before a tick saw it RUNNING, or a tick saw
                # it late (the ledger would count from the sighting, or nothing at all when the
                # sighting came after Ray's end time)
                job.started_at = started
            jobs_repo.transition(s, job, new, reason=reason, at=at, **fields)
            if new in st.TERMINAL or new == st.PENDING:
                # what the attempt held goes in the budgets' ledger, in the same transaction
                if quotas_repo.record_usage(s, job, resources=views.job_demand(job), ended_at=at or job.ended_at):
                    self.usage_records += 1
            if new == st.PENDING:
                # queued again (a stall's requeue): the attempt is on the ledger now, and the next
                # one starts its own clock, or the ledger and the cost record would count the wait
                job.started_at = None
            record = None
            if new in st.TERMINAL:
                # the cost record, from the ledger just written and the runner's figures
                record = self._cost_of(s, job)
                job.cost = record.to_dict() if record is not None else None
            run_id = job.mlflow_run_id
        if record is not None:
            self.cost_sink.submit(run_id, record)  # a copy into the job's MLflow run, off this thread
        log.info("job %s: %s -> %s (%s)", job_id, expected, new, reason)
        return True

    # ------------------------------------------------------------------ stalls
    def _prune_stalls(self) -> None:
        """Forget the steps of jobs that left the active set (the mirror was synced by dispatch)."""
        live = set(self.queue.active)
        self.stalls.keep_only(live)
        for job_id in [j for j in self._stall_checked if j not in live]:
            del self._stall_checked[job_id]
            self._stall_policies.pop(job_id, None)

    def _check_stall(self, job_id: str, phase: str, cluster: str, submission_id: str, client) -> None:
        """Read the job's last step (at most every few seconds) and act on a stall or a resume."""
        policy = self._stall_policies.get(job_id)
        if policy is None:  # the spec never changes: read once per job
            with self.db.session() as s:
                job = jobs_repo.find_job(s, job_id)
                policy = policy_for((job.spec if job is not None else None) or {}, self.settings)
            self._stall_policies[job_id] = policy
        now = self.clock()
        every = min(30.0, max(self.settings.poll_interval_s, policy.timeout_s / 10))
        if now - self._stall_checked.get(job_id, float("-inf")) < every:
            return
        self._stall_checked[job_id] = now
        from trainyard.protocol import last_progress

        progress = last_progress(client.logs(submission_id) or "") or {}
        step = progress.get("step")
        seen = self.stalls.observe(job_id, step, now=now, timeout_s=policy.timeout_s)
        if seen == STALLED and phase == st.RUNNING:
            idle = self.stalls.idle_for(job_id, now=now)
            what = f"no step for {idle:.0f} s" + (f" (last step {step})" if step is not None else " (no step yet)")
            action = {"none": "left running (on_stall: none)", "stop": "stopping it (on_stall: stop)",
                      "requeue": "stopping it to queue it again (on_stall: requeue)"}[policy.on_stall]
            if self._move(job_id, phase, st.STALLED, reason=f"stalled: {what}",
                          message=f"stalled: {what}; {action}"):
                self.stalled_jobs += 1
                phase = st.STALLED
        elif seen == RESUMED and phase == st.STALLED:
            self._move(job_id, phase, st.RUNNING, reason=f"a step arrived again (step {step})", message="running")
            return
        if phase == st.STALLED and policy.on_stall != "none":
            client.stop(submission_id)  # again each check until Ray reports STOPPED

    def _stalled_and_stopped(self, job_id: str) -> None:
        """Ray stopped a STALLED job: queue it again (it resumes from its checkpoint) or fail it."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None:
                return
            spec = job.spec or {}
            stalls = sum(1 for e in jobs_repo.list_events(s, job_id) if e.to_phase == st.STALLED)
        policy = policy_for(spec, self.settings)
        self.stalls.forget(job_id)
        if policy.outcome(stalls_so_far=stalls) == "requeue":
            self._move(job_id, st.STALLED, st.PENDING, reason="stalled and stopped: queued again",
                       message="re-queued after a stall; the next attempt resumes from the last checkpoint")
        else:
            why = ("on_stall: stop" if policy.on_stall != "requeue"
                   else f"it stalled {stalls} times, more than stall_max_requeues ({policy.max_requeues})")
            self._move(job_id, st.STALLED, st.FAILED, reason=f"stalled and stopped ({why})",
                       message=f"stalled: its workers reported no step for {policy.timeout_s:.0f} s, so it was "
                               f"stopped ({why}); look at `trainyard jobs logs` for where it hung")

    def _cost_of(self, s, job: JobRow):
        try:
            row = clusters_repo.find_cluster(s, job.cluster) if job.cluster else None
            record = costs.record_for(job, attempts=quotas_repo.attempts_of(s, job.id),
                                      finished_at=job.ended_at or datetime.now(timezone.utc),
                                      prices=costs.prices_of(row.max_resources if row is not None else None))
        except Exception:  # a cost record must never keep a job from ending
            log.exception("job %s: no cost record", job.id)
            return None
        return record

    def _finish(self, job_id: str, phase: str, ray_phase: str, info: dict, client, submission_id: str,
                *, cancelling: bool = False, note: str | None = None) -> None:
        from trainyard.protocol import ERROR, PREEMPTED, RESULT, parse_line

        try:
            text = client.logs(submission_id) or ""
        except ClusterError:
            text = ""
        result = None
        error_payload = None
        preempted = None
        for line in text.splitlines():
            parsed = parse_line(line)
            if parsed and parsed[0] == RESULT:
                result = parsed[1]
            elif parsed and parsed[0] == ERROR:
                error_payload = parsed[1]
            elif parsed and parsed[0] == PREEMPTED:
                preempted = parsed[1]
        # asked to stop by us (PREEMPTING), or it took a stop notice on its own (SIGTERM from a
        # node going away: exit 75, which Ray reports FAILED; a `ray job stop` behind our back
        # reads STOPPED and stays a cancellation): it checkpointed, or it was killed before it could
        noticed = preempted is not None and ray_phase != st.CANCELLED
        if result is None and not cancelling and (phase == st.PREEMPTING or noticed):
            at, started = _ray_time(info.get("end_time")), _ray_time(info.get("start_time"))
            if preempted is not None:
                self._requeue_preempted(job_id, phase, checkpoint=preempted.get("checkpoint") or "unknown",
                                        step=preempted.get("step"), why="", at=at, started=started)
                return
            if not (ray_phase == st.FAILED and error_payload is not None):  # else: it failed on its own
                self._requeue_preempted(job_id, phase, checkpoint=None, step=None,
                                        why=f"Ray reports {info.get('status')} and the job printed no checkpoint "
                                            f"line: killed after the {self.settings.preemption_grace_s:g}s grace "
                                            f"period, or before it could save", at=at, started=started)
                return
        if result is not None and ray_phase == st.CANCELLED and phase == st.PREEMPTING:
            # it finished its last step before the stop reached it: Ray says STOPPED because it
            # was asked to stop, but the job is done
            ray_phase = st.SUCCEEDED
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
            if cancelling and note and note.startswith(_OVERRUN):
                message = f"cancelled: {note}"
            reason = "Ray reports STOPPED"
        message = redact.redact(message, secrets)
        if result is not None:
            fields["result"] = result
            fields["mlflow_run_id"] = result.get("mlflow_run_id")
            fields["mlflow_experiment_id"] = (str(result["mlflow_experiment_id"])
                                              if result.get("mlflow_experiment_id") is not None else None)
        # a job that finished before we ever saw it RUNNING still gets a start time
        self._move(job_id, phase, ray_phase, reason=reason, at=_ray_time(info.get("end_time")),
                   started=_ray_time(info.get("start_time")), message=message, **fields)

    # ------------------------------------------------------------------ 3. dispatch
    def _clusters(self) -> tuple[list[ClusterView], list[str], dict[str, list]]:
        """Cluster views (our active jobs' holdings taken out), unknown clusters, live node totals."""
        with self.db.session() as s:
            rows = clusters_repo.list_clusters(s)
        reserved = views.reserved_by_cluster((a.cluster, a.job) for a in self.queue.active.values())
        out = []
        for row in rows:
            view = views.cluster_view(row, healthy=self.health.get(row.name, {}).get("ok", False),
                                      reserved=reserved.get(row.name))
            if view is not None:
                out.append(view)
        unknown = [r.name for r in rows if views.cluster_view(r) is None]
        live = {r.name: [dict(n.get("total") or {}) for n in (r.last_resources or {}).get("nodes") or []]
                for r in rows}
        return out, unknown, live

    def dispatch(self) -> None:
        """Plan the queue (plan_tick) and apply it, when anything it depends on changed.

        One read serves dispatch and the autoscaler's demand: the mirror (queue.py) and the
        cluster rows. Nothing changed (no job, no cluster, no health change) -> no work, except a
        fresh plan every `replan_interval_s` (estimated starts and backfill depend on time)."""
        # A plan allocates a few objects per queued job, all alive until the tick ends, so a
        # garbage collection in the middle of it finds nothing and walks the whole queue: a
        # third of the tick at 10,000 jobs (measured). They are freed by reference counting
        # when the tick ends, so collections are only held off, never skipped.
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._dispatch()
        finally:
            if enabled:
                gc.enable()

    def _dispatch(self) -> None:
        changed = self.queue.sync()
        cluster_views, unknown, live = self._clusters()
        now = time.time()
        projects = self._project_settings(now)
        key = repr([(v.name, v.healthy, v.nodes_free, v.nodes_total, v.max_nodes) for v in cluster_views] + unknown
                   + [self._projects_rev])
        if not changed and key == self._plan_key and now - self._planned_at < self.replan_interval_s:
            self.skipped += 1
            if self.demand.enabled and self._demand_key() != self._last_demand_key:
                self._plan_demand(*self._last_demand_inputs)
            return
        self._plan_key = None  # a tick that fails half-way plans again next time
        started = time.perf_counter()
        queue = [q.job for q in self.queue.pending.values()]
        # only a running job can be asked to checkpoint and stop (a sweep cannot); one asked
        # already is leaving, and the job it was chosen for counts on it
        running = [RunningJob(id=a.job.id, project=a.job.project, cluster=a.cluster, workers=a.job.workers,
                              per_worker=a.job.per_worker, priority=a.job.priority,
                              started_at=a.started_at.timestamp() if a.started_at else now,
                              max_runtime=a.job.max_runtime,
                              preemptible=a.phase == st.RUNNING and a.kind == "job",
                              leaving=a.phase == st.PREEMPTING)
                   for a in self.queue.active.values() if a.cluster]
        usage = self._usage(projects, now)
        plan = plan_tick(queue, running=running, clusters=cluster_views, projects=projects, usage=usage, now=now,
                         config=self.tick_config)
        self.plans += 1
        self.last_plan_s = time.perf_counter() - started
        dispatched: list[tuple[str, str | None, None, QueuedJob]] = []
        for d in plan.dispatch:
            try:
                if self._write_ahead(d.job_id, d.cluster):
                    dispatched.append((st.DISPATCHING, d.cluster, None, self.queue.pending[d.job_id].job))
                    _failpoint("after_write_ahead")
                    self._submit(d.job_id)
            except StaleDataError:
                log.info("job %s changed while dispatching; next tick decides", d.job_id)
        for p in plan.preempt:
            if p.kind == LEAVING:
                continue  # asked already
            try:
                self._preempt(p)
            except StaleDataError:
                log.info("job %s changed while preempting it; next tick decides", p.job_id)
        notes: list[tuple[str, str, Any]] = []
        for r in plan.reject:
            job = self.queue.pending[r.job_id].job
            if job.cluster is None and unknown or job.cluster in unknown:
                # a cluster we know nothing about yet might take it: keep waiting
                text = f"nothing known yet about cluster(s) {', '.join(unknown)}"
                notes.append((r.job_id, f"waiting: {text}", Pending(r.job_id, Reason(CLUSTER_UNHEALTHY, text), 0, 0)))
                continue
            try:
                self._move(r.job_id, st.QUEUED, st.FAILED, reason="rejected by the scheduler",
                           message=f"{r.field}: {r.reason}" if r.field else r.reason)
            except StaleDataError:
                log.info("job %s changed while rejecting; next tick decides", r.job_id)
        notes.extend((p.job_id, None, p) for p in plan.wait)
        self._write_notes(notes, now=now)
        self._planned_at = now
        self._plan_key = key
        self.last_tick_s = time.perf_counter() - started
        if self.demand.enabled:
            # only autoscaling clusters get a demand: no need for the decisions otherwise
            decisions = plan.decisions() if any(v.max_nodes is not None for v in cluster_views) else []
            self._plan_demand(queue, decisions, cluster_views, live, dispatched)

    # ------------------------------------------------------------------ projects, budgets
    def projects_changed(self) -> None:
        """A project's weight, quota or budget changed (the API calls this): read them again."""
        self._projects_stale = True

    def _project_settings(self, now: float) -> dict[str, Project]:
        """Projects with settings, from the store; the same dict (by identity) until they change."""
        if not self._projects_stale and now - self._projects_read_at < self.projects_interval_s:
            return self._projects
        self._projects_stale = False  # before the read: a change during it is read next time
        with self.db.session() as s:
            rows = [(r.name, r.weight, r.quota, r.budget) for r in quotas_repo.projects_with_settings(s)]
        fresh: dict[str, Project] = {}
        for name, weight, quota, budget in rows:
            try:
                fresh[name] = quotas.project_of(name, weight=weight, quota=quota, budget=budget).validate()
            except Exception as exc:  # a bad row must not stop scheduling: that project runs unlimited
                log.error("project %s: its quota or budget is invalid, ignored: %s", name, exc)
        self._projects_read_at = now
        if fresh != self._projects:
            self._projects = fresh
            self._projects_rev += 1
        return self._projects

    def _usage(self, projects: dict[str, Project], now: float) -> list[UsageRecord]:
        """What counts against budgets: the ledger of ended attempts (only projects with a
        budget, only within their window) and the running jobs held in memory."""
        budgeted = {n: p.budget for n, p in projects.items() if p.budget is not None}
        if not budgeted:
            return []
        window = max(b.window_s for b in budgeted.values())
        since = datetime.fromtimestamp(now - window, tz=timezone.utc)
        with self.db.session() as s:
            records = quotas.closed_usage(s, since=since, projects=budgeted)
        for a in self.queue.active.values():
            if a.job.project in budgeted and a.started_at is not None and a.phase in _HOLDING:
                records.append(UsageRecord(project=a.job.project, start=a.started_at.timestamp(), end=None,
                                           resources=a.job.demand))
        return records

    def _demand_key(self) -> tuple:
        now = datetime.now(timezone.utc)
        return tuple(sorted((i, self.demand.fresh(a.phase, a.started_at, now=now))
                            for i, a in self.queue.active.items()))

    def _plan_demand(self, queue, decisions, cluster_views, live, dispatched) -> None:
        """The autoscaler's demand from this tick's plan; jobs dispatched just now count as
        requested by us (Ray does not know their needs yet)."""
        self._last_demand_inputs = (queue, decisions, cluster_views, live, [])
        self._last_demand_key = self._demand_key()
        active = [(a.phase, a.cluster, a.started_at, a.job) for a in self.queue.active.values()] + dispatched
        self._demands = self.demand.plan_from(queue, decisions, cluster_views, active=active, live_nodes=live)

    def _write_notes(self, notes: list[tuple[str, str | None, Pending]], *, now: float) -> None:
        """Persist why jobs wait: one batched UPDATE, only rows whose reason changed.

        Positions and estimated starts move for every job behind one that leaves the queue;
        rewriting 10,000 rows for each dispatch would cost more than the plan, so a change of
        position alone is written at most every `positions_interval_s`. The write does not
        bump `version`: a note is advice, it must not make a user's cancel conflict, and it
        keeps the mirror's versions exact. It only lands while the job is PENDING at the
        version the mirror read (else the next scan reloads the row and decides again).
        `notes`: (job id, message or None for "waiting: <reason>", the scheduler's Pending)."""
        positions_due = now - self._positions_at >= self.positions_interval_s
        rows = []
        for job_id, message, p in notes:
            entry = self.queue.pending.get(job_id)
            if entry is None:
                continue
            spot = (p.position_in_queue, p.position_in_project, p.position_in_cluster, p.estimated_start)
            if entry.written is not None and entry.written[0] == p.reason:
                if not positions_due or entry.written[1] == spot:
                    continue  # nothing new to say (or only positions, and they are not due)
            message = (message or f"waiting: {p.reason.message}")[:_MESSAGE_LIMIT]
            record = views.pending_record(p) if p.position_in_queue else {
                "reason": p.reason.to_dict(), "position_in_queue": None, "position_in_project": None,
                "position_in_cluster": None, "estimated_start": None}
            old = entry.pending or {}
            if message == entry.message and old.get("reason") == record["reason"] and (not positions_due
                                                                                        or old == record):
                entry.written = (p.reason, spot)  # the store already says this (read at start)
                continue
            rows.append({"b_id": job_id, "b_version": entry.version, "b_message": message,
                         "b_result": {views.PENDING_KEY: record}, "free": entry.result_free,
                         "written": (p.reason, spot)})
        if positions_due:
            self._positions_at = now
        if not rows:
            return
        table = JobRow.__table__
        where = (table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"),
                 # literal phases, not IN (...): an expanding IN cannot go in an executemany
                 or_(*(table.c.phase == literal(p) for p in sorted(st.QUEUED))))
        with self.db.session() as s:
            full = [r for r in rows if r["free"]]
            if full:
                s.execute(update(table).where(*where).values(message=bindparam("b_message"),
                                                             result=bindparam("b_result", type_=JSON)),
                          full, execution_options={QUIET: True})
            kept = [r for r in rows if not r["free"]]  # a result of its own (a requeued job): keep it
            if kept:
                s.execute(update(table).where(*where).values(message=bindparam("b_message")),
                          kept, execution_options={QUIET: True})
        for row in rows:
            self.queue.noted(row["b_id"], message=row["b_message"], pending=row["b_result"][views.PENDING_KEY],
                             written=row["written"])
        self.notes_written += len(rows)

    def _write_ahead(self, job_id: str, cluster: str) -> bool:
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase not in st.QUEUED:
                return False
            attempt = job.attempt + 1
            extra = {"result": None} if views.pending_of(job.result) is not None else {}
            jobs_repo.transition(s, job, st.DISPATCHING, reason=f"admitted to cluster '{cluster}'",
                                 attempt=attempt, cluster=cluster,
                                 submission_id=jobs_repo.submission_id_for(job.id, attempt),
                                 message=f"dispatching to cluster '{cluster}'", **extra)
        log.info("job %s: queued -> DISPATCHING (cluster '%s', attempt %d)", job_id, cluster, attempt)
        return True

    def _submit(self, job_id: str) -> None:
        """Send a DISPATCHING job to Ray under its recorded submission_id (idempotent)."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != st.DISPATCHING:
                return
            cluster, submission_id, spec, package = job.cluster, job.submission_id, job.spec, job.package
            attempt, kind, owner, project = job.attempt, job.kind, job.owner, job.project
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
            env = runtime.runtime_env_for(job_id, spec, self.settings, owner=owner, project=project,
                                          working_dir_uri=working_dir,
                                          stop_wait_s=self.settings.preemption_grace_s if kind == "job" else None)
            outcome = client.submit(submission_id=submission_id,
                                    entrypoint=runtime.entrypoint_for(job_id, self.settings, kind=kind),
                                    runtime_env=env, metadata={"trainyard_job_id": job_id,
                                                               "trainyard_attempt": attempt,
                                                               "trainyard_user": owner,
                                                               "trainyard_project": project},
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
            "queue": {"pending": len(self.queue.pending), "active": len(self.queue.active),
                      "plans": self.plans, "skipped": self.skipped, "scans": self.queue.scans,
                      "rows_read": self.queue.rows_read, "notes_written": self.notes_written,
                      "preemptions": self.preemptions,
                      "last_plan_ms": round(self.last_plan_s * 1000, 1) if self.last_plan_s is not None else None,
                      "last_dispatch_ms": (round(self.last_tick_s * 1000, 1) if self.last_tick_s is not None
                                           else None)},
        }

"""Step 2 of a tick: every job that may have a Ray job is compared with what Ray reports, and adopts it.

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

A running job past its declared max_runtime_s is stopped (backfill let it start on that
promise), and one whose workers report no step for its stall timeout is STALLED and, by its
policy, stopped and queued again (stall.py).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy.orm.exc import StaleDataError

from trainyard import redact
from trainyard.controller import runtime
from trainyard.controller.stall import RESUMED, STALLED, StallWatch, policy_for
from trainyard.controller.transitions import Transitions
from trainyard.controller.views import worker_range
from trainyard.errors import ClusterError
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow, utcnow

__all__ = ["Reconciler", "OVERRUN"]

log = logging.getLogger("trainyard.controller")
_UNREACHABLE = "unreachable: "
OVERRUN = "ran past its max_runtime_s"


def _overrun(job: JobRow, now: datetime) -> str | None:
    """The stop note of a RUNNING job past its declared max_runtime_s, else None. Backfill let
    it start on that promise, so a job that breaks it would delay the job it jumped."""
    limit = (job.spec or {}).get("max_runtime_s")
    if job.phase != st.RUNNING or not limit or job.started_at is None:
        return None
    ran = (now - job.started_at).total_seconds()
    return f"{OVERRUN} ({int(limit)} s; it ran {ran:.0f} s)" if ran > limit else None


def _ray_time(ms: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(ms) / 1000.0, tz=timezone.utc) if ms else None
    except (TypeError, ValueError):
        return None


RECENT_LINES = 400  # a progress line is printed every log_every_steps: the log's end holds the last one


def _last_progress(client, submission_id: str, *, node_id: str | None) -> dict:
    """The job's last progress line. Read from the log's end (Ray's state API: a few KB whatever
    the log's length); the whole log only when the end holds none (a job printing a lot between
    progress lines) or the head cannot serve the end."""
    from trainyard.protocol import last_progress

    if hasattr(client, "log_lines"):
        try:
            found = last_progress(client.log_lines(submission_id, lines=RECENT_LINES, node_id=node_id))
            if found:
                return found
        except ClusterError:
            pass
    return last_progress(client.logs(submission_id) or "") or {}


class Reconciler:
    def __init__(self, db, registry, settings, moves: Transitions, *, submit: Callable[[str], None]):
        self.db = db
        self.registry = registry
        self.settings = settings
        self.moves = moves
        self.submit = submit  # the dispatcher's: a write-ahead record Ray never got is sent again
        # stuck-job detection (stall.py): steps seen per running job, on this clock (tests
        # put a fake one here), with the job's logs read at most every few seconds
        self.clock = time.monotonic
        self.stalls = StallWatch()
        self._stall_checked: dict[str, float] = {}
        self._stall_policies: dict[str, Any] = {}
        self.stalled_jobs = 0
        # elastic jobs: (min, max) from the spec, and (submission, live world size) last written:
        # a new attempt starts over at its min
        self._ranges: dict[str, tuple[int, int]] = {}
        self._live: dict[str, tuple[str, int]] = {}
        self.resizes = 0

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
                if overrun and self.moves.move(job_id, phase, st.CANCELLING, reason="max_runtime_s reached",
                                          cancel_requested=1, message=overrun):
                    phase, message = st.CANCELLING, overrun
                self._reconcile_one(job_id, phase, cluster, submission_id, message)
            except StaleDataError:
                log.info("job %s changed while reconciling; next tick decides", job_id)
            except ClusterError as exc:
                # state unknown, not changed: a network blip must not fail a healthy job
                self.moves.note(job_id, f"{_UNREACHABLE}state unknown, {exc.message}")

    def _reconcile_one(self, job_id: str, phase: str, cluster: str | None, submission_id: str | None,
                       message: str | None = None) -> None:
        if not cluster or not submission_id:
            self.moves.move(job_id, phase, st.FAILED, reason="inconsistent record: active without a submission",
                       message="internal error: the job was marked dispatched without a Ray submission id")
            return
        if cluster not in self.registry.names():
            self.moves.move(job_id, phase, st.FAILED, reason=f"cluster '{cluster}' was removed",
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
            self.moves.note(job_id, "running" if phase == st.RUNNING else "submitted; Ray is starting the driver")
        if phase in (st.RUNNING, st.STALLED) and ray_phase == st.RUNNING:
            self._check_stall(job_id, phase, cluster, submission_id, client, node_id=info.get("driver_node_id"))
            return
        if ray_phase in st.TERMINAL:
            self._finish(job_id, phase, ray_phase, info, client, submission_id)
        elif ray_phase != phase and st.can_transition(phase, ray_phase):
            reason = "Ray accepted the job" if ray_phase == st.SUBMITTED else "the job driver started"
            self.moves.move(job_id, phase, ray_phase, reason=reason,
                       message="running" if ray_phase == st.RUNNING else "submitted; Ray is starting the driver")

    def _adopt_missing(self, job_id: str, phase: str, cluster: str, submission_id: str) -> None:
        if phase == st.DISPATCHING:
            # The write-ahead record exists but Ray never got (or never kept) the job:
            # send it again under the same submission_id.
            self.submit(job_id)
        elif phase == st.SUBMITTED:
            self.moves.move(job_id, phase, st.PENDING,
                       reason=f"Ray on '{cluster}' has no job {submission_id} (cluster restarted?); "
                              "it never started, so it is queued again",
                       message="re-queued: the cluster lost the job before it started")
        elif phase in (st.RUNNING, st.STALLED):
            self.moves.move(job_id, phase, st.FAILED,
                       reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message=f"the job driver is gone: cluster '{cluster}' has no record of submission "
                               f"{submission_id} (was the cluster restarted?); submit the job again")
        elif phase == st.CANCELLING:
            self.moves.move(job_id, phase, st.CANCELLED, reason=f"Ray on '{cluster}' has no job {submission_id}",
                       message="cancelled (the cluster had nothing left to stop)")

    def _reconcile_preempting(self, job_id: str, cluster: str | None, submission_id: str | None,
                              asked_at: datetime | None) -> None:
        if not cluster or not submission_id or cluster not in self.registry.names():
            self.moves.requeue_preempted(job_id, st.PREEMPTING, checkpoint=None, step=None,
                                    why=f"cluster '{cluster}' is gone")
            return
        client = self.registry.client(cluster)
        info = client.status(submission_id)
        if info is None:
            self.moves.requeue_preempted(job_id, st.PREEMPTING, checkpoint=None, step=None,
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
                self.moves.note(job_id, f"preempting: no checkpoint within the grace period "
                                   f"({self.settings.preemption_grace_s:g}s); Ray is stopping the job")
            return
        self._finish(job_id, st.PREEMPTING, ray_phase, info, client, submission_id)

    def _check_stall(self, job_id: str, phase: str, cluster: str, submission_id: str, client, *,
                     node_id: str | None = None) -> None:
        """Read the job's last step (at most every few seconds) and act on a stall or a resume."""
        policy = self._stall_policies.get(job_id)
        if policy is None:  # the spec never changes: read once per job
            with self.db.session() as s:
                job = jobs_repo.find_job(s, job_id)
                spec = (job.spec if job is not None else None) or {}
                policy = policy_for(spec, self.settings)
                self._ranges[job_id] = worker_range(spec.get("resources") or {})
            self._stall_policies[job_id] = policy
        now = self.clock()
        every = min(30.0, max(self.settings.poll_interval_s, policy.timeout_s / 10))
        if now - self._stall_checked.get(job_id, float("-inf")) < every:
            return
        self._stall_checked[job_id] = now
        progress = _last_progress(client, submission_id, node_id=node_id)
        self._observe_workers(job_id, submission_id, progress.get("workers"))
        step = progress.get("step")
        seen = self.stalls.observe(job_id, step, now=now, timeout_s=policy.timeout_s)
        if seen == STALLED and phase == st.RUNNING:
            idle = self.stalls.idle_for(job_id, now=now)
            what = f"no step for {idle:.0f} s" + (f" (last step {step})" if step is not None else " (no step yet)")
            action = {"none": "left running (on_stall: none)", "stop": "stopping it (on_stall: stop)",
                      "requeue": "stopping it to queue it again (on_stall: requeue)"}[policy.on_stall]
            if self.moves.move(job_id, phase, st.STALLED, reason=f"stalled: {what}",
                          message=f"stalled: {what}; {action}"):
                self.stalled_jobs += 1
                phase = st.STALLED
        elif seen == RESUMED and phase == st.STALLED:
            self.moves.move(job_id, phase, st.RUNNING, reason=f"a step arrived again (step {step})", message="running")
            return
        if phase == st.STALLED and policy.on_stall != "none":
            client.stop(submission_id)  # again each check until Ray reports STOPPED

    def _observe_workers(self, job_id: str, submission_id: str, workers: Any) -> None:
        """An elastic job's live world size from its last progress line: stored on the job (the
        scheduler counts it at that size: views.row_job) with a "resized" event when it
        changed. A value outside [1, max] (a user's runner prints what it likes) is ignored."""
        low, high = self._ranges.get(job_id, (1, 1))
        if high <= low or isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= high:
            return
        if self._live.get(job_id) == (submission_id, workers):
            return  # written already
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase not in (st.RUNNING, st.STALLED) or job.submission_id != submission_id:
                return
            was = low if job.workers_live is None else job.workers_live  # counted at its min until the first report
            if job.workers_live != workers:
                if workers == was:
                    jobs_repo.update_job(s, job, workers_live=workers)
                else:
                    jobs_repo.record_event(s, job, reason=f"resized: {was} -> {workers} workers",
                                           workers_live=workers)
                    self.resizes += 1
                    log.info("job %s: resized from %s to %s workers", job_id, was, workers)
        self._live[job_id] = (submission_id, workers)

    def _stalled_and_stopped(self, job_id: str) -> None:
        """Ray stopped a STALLED job: queue it again (it resumes from its checkpoint) or fail it."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None:
                return
            spec = job.spec or {}
            stalls = sum(1 for e in jobs_repo.list_events(s, job_id)
                         if e.to_phase == st.STALLED and e.from_phase != st.STALLED)  # not a resize while stalled
        policy = policy_for(spec, self.settings)
        self.stalls.forget(job_id)
        if policy.outcome(stalls_so_far=stalls) == "requeue":
            self.moves.move(job_id, st.STALLED, st.PENDING, reason="stalled and stopped: queued again",
                       message="re-queued after a stall; the next attempt resumes from the last checkpoint")
        else:
            why = ("on_stall: stop" if policy.on_stall != "requeue"
                   else f"it stalled {stalls} times, more than stall_max_requeues ({policy.max_requeues})")
            self.moves.move(job_id, st.STALLED, st.FAILED, reason=f"stalled and stopped ({why})",
                       message=f"stalled: its workers reported no step for {policy.timeout_s:.0f} s, so it was "
                               f"stopped ({why}); look at `trainyard jobs logs` for where it hung")

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
                self.moves.requeue_preempted(job_id, phase, checkpoint=preempted.get("checkpoint") or "unknown",
                                        step=preempted.get("step"), why="", at=at, started=started)
                return
            if not (ray_phase == st.FAILED and error_payload is not None):  # else: it failed on its own
                self.moves.requeue_preempted(job_id, phase, checkpoint=None, step=None,
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
            if cancelling and note and note.startswith(OVERRUN):
                message = f"cancelled: {note}"
            reason = "Ray reports STOPPED"
        message = redact.redact(message, secrets)
        if result is not None:
            fields["result"] = result
            fields["mlflow_run_id"] = result.get("mlflow_run_id")
            fields["mlflow_experiment_id"] = (str(result["mlflow_experiment_id"])
                                              if result.get("mlflow_experiment_id") is not None else None)
        # a job that finished before we ever saw it RUNNING still gets a start time
        self.moves.move(job_id, phase, ray_phase, reason=reason, at=_ray_time(info.get("end_time")),
                   started=_ray_time(info.get("start_time")), message=message, **fields)

    def prune(self, live: set[str]) -> None:
        """Forget the steps of jobs that left the active set."""
        self.stalls.keep_only(live)
        for job_id in [j for j in self._stall_checked if j not in live]:
            del self._stall_checked[job_id]
            self._stall_policies.pop(job_id, None)
        for job_id in [j for j in self._ranges if j not in live]:
            del self._ranges[job_id]
            self._live.pop(job_id, None)

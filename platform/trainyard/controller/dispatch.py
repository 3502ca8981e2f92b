"""Step 3 of a tick: plan the PENDING queue and apply the plan.

plan_tick's plan (fair share across projects, why pending, positions, estimated starts) is
made from the queue held in memory (queue.py: only what changed is read) and only when a job,
a cluster or its health changed; the "waiting" reasons of jobs whose reason changed go in
batched writes of NOTES_PER_COMMIT rows (through the server's group committer), and the same
plan feeds the autoscaler's demand (demand.py). Write-ahead: the attempt, the submission_id and the cluster are committed (DISPATCHING) *before* Ray is called.
A crash between the two is repaired by reconciliation, and Ray refuses a second job with the
same submission_id: a job never runs twice. The plan's preemptions are applied here too: the
victim goes RUNNING -> PREEMPTING (write-ahead again) and then Ray is asked to stop it (see
runner/preempt.py).
"""
from __future__ import annotations

import gc
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy import JSON, bindparam, literal, or_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from trainyard.clusters.ray_client import SubmitRejected
from trainyard.controller import quotas, runtime, views
from trainyard.controller.queue import QUIET, QueueMirror
from trainyard.controller.service import packages_dir
from trainyard.controller.transitions import MESSAGE_LIMIT, Transitions
from trainyard.errors import ClusterError, NotFoundError
from trainyard.scheduler import ClusterView, QueuedJob, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.model import Project, UsageRecord
from trainyard.scheduler.preemption import LEAVING, Preemption
from trainyard.scheduler.reasons import CLUSTER_UNHEALTHY, Pending, Reason
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow, utcnow

__all__ = ["Dispatcher", "failpoint"]

log = logging.getLogger("trainyard.controller")
_HOLDING = (st.RUNNING, st.STALLED, st.CANCELLING, st.PREEMPTING)  # phases whose job holds what it asked for


def failpoint(name: str) -> None:
    """Die here, as a crash would, when $TRAINYARD_FAILPOINT names this point (crash tests)."""
    if os.environ.get("TRAINYARD_FAILPOINT") == name:
        log.warning("failpoint %s: exiting as a crash would", name)
        os._exit(17)



NOTES_PER_COMMIT = 128  # "waiting" notes per transaction (_write_notes)


def _update_notes(s: Session, rows: list[dict]) -> None:
    """Write jobs' "waiting" notes: only while the job is queued at the version the mirror read."""
    table = JobRow.__table__
    where = (table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"),
             # literal phases, not IN (...): an expanding IN cannot go in an executemany
             or_(*(table.c.phase == literal(p) for p in sorted(st.QUEUED))))
    full = [r for r in rows if r["free"]]
    if full:
        s.execute(update(table).where(*where).values(message=bindparam("b_message"),
                                                     result=bindparam("b_result", type_=JSON)),
                  full, execution_options={QUIET: True})
    kept = [r for r in rows if not r["free"]]  # a result of its own (a requeued job): keep it
    if kept:
        s.execute(update(table).where(*where).values(message=bindparam("b_message")),
                  kept, execution_options={QUIET: True})


class Dispatcher:
    def __init__(self, db, registry, settings, moves: Transitions, *, health: dict, demand, queue: QueueMirror,
                 replan_interval_s: float, positions_interval_s: float, projects_interval_s: float,
                 commit: Callable[[Callable[[Session], Any]], Any] | None = None,
                 pace: Callable[[], None] = lambda: None, busy: Callable[[], bool] = lambda: False):
        self.db = db
        self.pace = pace  # called every few jobs: the controller's loop rests its thread (pacing.py)
        self.busy = busy  # whether the API is serving requests (Pacer.busy): the tick will be paced
        # how a chunk of notes is written: the server's group committer (GroupCommitter.run),
        # or a session of its own (tests, tools)
        self.commit = commit or self._commit_alone
        self.registry = registry
        self.settings = settings
        self.moves = moves
        self.health = health  # the controller's: refreshed by its step 1
        self.demand = demand
        self.queue = queue
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
        self.replan_interval_s = replan_interval_s
        self.positions_interval_s = positions_interval_s
        self._plan_key: str | None = None
        self._planned_at = float("-inf")
        self._positions_at = float("-inf")
        self.demands: dict = {}
        self._last_demand_inputs: tuple = ([], [], [], {}, [])
        self._last_demand_key: tuple = ()
        self.plans = 0
        self.skipped = 0
        self.notes_written = 0
        self.last_plan_s: float | None = None
        self.last_tick_s: float | None = None

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
        # Not while the API is serving requests: the tick is paced then (pacing.py) and lasts
        # seconds, and holding every collection of the whole process off that long left one
        # young collection of all that the requests kept meanwhile (the queue mirror's new
        # entries): one long stop of every request in flight when the tick ended (seen at 32
        # clients as a young and a second-generation pass right after each paced tick).
        hold = gc.isenabled() and not self.busy()
        if hold:
            gc.disable()
        try:
            self._dispatch()
        finally:
            if hold:
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
                              quota_workers=a.job.most_workers, per_worker=a.job.per_worker, priority=a.job.priority,
                              started_at=a.started_at.timestamp() if a.started_at else now,
                              max_runtime=a.job.max_runtime,
                              preemptible=a.phase == st.RUNNING and a.kind == "job",
                              leaving=a.phase == st.PREEMPTING)
                   for a in self.queue.active.values() if a.cluster]
        usage = self._usage(projects, now)
        plan = plan_tick(queue, running=running, clusters=cluster_views, projects=projects, usage=usage, now=now,
                         config=self.tick_config, pace=self.pace)
        self.plans += 1
        self.last_plan_s = time.perf_counter() - started
        dispatched: list[tuple[str, str | None, None, QueuedJob]] = []
        for d in plan.dispatch:
            try:
                if self.write_ahead(d.job_id, d.cluster, workers_max=d.workers_max):
                    dispatched.append((st.DISPATCHING, d.cluster, None, self.queue.pending[d.job_id].job))
                    failpoint("after_write_ahead")
                    self.submit(d.job_id)
            except StaleDataError:
                log.info("job %s changed while dispatching; next tick decides", d.job_id)
        for p in plan.preempt:
            if p.kind == LEAVING:
                continue  # asked already
            try:
                self.preempt(p)
            except StaleDataError:
                log.info("job %s changed while preempting it; next tick decides", p.job_id)
        notes: list[tuple[str, str, Any]] = []
        for n, r in enumerate(plan.reject):
            if not n & 255:
                self.pace()  # every job may be here (no cluster known yet): 20,000 rows, ~90 ms
            job = self.queue.pending[r.job_id].job
            if job.cluster is None and unknown or job.cluster in unknown:
                # a cluster we know nothing about yet might take it: keep waiting
                text = f"nothing known yet about cluster(s) {', '.join(unknown)}"
                notes.append((r.job_id, f"waiting: {text}", Pending(r.job_id, Reason(CLUSTER_UNHEALTHY, text), 0, 0)))
                continue
            try:
                self.moves.move(r.job_id, st.QUEUED, st.FAILED, reason="rejected by the scheduler",
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

    def preempt(self, p: Preemption) -> None:
        """Ask a running victim to checkpoint and stop: PREEMPTING first (write-ahead: a crash
        after it leaves a record that the next tick's reconcile finishes), then Ray's stop_job,
        whose SIGTERM the driver turns into "checkpoint at the next step boundary, then exit"
        (Ray waits the grace period before it kills: RAY_JOB_STOP_WAIT_TIME_S, runtime.py)."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, p.job_id)
            if job is None or job.phase != st.RUNNING or job.kind != "job":
                return  # it moved meanwhile (ended, cancelled): nothing to take
            jobs_repo.transition(s, job, st.PREEMPTING, reason=p.reason, preempt_requested_at=utcnow(),
                                 message=f"preempting: {p.reason}; asked to checkpoint and stop"[:MESSAGE_LIMIT])
            cluster, submission_id = job.cluster, job.submission_id
        self.preemptions += 1
        log.info("job %s: RUNNING -> PREEMPTING (%s)", p.job_id, p.reason)
        failpoint("after_preempting")
        try:
            self.registry.client(cluster).stop(submission_id)
        except (ClusterError, NotFoundError) as exc:  # reconcile asks again next tick
            log.warning("stop of %s on %s failed, will retry: %s", submission_id, cluster, exc)

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
        budget, only within their window) and the running jobs held in memory (an elastic one
        at its live size, since its start: the mirror's QueuedJob, views.row_job)."""
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
        self.demands = self.demand.plan_from(queue, decisions, cluster_views, active=active, live_nodes=live)

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
        for n, (job_id, message, p) in enumerate(notes):
            if not n & 255:
                self.pace()
            entry = self.queue.pending.get(job_id)
            if entry is None:
                continue
            spot = (p.position_in_queue, p.position_in_project, p.position_in_cluster, p.estimated_start)
            if entry.written is not None and entry.written[0] == p.reason:
                if not positions_due or entry.written[1] == spot:
                    continue  # nothing new to say (or only positions, and they are not due)
            message = (message or f"waiting: {p.reason.message}")[:MESSAGE_LIMIT]
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
        # In chunks, each a short transaction of its own. After a burst, a tick notes every
        # job that arrived since the last one: 1,200-1,500 rows at 1,000 submissions per s,
        # written in one transaction, held SQLite's one write lock for 50-190 ms, and every
        # submission's commit behind it slept in SQLite's busy handler (1, 2, 5, 10, ... ms
        # retries). Through the group committer a chunk joins the submissions' own batch:
        # one writer, no lock to wait for, and no batch longer than one chunk's UPDATE.
        for start in range(0, len(rows), NOTES_PER_COMMIT):
            chunk = rows[start:start + NOTES_PER_COMMIT]
            self.commit(lambda s, chunk=chunk: _update_notes(s, chunk))
            for row in chunk:
                self.queue.noted(row["b_id"], message=row["b_message"], pending=row["b_result"][views.PENDING_KEY],
                                 written=row["written"])
        self.notes_written += len(rows)

    def _commit_alone(self, work: Callable[[Session], Any]) -> Any:
        with self.db.session() as s:
            return work(s)

    def write_ahead(self, job_id: str, cluster: str, *, workers_max: int | None = None) -> bool:
        """Queued -> DISPATCHING with the attempt's cluster and submission id; an elastic job's
        grant (`workers_max`, the plan's) is recorded with them, so that a resubmission after a
        crash hands the runner the same one, and its live size starts over at its min."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase not in st.QUEUED:
                return False
            attempt = job.attempt + 1
            extra = {"result": None} if views.pending_of(job.result) is not None else {}
            granted = f", up to {workers_max} workers" if workers_max is not None else ""
            jobs_repo.transition(s, job, st.DISPATCHING, reason=f"admitted to cluster '{cluster}'{granted}",
                                 attempt=attempt, cluster=cluster,
                                 submission_id=jobs_repo.submission_id_for(job.id, attempt),
                                 message=f"dispatching to cluster '{cluster}'", workers_granted=workers_max,
                                 workers_live=None, **extra)
        log.info("job %s: queued -> DISPATCHING (cluster '%s', attempt %d)", job_id, cluster, attempt)
        return True

    def submit(self, job_id: str) -> None:
        """Send a DISPATCHING job to Ray under its recorded submission_id (idempotent)."""
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or job.phase != st.DISPATCHING:
                return
            cluster, submission_id, spec, package = job.cluster, job.submission_id, job.spec, job.package
            attempt, kind, owner, project = job.attempt, job.kind, job.owner, job.project
            workers_max = job.workers_granted
        client = self.registry.client(cluster)
        working_dir = None
        try:
            if package:
                path = packages_dir(self.settings) / f"{package}.zip"
                if not path.exists():
                    self.moves.move(job_id, st.DISPATCHING, st.FAILED, reason="working_dir package missing",
                               message=f"working_dir: the uploaded folder ({path.name}) is gone from the "
                                       f"server's package store; submit the job again")
                    return
                working_dir = client.upload_package(path.read_bytes())
            env = runtime.runtime_env_for(job_id, spec, self.settings, owner=owner, project=project,
                                          working_dir_uri=working_dir, workers_max=workers_max,
                                          stop_wait_s=self.settings.preemption_grace_s if kind == "job" else None)
            outcome = client.submit(submission_id=submission_id,
                                    entrypoint=runtime.entrypoint_for(job_id, self.settings, kind=kind),
                                    runtime_env=env, metadata={"trainyard_job_id": job_id,
                                                               "trainyard_attempt": attempt,
                                                               "trainyard_user": owner,
                                                               "trainyard_project": project},
                                    secrets=runtime.secret_values(spec, self.settings))
        except SubmitRejected as exc:
            self.moves.move(job_id, st.DISPATCHING, st.FAILED, reason="Ray refused the submission",
                       message=exc.message)
            return
        except ClusterError as exc:
            # unknown outcome (network): stay DISPATCHING; reconciliation asks Ray next tick
            self.moves.note(job_id, f"dispatching to cluster '{cluster}': {exc.message}; retrying")
            return
        failpoint("after_submit")
        self.moves.move(job_id, st.DISPATCHING, st.SUBMITTED,
                   reason="Ray accepted the job" if outcome == "submitted"
                   else "Ray already had this submission (resubmitted after a restart)",
                   message="submitted; Ray is starting the driver")

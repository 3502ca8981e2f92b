"""Every phase change the controller makes, with what must be written in the same transaction.

A move is optimistic: it names the phase (or phases) it expects, and does nothing when the job
is elsewhere (the API, or another tick, moved it; the next tick looks again). A move out of an
attempt closes that attempt in the budgets' ledger; a move to an end state writes the job's cost
record, and a copy goes to its MLflow run off the controller's thread (cost_sink.py).
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm.exc import StaleDataError

from trainyard.controller import costs, views
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow, utcnow

__all__ = ["Transitions", "MESSAGE_LIMIT"]

log = logging.getLogger("trainyard.controller")
MESSAGE_LIMIT = 2000


class Transitions:
    def __init__(self, db, cost_sink):
        self.db = db
        self.cost_sink = cost_sink
        self.usage_records = 0  # attempts closed in the budgets' ledger

    def note(self, job_id: str, message: str) -> None:
        try:
            with self.db.session() as s:
                job = jobs_repo.find_job(s, job_id)
                if job is not None and job.phase not in st.TERMINAL and job.message != message:
                    jobs_repo.update_job(s, job, message=message[:MESSAGE_LIMIT])
        except StaleDataError:
            pass

    def requeue_preempted(self, job_id: str, expected: str, *, checkpoint: str | None, step: Any,
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
            if quotas_repo.record_usage(s, job, resources=views.ledger_demand(job), ended_at=end, reason="preemption"):
                self.usage_records += 1
            jobs_repo.transition(s, job, st.PREEMPTED, reason=reason, at=end, message=message[:MESSAGE_LIMIT],
                                 preemptions=int(job.preemptions or 0) + 1,
                                 preempted_s=float(job.preempted_s or 0.0) + held,
                                 preempt_requested_at=None, started_at=None)
        log.info("job %s: %s -> PREEMPTED (%s)", job_id, expected, reason)
        return True

    def move(self, job_id: str, expected: str | frozenset, new: str, *, reason: str, at: datetime | None = None,
              started: datetime | None = None, **fields: Any) -> bool:
        with self.db.session() as s:
            job = jobs_repo.find_job(s, job_id)
            if job is None or (job.phase not in expected if isinstance(expected, frozenset) else job.phase != expected):
                return False  # someone else moved it: the next tick looks again
            if "message" in fields and fields["message"]:
                fields["message"] = str(fields["message"])[:MESSAGE_LIMIT]
            if started is not None and (job.started_at is None or started < job.started_at):
                # Ray's own start time: it finished before a tick saw it RUNNING, or a tick saw
                # it late (the ledger would count from the sighting, or nothing at all when the
                # sighting came after Ray's end time)
                job.started_at = started
            jobs_repo.transition(s, job, new, reason=reason, at=at, **fields)
            if new in st.TERMINAL or new == st.PENDING:
                # what the attempt held goes in the budgets' ledger, in the same transaction
                if quotas_repo.record_usage(s, job, resources=views.ledger_demand(job), ended_at=at or job.ended_at):
                    self.usage_records += 1
            if new == st.PENDING:
                # queued again (a stall's requeue): the attempt is on the ledger now, and the next
                # one starts its own clock, or the ledger and the cost record would count the wait
                job.started_at = None
            record = None
            if new in st.TERMINAL:
                # the cost record, from the ledger just written and the runner's figures
                record = self.cost_of(s, job)
                job.cost = record.to_dict() if record is not None else None
            run_id = job.mlflow_run_id
        if record is not None:
            self.cost_sink.submit(run_id, record)  # a copy into the job's MLflow run, off this thread
        log.info("job %s: %s -> %s (%s)", job_id, expected, new, reason)
        return True

    def cost_of(self, s, job: JobRow):
        try:
            row = clusters_repo.find_cluster(s, job.cluster) if job.cluster else None
            record = costs.record_for(job, attempts=quotas_repo.attempts_of(s, job.id),
                                      finished_at=job.ended_at or datetime.now(timezone.utc),
                                      prices=costs.prices_of(row.max_resources if row is not None else None))
        except Exception:  # a cost record must never keep a job from ending
            log.exception("job %s: no cost record", job.id)
            return None
        return record

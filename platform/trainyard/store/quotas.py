"""The store's side of quotas and budgets: project settings and the usage ledger.

Checking the settings and turning rows into the scheduler's data is controller/quotas.py's.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.store import state as st
from trainyard.store.models import JobRow, ProjectRow, UsageRow, utcnow

__all__ = ["projects_with_settings", "set_quota", "record_usage", "closed_usage", "running_jobs", "attempts_of"]


def projects_with_settings(session: Session) -> list[ProjectRow]:
    """Projects whose weight, quota or budget differ from the defaults (the others need no entry)."""
    return list(session.scalars(select(ProjectRow).where(
        (ProjectRow.weight != 1.0) | ProjectRow.quota_updated_at.is_not(None)).order_by(ProjectRow.name)))


def set_quota(session: Session, project: ProjectRow, settings: Mapping[str, Any]) -> ProjectRow:
    """Store checked settings (from check_settings) on the project."""
    project.weight = settings["weight"]
    project.quota = settings["quota"]
    project.budget = settings["budget"]
    project.quota_updated_at = utcnow()
    session.flush()
    return project


def record_usage(session: Session, job: JobRow, *, resources: Mapping[str, float],
                 ended_at: datetime | None = None, reason: str | None = None) -> UsageRow | None:
    """Ledger entry for the job's current attempt, when it had started; idempotent.
    `resources`: what the gang held, in accounting space (controller.views.ledger_demand: an
    elastic job at its segments' time-weighted world size, else its live size);
    `reason`: why the attempt ended ("preemption", or the phase it ended in, lower case)."""
    if job.started_at is None:
        return None
    end = ended_at or job.ended_at or utcnow()
    end = max(end, job.started_at)
    attempt = int(job.attempt or 0)
    if session.get(UsageRow, (job.id, attempt)) is not None:
        return None
    row = UsageRow(job_id=job.id, attempt=attempt, project=job.project, started_at=job.started_at, ended_at=end,
                   resources={k: float(v) for k, v in resources.items()},
                   reason=(reason or job.phase.lower())[:32])
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # written meanwhile
        return None
    return row


def closed_usage(session: Session, *, since: datetime,
                 projects: Iterable[str] | None = None) -> list[tuple[str, datetime, datetime, dict[str, Any]]]:
    """(project, started_at, ended_at, resources) of ledger entries that end after `since`."""
    stmt = select(UsageRow.project, UsageRow.started_at, UsageRow.ended_at, UsageRow.resources).where(
        UsageRow.ended_at > since)
    if projects is not None:
        stmt = stmt.where(UsageRow.project.in_(sorted(projects)))
    return [tuple(row) for row in session.execute(stmt)]


def running_jobs(session: Session, *, projects: Iterable[str] | None = None) -> list[JobRow]:
    """Jobs holding resources now (started, not yet ended)."""
    stmt = select(JobRow).where(JobRow.phase.in_((st.RUNNING, st.STALLED, st.CANCELLING, st.PREEMPTING)),
                                JobRow.started_at.is_not(None))
    if projects is not None:
        stmt = stmt.where(JobRow.project.in_(sorted(projects)))
    return list(session.scalars(stmt))


def attempts_of(session: Session, job_id: str) -> list[tuple[datetime, datetime]]:
    """(started_at, ended_at) of each ledger entry of one job, in attempt order (its cost record)."""
    stmt = select(UsageRow.started_at, UsageRow.ended_at).where(UsageRow.job_id == job_id).order_by(UsageRow.attempt)
    return [(a, b) for a, b in session.execute(stmt)]

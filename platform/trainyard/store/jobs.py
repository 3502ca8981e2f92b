"""Repository functions for the jobs and job_events tables.

Every phase change goes through `transition`, which checks the state machine and appends
an event in the same transaction.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.errors import ConflictError, NotFoundError
from trainyard.store import state as st
from trainyard.store.db import insert_batch_of, insert_new
from trainyard.store.models import JobEventRow, JobRow, utcnow
from trainyard.store.paging import Cursor, encode_cursor

__all__ = ["new_job_id", "create_job", "insert_job", "NewJob", "get_job", "find_job", "list_jobs", "page_jobs", "JobPage", "transition",
           "list_events", "active_jobs", "pending_jobs", "submission_id_for", "update_job", "record_event"]


# Crockford's base32, lower-case: no i, l, o, u; sorts like the numbers it encodes
_B32 = "0123456789abcdefghjkmnpqrstvwxyz"
ID_SUFFIX_CHARS = 22  # 10 for 48 bits of ms time + 12 for 60 random bits
_ID_INSERT_TRIES = 5
_EVENT_INSERT = insert(JobEventRow.__table__)  # built once: its values come as parameters


def _b32(value: int, chars: int) -> str:
    out = []
    for _ in range(chars):
        out.append(_B32[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_job_id(name: str, *, now_ms: int | None = None) -> str:
    """`<name>-<time><random>`: the name first, readable in `trainyard jobs list`; then a
    ULID-like suffix, 48 bits of milliseconds (ids of one name sort by submission) and 60
    random bits (two ids in the same millisecond collide once in 2**60). At most 64
    characters, lower-case letters, digits and '-': valid as a Ray submission id and an
    MLflow run name."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    suffix = _b32(ms & (2**48 - 1), 10) + _b32(secrets.randbits(60), 12)
    return f"{name[:64 - 1 - ID_SUFFIX_CHARS].rstrip('-')}-{suffix}"


def submission_id_for(job_id: str, attempt: int) -> str:
    """Deterministic Ray submission id: a retry of the same attempt cannot start a 2nd driver."""
    return f"trainyard-{job_id}-{attempt}"


def create_job(session: Session, *, spec: dict[str, Any], name: str, project: str, priority: int,
               kind: str = "job", package: str | None = None, job_id: str | None = None,
               reason: str = "submitted", owner: str = "admin") -> JobRow:
    for attempt in range(_ID_INSERT_TRIES):
        job = JobRow(id=job_id or new_job_id(name), kind=kind, name=name, project=project, owner=owner,
                     priority=priority, spec=spec, phase=st.PENDING, attempt=0, package=package,
                     created_at=utcnow(), cancel_requested=0)
        # a savepoint: an id taken already (a given id, or a random one against all odds)
        # rolls back this insert only, never the caller's transaction
        try:
            with session.begin_nested():
                session.add(job)
                session.flush()  # the event's foreign key needs the job row first
            break
        except IntegrityError:
            if job_id is not None or attempt == _ID_INSERT_TRIES - 1:
                raise ConflictError(f"job id {job.id!r} is taken", field="id", value=job.id,
                                    fix="submit again (a new id is drawn)") from None
    session.add(JobEventRow(job_id=job.id, at=job.created_at, from_phase=None, to_phase=st.PENDING,
                            reason=reason))
    session.flush()
    return job


class NewJob:
    """A job row as insert_job wrote it: the columns as attributes (those it did not set are
    None), read-only by convention like the JobRow it stands for. A plain object: building an
    ORM JobRow that no session tracks, and reading it through the ORM's instrumented
    attributes, cost a submission more than the values themselves."""

    __slots__ = tuple(c.key for c in JobRow.__table__.columns)

    def __init__(self, **values: Any):
        for key in self.__slots__:
            object.__setattr__(self, key, values.get(key))

    def __repr__(self) -> str:
        return f"NewJob(id={self.id!r}, phase={self.phase!r})"


def insert_job(session: Session, *, spec: dict[str, Any], name: str, project: str, priority: int,
               kind: str = "job", package: str | None = None, reason: str = "submitted", owner: str = "admin",
               message: str | None = None) -> NewJob:
    """create_job for the submission path: the job and its first event as two plain INSERTs.

    Under a burst of submissions the ORM's unit of work (flush planning, the savepoint that
    guards the random id, the identity map) cost the server more than SQLite's own work, and
    its Python runs under the GIL that every request shares. A taken id (one in 2**60 per
    millisecond) is skipped with INSERT ... ON CONFLICT DO NOTHING and a new draw, not a
    savepoint. Returns a NewJob (the row's values, not a JobRow attached to the session): read
    it (views.job_dict), never change it; a later change loads the row (get_job).

    In a transaction with an InsertBatch (the group committer's), both rows join the batch's
    multi-row INSERTs, written at its end: the row is not in the table before then, and a
    taken id (no ON CONFLICT there) fails the batch, whose writes the committer then runs
    one by one, each in its own transaction without a batch (this path, with its new draw)."""
    now = utcnow()
    values = dict(kind=kind, name=name, project=project, owner=owner, priority=priority, spec=spec,
                  phase=st.PENDING, attempt=0, package=package, created_at=now, cancel_requested=0,
                  message=message, preemptions=0, preempted_s=0.0, version=1)
    batch = insert_batch_of(session)
    if batch is not None:
        values["id"] = new_job_id(name)
        batch.add(JobRow.__table__, values)
        batch.add(JobEventRow.__table__, dict(job_id=values["id"], at=now, from_phase=None, to_phase=st.PENDING,
                                              reason=reason))
        return NewJob(**values)
    conn = session.connection()
    for _ in range(_ID_INSERT_TRIES):
        values["id"] = new_job_id(name)
        if insert_new(conn, JobRow.__table__, values):
            break
    else:
        raise ConflictError(f"job id {values['id']!r} is taken", field="id", value=values["id"],
                            fix="submit again (a new id is drawn)")
    conn.execute(_EVENT_INSERT, dict(job_id=values["id"], at=now, from_phase=None, to_phase=st.PENDING,
                                     reason=reason))
    return NewJob(**values)


def get_job(session: Session, job_id: str, *, for_update: bool = False) -> JobRow:
    job = find_job(session, job_id, for_update=for_update)
    if job is None:
        recent = session.scalars(select(JobRow.id).order_by(JobRow.created_at.desc()).limit(200)).all()
        raise NotFoundError("job", job_id, known=recent)
    return job


def find_job(session: Session, job_id: str, *, for_update: bool = False) -> JobRow | None:
    stmt = select(JobRow).where(JobRow.id == job_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def _filtered(stmt, *, phases: Iterable[str] | None = None, project: str | None = None,
              kind: str | None = None, cluster: str | None = None, owner: str | None = None,
              projects: Iterable[str] | None = None):
    if projects is not None:
        stmt = stmt.where(JobRow.project.in_(sorted(projects)))
    if phases is not None:
        stmt = stmt.where(JobRow.phase.in_(sorted(set(phases))))
    if project:
        stmt = stmt.where(JobRow.project == project)
    if kind:
        stmt = stmt.where(JobRow.kind == kind)
    if cluster:
        stmt = stmt.where(JobRow.cluster == cluster)
    if owner:
        stmt = stmt.where(JobRow.owner == owner)
    return stmt


def list_jobs(session: Session, *, phases: Iterable[str] | None = None, project: str | None = None,
              kind: str | None = None, cluster: str | None = None, limit: int = 100,
              offset: int = 0, newest_first: bool = True, owner: str | None = None,
              projects: Iterable[str] | None = None) -> list[JobRow]:
    """`projects`: only these (the caller's visible ones); None: all."""
    stmt = _filtered(select(JobRow), phases=phases, project=project, kind=kind, cluster=cluster, owner=owner,
                     projects=projects)
    order = JobRow.created_at.desc() if newest_first else JobRow.created_at.asc()
    stmt = stmt.order_by(order, JobRow.id).offset(offset).limit(limit)
    return list(session.scalars(stmt))


@dataclass
class JobPage:
    rows: list[JobRow]
    total: int  # every row under the filters, on all pages
    next_cursor: str | None  # None: this was the last page


def page_jobs(session: Session, *, limit: int, after: Cursor | None = None, offset: int = 0,
              phases: Iterable[str] | None = None, project: str | None = None, kind: str | None = None,
              cluster: str | None = None, owner: str | None = None,
              projects: Iterable[str] | None = None) -> JobPage:
    """One page of the jobs list, newest first by (created_at, id), after the position `after`
    (keyset paging: store.paging), with the total under the same filters."""
    filters = dict(phases=phases, project=project, kind=kind, cluster=cluster, owner=owner, projects=projects)
    total = session.scalar(_filtered(select(func.count()).select_from(JobRow), **filters)) or 0
    stmt = _filtered(select(JobRow), **filters)
    if after is not None:
        stmt = stmt.where(or_(JobRow.created_at < after.created_at,
                              and_(JobRow.created_at == after.created_at, JobRow.id < after.id)))
    # one more than asked: whether a next page exists, without a second query
    stmt = stmt.order_by(JobRow.created_at.desc(), JobRow.id.desc()).offset(offset).limit(limit + 1)
    rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return JobPage(rows=rows, total=int(total),
                   next_cursor=encode_cursor(last.created_at, last.id) if more and last is not None else None)


def pending_jobs(session: Session) -> list[JobRow]:
    """Queued jobs (PENDING, and PREEMPTED waiting for their next attempt), oldest first."""
    return list(session.scalars(select(JobRow).where(JobRow.phase.in_(sorted(st.QUEUED)))
                                .order_by(JobRow.created_at, JobRow.id)))


def active_jobs(session: Session) -> list[JobRow]:
    """Jobs that may have a Ray job for their current attempt."""
    return list(session.scalars(select(JobRow).where(JobRow.phase.in_(sorted(st.ACTIVE)))
                                .order_by(JobRow.created_at, JobRow.id)))


def transition(session: Session, job: JobRow, new_phase: str, *, reason: str,
               at: datetime | None = None, **fields: Any) -> JobRow:
    """Move `job` to `new_phase` (checked), set `fields`, and record the event."""
    st.check_transition(job.phase, new_phase, job_id=job.id)
    now = at or utcnow()
    old = job.phase
    job.phase = new_phase
    if new_phase == st.RUNNING and job.started_at is None:
        job.started_at = now
    if new_phase in st.TERMINAL:
        job.ended_at = now
    for key, value in fields.items():
        if not hasattr(JobRow, key):
            raise AttributeError(f"jobs has no column {key!r}")
        setattr(job, key, value)
    session.add(JobEventRow(job_id=job.id, at=now, from_phase=old, to_phase=new_phase, reason=reason))
    session.flush()
    return job


def update_job(session: Session, job: JobRow, **fields: Any) -> JobRow:
    """Set fields that are not a phase change (message, result, ...)."""
    for key, value in fields.items():
        if key == "phase":
            raise ValueError("use transition() to change a job's phase")
        if not hasattr(JobRow, key):
            raise AttributeError(f"jobs has no column {key!r}")
        setattr(job, key, value)
    session.flush()
    return job


def record_event(session: Session, job: JobRow, *, reason: str, at: datetime | None = None,
                 **fields: Any) -> JobRow:
    """Set `fields` and record an event that is not a phase change (from and to: the job's
    phase), e.g. an elastic job's resize, in the same transaction."""
    update_job(session, job, **fields)
    session.add(JobEventRow(job_id=job.id, at=at or utcnow(), from_phase=job.phase, to_phase=job.phase,
                            reason=reason))
    session.flush()
    return job


def list_events(session: Session, job_id: str) -> list[JobEventRow]:
    return list(session.scalars(select(JobEventRow).where(JobEventRow.job_id == job_id)
                                .order_by(JobEventRow.id)))

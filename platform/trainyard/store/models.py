"""SQLAlchemy 2 table models. Portable types only (SQLite default, PostgreSQL in production).

Others add their tables here (sweeps, endpoints) or in their own module on the same
`Base`, with a new Alembic revision under store/migrations/versions/.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from trainyard.store.crypto import EncryptedString, SpecJSON

__all__ = ["Base", "UTCDateTime", "JobRow", "JobEventRow", "ClusterRow", "IdempotencyRow", "UserRow", "ApiTokenRow",
           "ProjectRow", "ProjectMemberRow", "AuditEventRow", "UsageRow", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class JobRow(Base):
    """A job or a sweep (kind). `phase` is the internal state; see store.state."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="job")
    name: Mapped[str] = mapped_column(String(128))
    project: Mapped[str] = mapped_column(String(128), default="default")
    owner: Mapped[str] = mapped_column(String(128), default="admin")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # env values encrypted at rest (store.crypto)
    spec: Mapped[dict[str, Any]] = mapped_column(SpecJSON)
    phase: Mapped[str] = mapped_column(String(16), default="PENDING")
    cluster: Mapped[str | None] = mapped_column(String(128), nullable=True)
    submission_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # sha1 of the working_dir zip kept by the server until dispatch uploads it
    package: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # set when a user asked to cancel; the controller finishes the job off
    cancel_requested: Mapped[int] = mapped_column(Integer, default=0)
    # the cost record (trainyard.costs.JobCost.to_dict()), written when the job ends
    cost: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # preemption (store.state PREEMPTING/PREEMPTED): how often the scheduler took the job's
    # place, the seconds it spent between the request and its stop (all attempts), and when
    # the current request was made (None: none pending)
    preemptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    preempted_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    preempt_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # an elastic job's current attempt (resources.workers {min, max}): the most workers the
    # scheduler let it grow to at admission (its quota's room; the runner gets it as
    # TRAINYARD_WORKERS_MAX), and its live world size, the last one its progress lines
    # reported (None before the first). Both None for a fixed job.
    workers_granted: Mapped[int | None] = mapped_column(Integer, nullable=True)
    workers_live: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # optimistic locking: the API (cancel) and the controller write the same rows from
    # different threads/processes; a stale write raises StaleDataError instead of undoing
    # the other's change
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_jobs_phase", "phase"),
        Index("ix_jobs_project", "project"),
        Index("ix_jobs_created_at", "created_at"),
        # the jobs list: newest first by (created_at, id), under a project or owner filter
        Index("ix_jobs_created_id", "created_at", "id"),
        Index("ix_jobs_project_created", "project", "created_at", "id"),
        Index("ix_jobs_owner_created", "owner", "created_at", "id"),
    )


class JobEventRow(Base):
    """One state transition of a job, with the reason. Append-only."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_phase: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_job_events_job_id", "job_id"),)


class ClusterRow(Base):
    """A registered Ray cluster. The token is a secret: never returned by the API."""

    __tablename__ = "clusters"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    dashboard_url: Mapped[str] = mapped_column(String(512))
    token_file: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    # encrypted at rest (store.crypto); 512 characters hold a token of up to 256
    token: Mapped[str | None] = mapped_column(EncryptedString(512), nullable=True)
    # overrides what the nodes report, for autoscaling clusters: the most one node of the
    # largest type holds, and how many such nodes may exist ({"nodes": [{...}, ...]})
    max_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # last node totals seen (for admission checks without a Ray call)
    last_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRow(Base):
    """A creating request that carried an Idempotency-Key, with the answer it got.

    The same key with the same request replays `response`; with another request it is a
    conflict. Written in the transaction that creates the resource, so a retry racing the
    first request creates nothing."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of method, route and canonical body: what "the same request" means
    fingerprint: Mapped[str] = mapped_column(String(64))
    route: Mapped[str] = mapped_column(String(128))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    resource_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)


class UserRow(Base):
    """A person ("user") or a service account ("service"). Removing one disables it: its name
    stays on the jobs and audit rows that carry it."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="user")
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiTokenRow(Base):
    """A personal API token. Only the sha256 of the token is kept; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name"))
    name: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_api_tokens_sha256", "sha256", unique=True),
                      Index("ix_api_tokens_user", "user"))


class ProjectRow(Base):
    """What jobs, sweeps, models and endpoints belong to. `default` always exists."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The scheduler's settings (store/quotas.py checks them): fair-share weight; quota as
    # {"nominal": {...}, "borrowing_limit": {...} | None, "lending_limit": {...} | None};
    # budget as {"gpu_hours", "cpu_hours", "window_days"}. None: no quota, no budget.
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    quota: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    budget: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    quota_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProjectMemberRow(Base):
    """A user's role in a project: viewer, member or maintainer (trainyard.auth.roles)."""

    __tablename__ = "project_members"

    project: Mapped[str] = mapped_column(String(128), ForeignKey("projects.name", ondelete="CASCADE"),
                                         primary_key=True)
    user: Mapped[str] = mapped_column(String(64), ForeignKey("users.name", ondelete="CASCADE"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))

    __table_args__ = (Index("ix_project_members_user", "user"),)


class AuditEventRow(Base):
    """One state-changing request, allowed or refused. Append-only; never holds a token."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    project: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status_code: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_audit_events_at", "at"), Index("ix_audit_events_actor", "actor"))


class UsageRow(Base):
    """What one attempt of a job held, from its start to its end: the budgets' ledger.

    Written when the attempt leaves RUNNING (succeeded, failed, cancelled, requeued); jobs
    still running are counted from the jobs table at read time. `resources` is the whole
    gang's demand in the scheduler's accounting space ({"CPU": 8, "GPU": 2, ...})."""

    __tablename__ = "usage"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON)
    # why the attempt ended: its final phase in lower case, or "preemption"; None before 0005
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_usage_project_ended", "project", "ended_at"),)

"""Repository functions for users, api_tokens, projects, project_members and audit_events.

Roles are stored as their names ("viewer", "member", "maintainer"); trainyard.auth.roles
turns them into ordered values. Token rows hold only the sha256 of the token.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.errors import ConflictError, NotFoundError
from trainyard.store.db import PendingId, insert_batch_of, insert_new
from trainyard.store.models import (ApiTokenRow, AuditEventRow, ProjectMemberRow, ProjectRow, UserRow,
                                    utcnow)

__all__ = ["ADMIN_USER", "DEFAULT_PROJECT", "ADMIN_TOKEN_NAME", "find_user", "get_user", "create_user",
           "list_users", "disable_user", "ensure_user", "add_token", "find_token_by_hash", "find_token",
           "list_tokens", "revoke_token", "revoke_user_tokens", "touch_token", "find_project", "get_project",
           "create_project", "ensure_project", "list_projects", "memberships", "members", "set_member",
           "remove_member", "record_audit", "correct_audit", "ensure_project_exists", "list_audit", "prune_audit",
           "bootstrap_admin"]

ADMIN_USER = "admin"
DEFAULT_PROJECT = "default"
ADMIN_TOKEN_NAME = "admin-token"


# ----------------------------------------------------------------------------- users
def find_user(session: Session, name: str) -> UserRow | None:
    return session.get(UserRow, name)


def get_user(session: Session, name: str) -> UserRow:
    row = find_user(session, name)
    if row is None:
        raise NotFoundError("user", name, fix="list them with `trainyard users list`")
    return row


def create_user(session: Session, name: str, *, kind: str = "user", admin: bool = False) -> UserRow:
    existing = find_user(session, name)
    if existing is not None:
        state = " (disabled)" if existing.disabled else ""
        raise ConflictError(f"user {name!r} already exists{state}", field="name", value=name,
                            fix="pick another name" if not existing.disabled else
                            "names of removed users stay taken, so that old jobs and audit rows keep meaning "
                            "one person: pick another name")
    row = UserRow(name=name, kind=kind, admin=admin, disabled=False, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise ConflictError(f"user {name!r} already exists", field="name", value=name,
                            fix="pick another name") from None
    return row


def ensure_user(session: Session, name: str, *, kind: str = "user", admin: bool = False) -> UserRow:
    """The user, created when absent (first sight of a single sign-on user, the first admin)."""
    row = find_user(session, name)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = UserRow(name=name, kind=kind, admin=admin, disabled=False, created_at=utcnow())
            session.add(row)
            session.flush()
    except IntegrityError:  # created meanwhile by a twin request
        row = get_user(session, name)
    return row


def list_users(session: Session) -> list[UserRow]:
    return list(session.scalars(select(UserRow).order_by(UserRow.name)))


def disable_user(session: Session, name: str) -> UserRow:
    row = get_user(session, name)
    row.disabled = True
    revoke_user_tokens(session, name)
    session.flush()
    return row


# ----------------------------------------------------------------------------- tokens
def add_token(session: Session, *, token_id: str, user: str, name: str, sha256: str,
              expires_at: datetime | None = None) -> ApiTokenRow:
    row = ApiTokenRow(id=token_id, user=user, name=name, sha256=sha256, created_at=utcnow(),
                      expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def find_token_by_hash(session: Session, sha256: str) -> ApiTokenRow | None:
    return session.scalars(select(ApiTokenRow).where(ApiTokenRow.sha256 == sha256)).first()


def find_token(session: Session, token_id: str) -> ApiTokenRow | None:
    return session.get(ApiTokenRow, token_id)


def list_tokens(session: Session, *, user: str | None = None) -> list[ApiTokenRow]:
    stmt = select(ApiTokenRow)
    if user is not None:
        stmt = stmt.where(ApiTokenRow.user == user)
    return list(session.scalars(stmt.order_by(ApiTokenRow.created_at, ApiTokenRow.id)))


def revoke_token(session: Session, row: ApiTokenRow) -> ApiTokenRow:
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


def revoke_user_tokens(session: Session, user: str) -> int:
    result = session.execute(update(ApiTokenRow).where(ApiTokenRow.user == user, ApiTokenRow.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    return int(result.rowcount or 0)


def touch_token(session: Session, token_id: str, *, at: datetime | None = None) -> None:
    session.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=at or utcnow()))


# ----------------------------------------------------------------------------- projects
def find_project(session: Session, name: str) -> ProjectRow | None:
    return session.get(ProjectRow, name)


def get_project(session: Session, name: str) -> ProjectRow:
    row = find_project(session, name)
    if row is None:
        raise NotFoundError("project", name)
    return row


def create_project(session: Session, name: str, *, description: str = "") -> ProjectRow:
    if find_project(session, name) is not None:
        raise ConflictError(f"project {name!r} already exists", field="name", value=name, fix="pick another name")
    row = ProjectRow(name=name, description=description, created_at=utcnow())
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise ConflictError(f"project {name!r} already exists", field="name", value=name,
                            fix="pick another name") from None
    return row


def ensure_project_exists(session: Session, name: str) -> None:
    """ensure_project for a hot path (an admin's every submission): one INSERT that a taken
    name skips, no read, no ORM object."""
    insert_new(session.connection(), ProjectRow.__table__, {"name": name, "description": "", "created_at": utcnow()})


def ensure_project(session: Session, name: str) -> ProjectRow:
    row = find_project(session, name)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = ProjectRow(name=name, description="", created_at=utcnow())
            session.add(row)
            session.flush()
    except IntegrityError:
        row = get_project(session, name)
    return row


def list_projects(session: Session, *, names: Iterable[str] | None = None) -> list[ProjectRow]:
    stmt = select(ProjectRow)
    if names is not None:
        stmt = stmt.where(ProjectRow.name.in_(sorted(names)))
    return list(session.scalars(stmt.order_by(ProjectRow.name)))


def memberships(session: Session, user: str) -> dict[str, str]:
    """{project: role name} of one user."""
    rows = session.execute(select(ProjectMemberRow.project, ProjectMemberRow.role)
                           .where(ProjectMemberRow.user == user))
    return {project: role for project, role in rows}


def members(session: Session, project: str) -> list[ProjectMemberRow]:
    return list(session.scalars(select(ProjectMemberRow).where(ProjectMemberRow.project == project)
                                .order_by(ProjectMemberRow.user)))


def set_member(session: Session, *, project: str, user: str, role: str) -> ProjectMemberRow:
    row = session.get(ProjectMemberRow, (project, user))
    if row is None:
        row = ProjectMemberRow(project=project, user=user, role=role)
        session.add(row)
    else:
        row.role = role
    session.flush()
    return row


def remove_member(session: Session, *, project: str, user: str) -> bool:
    result = session.execute(delete(ProjectMemberRow).where(ProjectMemberRow.project == project,
                                                            ProjectMemberRow.user == user))
    return bool(result.rowcount)


# ----------------------------------------------------------------------------- audit
_AUDIT_INSERT = insert(AuditEventRow.__table__)  # built once: its values come as parameters


def record_audit(session: Session, *, want_id: bool = True, **fields: Any) -> int | PendingId | None:
    """Append one audit event; returns its id (None when not `want_id` and the row waits in a
    batch). A plain INSERT: the trail is written on every state-changing request, and the ORM's
    unit of work cost more than the row. In a transaction with an InsertBatch (the group
    committer's) the row joins the batch's multi-row INSERT and the id is a PendingId, `int()`
    of it once the batch was written; the rows are told apart by object_id (a submission's
    audit row: the job's id)."""
    fields["at"] = fields.get("at") or utcnow()
    batch = insert_batch_of(session)
    if batch is not None:
        return batch.add(AuditEventRow.__table__, fields, id_by="object_id" if want_id else None)
    return session.connection().execute(_AUDIT_INSERT, fields).inserted_primary_key[0]


def correct_audit(session: Session, event_id: int, *, status_code: int, outcome: str) -> None:
    """Set the answer of an event written before the answer was final (api.audit)."""
    session.execute(update(AuditEventRow).where(AuditEventRow.id == event_id)
                    .values(status_code=status_code, outcome=outcome))


def prune_audit(session: Session, *, before: datetime) -> int:
    """Forget audit events recorded before `before`; returns how many."""
    result = session.execute(delete(AuditEventRow).where(AuditEventRow.at < before))
    return int(result.rowcount or 0)


def list_audit(session: Session, *, actor: str | None = None, action: str | None = None,
               project: str | None = None, object_id: str | None = None, outcome: str | None = None,
               since: datetime | None = None, limit: int = 100, offset: int = 0) -> tuple[list[AuditEventRow], int]:
    """(events newest first, total matching)."""
    where = []
    if actor:
        where.append(AuditEventRow.actor == actor)
    if action:
        # "POST /v1/jobs" exactly, or a prefix ("POST", "DELETE /v1/tokens")
        where.append(AuditEventRow.action.startswith(action, autoescape=True))
    if project:
        where.append(AuditEventRow.project == project)
    if object_id:
        where.append(AuditEventRow.object_id == object_id)
    if outcome:
        where.append(AuditEventRow.outcome == outcome)
    if since is not None:
        where.append(AuditEventRow.at >= since)
    total = session.scalar(select(func.count()).select_from(AuditEventRow).where(*where)) or 0
    rows = session.scalars(select(AuditEventRow).where(*where)
                           .order_by(AuditEventRow.at.desc(), AuditEventRow.id.desc()).offset(offset).limit(limit))
    return list(rows), int(total)


# ----------------------------------------------------------------------------- bootstrap
def bootstrap_admin(session: Session, *, admin_token_sha256: str | None) -> None:
    """User `admin` (an admin) and project `default` exist; the admin token file's token is
    admin's token "admin-token" (an install from before users keeps its token)."""
    admin = ensure_user(session, ADMIN_USER, admin=True)
    if not admin.admin or admin.disabled:
        admin.admin, admin.disabled = True, False
    ensure_project(session, DEFAULT_PROJECT)
    if admin_token_sha256 and find_token_by_hash(session, admin_token_sha256) is None:
        import secrets

        add_token(session, token_id=secrets.token_hex(6), user=ADMIN_USER, name=ADMIN_TOKEN_NAME,
                  sha256=admin_token_sha256)
    session.flush()

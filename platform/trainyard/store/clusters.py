"""Repository functions for the clusters table."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.errors import ConflictError, NotFoundError
from trainyard.store.models import ClusterRow, utcnow

__all__ = ["get_cluster", "find_cluster", "list_clusters", "add_cluster", "upsert_cluster",
           "delete_cluster", "record_resources", "record_error"]


def find_cluster(session: Session, name: str) -> ClusterRow | None:
    return session.get(ClusterRow, name)


def get_cluster(session: Session, name: str) -> ClusterRow:
    row = find_cluster(session, name)
    if row is None:
        known = session.scalars(select(ClusterRow.name)).all()
        raise NotFoundError("cluster", name, known=known)
    return row


def list_clusters(session: Session) -> list[ClusterRow]:
    return list(session.scalars(select(ClusterRow).order_by(ClusterRow.created_at, ClusterRow.name)))


def add_cluster(session: Session, *, name: str, dashboard_url: str, token: str | None = None,
                token_file: str | None = None, max_resources: dict | None = None) -> ClusterRow:
    if find_cluster(session, name) is not None:
        raise ConflictError(f"cluster {name!r} is already registered", field="name", value=name,
                            fix=f"remove it first (`trainyard clusters remove {name}`) or pick another name")
    row = ClusterRow(name=name, dashboard_url=dashboard_url.rstrip("/"), token=token,
                     token_file=token_file, max_resources=max_resources, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def upsert_cluster(session: Session, *, name: str, dashboard_url: str, token: str | None = None,
                   token_file: str | None = None, max_resources: dict | None = None) -> ClusterRow:
    row = find_cluster(session, name)
    if row is None:
        return add_cluster(session, name=name, dashboard_url=dashboard_url, token=token,
                           token_file=token_file, max_resources=max_resources)
    if row.dashboard_url != dashboard_url.rstrip("/"):
        row.last_resources = None  # a different cluster now: forget what the old one had
    row.dashboard_url = dashboard_url.rstrip("/")
    row.token, row.token_file = token, token_file
    row.max_resources = max_resources  # None: not (or no longer) autoscaling
    session.flush()
    return row


def delete_cluster(session: Session, name: str) -> None:
    session.delete(get_cluster(session, name))
    session.flush()


def record_resources(session: Session, name: str, resources: dict[str, Any],
                     at: datetime | None = None) -> None:
    row = find_cluster(session, name)
    if row is not None:
        row.last_resources = resources
        row.last_seen_at = at or utcnow()
        row.last_error = None


def record_error(session: Session, name: str, error: str) -> None:
    row = find_cluster(session, name)
    if row is not None:
        row.last_error = error

"""Repository functions for the idempotency_keys table (see models.IdempotencyRow)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from trainyard.store.models import IdempotencyRow, utcnow

__all__ = ["find_key", "record_key", "prune_keys"]


def find_key(session: Session, key: str) -> IdempotencyRow | None:
    return session.get(IdempotencyRow, key)


def record_key(session: Session, *, key: str, fingerprint: str, route: str, status_code: int,
               response: dict[str, Any], resource_id: str | None = None) -> IdempotencyRow:
    """Add the key; flushing raises IntegrityError when another request recorded it first."""
    row = IdempotencyRow(key=key, fingerprint=fingerprint, route=route, status_code=status_code,
                         response=response, resource_id=resource_id, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def prune_keys(session: Session, *, before: datetime) -> int:
    """Forget keys recorded before `before`; returns how many."""
    result = session.execute(delete(IdempotencyRow).where(IdempotencyRow.created_at < before))
    return int(result.rowcount or 0)

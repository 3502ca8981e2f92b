"""Retention: the tables that only grow are pruned on a timer.

Idempotency-Key answers matter while a client may still retry (minutes); audit events
matter for as long as the operator's retention policy says. Both tables otherwise grow with
every request for the server's whole life. The work is one DELETE per table on an
indexed timestamp, run off the event loop once an hour.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from trainyard.config import Settings
from trainyard.store import Database
from trainyard.store import idempotency as idempotency_repo
from trainyard.store import teams as teams_repo

__all__ = ["Pruned", "prune", "run_forever"]

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0


@dataclass(frozen=True)
class Pruned:
    idempotency_keys: int
    audit_events: int


def prune(db: Database, settings: Settings, *, now: datetime | None = None) -> Pruned:
    """Delete what is past retention; one transaction, so a failure deletes nothing."""
    now = now or datetime.now(timezone.utc)
    with db.session() as s:
        keys = idempotency_repo.prune_keys(s, before=now - timedelta(seconds=settings.idempotency_ttl_s))
        events = 0
        if settings.audit_retention_days > 0:
            events = teams_repo.prune_audit(s, before=now - timedelta(days=settings.audit_retention_days))
    return Pruned(idempotency_keys=keys, audit_events=events)


async def run_forever(db: Database, settings: Settings, *, interval_s: float = INTERVAL_S) -> None:
    """Prune at start and then every `interval_s`; a failed round is logged and retried next time."""
    while True:
        try:
            done = await asyncio.to_thread(prune, db, settings)
            if done.idempotency_keys or done.audit_events:
                log.info("pruned %d idempotency keys and %d audit events past retention",
                         done.idempotency_keys, done.audit_events)
        except Exception as e:  # noqa: BLE001 - retention must never take the server down
            log.warning("retention pruning failed (retried in %.0f s): %s", interval_s, e)
        await asyncio.sleep(interval_s)

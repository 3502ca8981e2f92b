"""Retention pruning on a real SQLite store: old rows go, recent ones stay, 0 keeps audit forever."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from trainyard.config import Settings
from trainyard.controller import housekeeping
from trainyard.store import Database
from trainyard.store import idempotency as idem
from trainyard.store import teams as teams_repo

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path):
    d = Database(f"sqlite:///{tmp_path / 'ty.db'}")
    d.upgrade()
    yield d
    d.dispose()


def _seed(db: Database) -> None:
    with db.session() as s:
        for name, age in (("old", timedelta(days=2)), ("new", timedelta(minutes=5))):
            row = idem.record_key(s, key=name, fingerprint="f", route="POST /v1/jobs", status_code=201,
                                  response={})
            row.created_at = NOW - age
        for age_days in (400, 10):
            teams_repo.record_audit(s, at=NOW - timedelta(days=age_days), actor="admin", action="POST /v1/jobs",
                                    object_type="job", status_code=201, outcome="allowed")


def _counts(db: Database) -> tuple[int, int]:
    with db.session() as s:
        keys = [k for k in ("old", "new") if idem.find_key(s, k)]
        _, events = teams_repo.list_audit(s, limit=10)
    return len(keys), events


def test_prune_drops_only_what_is_past_retention(db):
    _seed(db)
    done = housekeeping.prune(db, Settings(idempotency_ttl_s=86400, audit_retention_days=90), now=NOW)
    assert done == housekeeping.Pruned(idempotency_keys=1, audit_events=1)
    assert _counts(db) == (1, 1)
    with db.session() as s:
        assert idem.find_key(s, "new") is not None


def test_zero_retention_keeps_audit_forever(db):
    _seed(db)
    done = housekeeping.prune(db, Settings(idempotency_ttl_s=86400, audit_retention_days=0), now=NOW)
    assert done.audit_events == 0
    assert _counts(db) == (1, 2)


@pytest.mark.parametrize("field,value", [("idempotency_ttl_s", 1), ("audit_retention_days", -1)])
def test_retention_settings_are_bounded(field, value):
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})

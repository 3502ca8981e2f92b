"""Secrets stay private: redaction and its log filter, encryption at rest, tokens by value."""
from __future__ import annotations

import io
import logging
import sqlite3

import pytest
from sqlalchemy.exc import IntegrityError

from trainyard import redact
from trainyard.errors import ConflictError
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import crypto
from trainyard.store import jobs as jobs_repo
from trainyard.store.models import JobRow, utcnow

ENV_SECRET = "hunter2-env-value-xyz"
TOKEN = "ray-token-abcdef-123456"


@pytest.fixture(autouse=True)
def _clean_registry():
    redact.clear()
    yield
    redact.clear()


def _log_through_filter(logger_name: str, *args, exc: BaseException | None = None) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(redact.RedactingFilter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        if exc is not None:
            try:
                raise exc
            except type(exc):
                logger.exception(*args)
        else:
            logger.warning(*args)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_filter_hides_registered_secrets_in_messages_args_and_tracebacks():
    redact.register(TOKEN, "short")  # too short to register: common words stay readable
    out = _log_through_filter("some.library", "sent %s to %s", TOKEN, "short")
    assert TOKEN not in out and "sent *** to short" in out
    out = _log_through_filter("other", "failed", exc=RuntimeError(f"bad token {TOKEN}"))
    assert TOKEN not in out and "bad token ***" in out


def test_the_api_shows_env_names_never_values():
    spec = {"name": "j", "env": {"MODE": "debug-mode", "API_KEY": ENV_SECRET}}
    assert redact.masked_spec(spec)["env"] == {"MODE": "***", "API_KEY": "***"}
    assert spec["env"]["API_KEY"] == ENV_SECRET  # the stored spec is untouched


@pytest.fixture()
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'ty.db'}")
    database.upgrade()
    yield database, tmp_path / "ty.db"
    database.dispose()


def test_env_values_and_cluster_tokens_are_encrypted_at_rest(db):
    database, path = db
    with database.session() as s:
        jobs_repo.create_job(s, spec={"name": "j", "env": {"API_KEY": ENV_SECRET}}, name="j",
                             project="default", priority=0, job_id="j-1")
        clusters_repo.add_cluster(s, name="gpu", dashboard_url="http://10.0.0.5:8265", token=TOKEN)
    raw = sqlite3.connect(path)
    stored_spec = raw.execute("SELECT spec FROM jobs").fetchone()[0]
    stored_token = raw.execute("SELECT token FROM clusters").fetchone()[0]
    raw.close()
    assert ENV_SECRET not in stored_spec and crypto.PREFIX in stored_spec
    assert stored_token.startswith(crypto.PREFIX) and TOKEN not in stored_token
    assert path.read_bytes().find(ENV_SECRET.encode()) == -1
    with database.session() as s:  # the code above the store sees plain values
        assert jobs_repo.get_job(s, "j-1").spec["env"] == {"API_KEY": ENV_SECRET}
        assert clusters_repo.get_cluster(s, "gpu").token == TOKEN


def test_rows_written_before_encryption_still_read(db):
    database, path = db
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO clusters (name, dashboard_url, token, created_at) "
                "VALUES ('old', 'http://h:8265', 'plain-old-token', '2026-01-01 00:00:00')")
    raw.commit()
    raw.close()
    with database.session() as s:
        assert clusters_repo.get_cluster(s, "old").token == "plain-old-token"


def test_a_duplicate_insert_error_holds_no_env_value(db):
    database, _ = db
    spec = {"name": "j", "env": {"API_KEY": ENV_SECRET}}
    with database.session() as s:
        jobs_repo.create_job(s, spec=spec, name="j", project="default", priority=0, job_id="dup")
    # the store answers a taken id with a conflict that names the id only
    with pytest.raises(ConflictError) as conflict:
        with database.session() as s:
            jobs_repo.create_job(s, spec=spec, name="j", project="default", priority=0, job_id="dup")
    assert ENV_SECRET not in str(conflict.value)
    # and the engine's own error, had it escaped, hides the INSERT's parameters
    with pytest.raises(IntegrityError) as info:
        with database.session() as s:
            s.add(JobRow(id="dup", kind="job", name="j", project="default", priority=0, spec=spec,
                         phase="PENDING", attempt=0, created_at=utcnow(), cancel_requested=0))
            s.flush()
    assert ENV_SECRET not in str(info.value) and "hidden" in str(info.value)


def test_the_key_file_is_created_private(trainyard_home, monkeypatch):
    monkeypatch.delenv(crypto.KEY_ENV, raising=False)
    token = crypto.encrypt("value-123456")
    key = trainyard_home / "secret.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert crypto.decrypt(token) == "value-123456"
    monkeypatch.setenv(crypto.KEY_ENV, "not a key")
    with pytest.raises(crypto.SecretKeyError, match="TRAINYARD_SECRET_KEY"):
        crypto.encrypt("x")
    monkeypatch.setenv(crypto.KEY_ENV, "A" * 40)  # a generated passphrase: a key is derived
    assert crypto.decrypt(crypto.encrypt("value-123456")) == "value-123456"

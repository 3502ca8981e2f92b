"""Engine, sessions and migrations.

`Database(url).upgrade()` brings the schema to the newest Alembic revision. Alembic
(0.6 s to import) is only imported when the database is not already at head, so a
server restart stays quick.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Table, create_engine, event, insert, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "HEAD_REVISION", "MIGRATIONS_DIR", "insert_new"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# keep in step with the newest file in migrations/versions (a unit test checks it)
HEAD_REVISION = "0008"
SQLITE_POOL_SIZE = 48


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: the API threads read while the controller writes
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_savepoint(conn, _name) -> None:
    # The driver sends BEGIN only before its first INSERT/UPDATE/DELETE. A SAVEPOINT sent
    # before that becomes the outermost transaction, and its RELEASE commits the caller's
    # unit of work half-way (create_job's id-conflict savepoint committed a group-commit
    # batch's earlier rows). Open the real transaction first. Only units of work that use a
    # savepoint begin early, so plain reads still take no snapshot that a later write of the
    # same session would find stale.
    dbapi_conn = conn.connection.dbapi_connection
    if not dbapi_conn.in_transaction:
        dbapi_conn.execute("BEGIN")


_INSERT_NEW: dict[tuple[str, str], object] = {}  # (table, dialect) -> INSERT .. ON CONFLICT DO NOTHING


def insert_new(conn: Connection, table: Table, values: dict) -> bool:
    """INSERT one row unless a unique key of it is taken; whether it was inserted.

    One statement, built once per table (the values go in as parameters, so SQLAlchemy's
    compiled cache answers): a hot path's insert pays neither the ORM's unit of work nor a
    savepoint for the rare conflict."""
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        try:  # a savepoint keeps the conflict from ending the caller's transaction
            with conn.begin_nested():
                conn.execute(insert(table), values)
            return True
        except IntegrityError:
            return False
    stmt = _INSERT_NEW.get((table.name, dialect))
    if stmt is None:
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        # preserve_rowcount: SQLAlchemy keeps an INSERT's rowcount only when asked (psycopg's is
        # gone once the cursor closes, and a lost one read as "taken")
        stmt = _INSERT_NEW[(table.name, dialect)] = (dialect_insert(table).on_conflict_do_nothing()
                                                     .execution_options(preserve_rowcount=True))
    return conn.execute(stmt, values).rowcount == 1


class Database:
    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        # hide_parameters: a failed statement's message (an IntegrityError, in a log or an
        # error) must not carry the row's values, which hold specs' env and cluster tokens
        kwargs: dict = {"echo": echo, "future": True, "hide_parameters": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
            path = url.split("///", 1)[-1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
                # as many kept connections as the API's worker threads (anyio's 40) and the
                # controller may hold at once: past the pool size each checkout opened a new
                # connection (and ran the pragmas) and closed it on return, a fifth of the
                # server's time under 32 concurrent clients. An idle SQLite connection is
                # a few hundred KiB and no server process.
                kwargs["pool_size"] = SQLITE_POOL_SIZE
                kwargs["max_overflow"] = 16
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "savepoint", _sqlite_savepoint)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> None:
        """Apply pending migrations (no-op, and no Alembic import, when already at head)."""
        if self.current_revision() == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()

"""Engine, sessions and migrations.

`Database(url).upgrade()` brings the schema to the newest Alembic revision. Alembic
(0.6 s to import) is only imported when the database is not already at head, so a
server restart stays quick.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Table, create_engine, event, insert, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["Database", "HEAD_REVISION", "MIGRATIONS_DIR", "insert_new", "InsertBatch", "PendingId", "insert_batch_of"]

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


class PendingId:
    """The id of a row an InsertBatch holds: known once the batch was written. `int(pending)`
    reads it (and raises before then)."""
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: int | None = None

    def __int__(self) -> int:
        if self.value is None:
            raise RuntimeError("the row is not written yet: its id is known after the batch's flush")
        return self.value

    __index__ = __int__

    def __repr__(self) -> str:
        return f"PendingId({self.value!r})"


_BATCH_KEY = "trainyard.insert_batch"
_BATCH_INSERTS: dict[tuple[str, str | None], Any] = {}  # (table, id_by) -> INSERT, built once


class InsertBatch:
    """INSERTs held back until the end of one transaction, then written as one statement per
    table and set of columns (a list of rows: SQLAlchemy's executemany / insertmanyvalues).

    The group committer opens one per batch of writes (`InsertBatch.open(session)`), and the
    repository functions that find one (`insert_batch_of`) add their rows to it instead of
    executing an INSERT each: under a burst of submissions, the per-statement work of the
    driver and SQLAlchemy was a fifth of the server's time on the GIL. Groups are written in
    the order their first row was added, so a row added after the one its foreign key points
    to is written after it. A statement that fails fails the whole transaction, as the single
    INSERTs would have.

    A row whose generated id the caller needs is added with `id_by`, a column whose value tells
    it from the group's other rows (a job's audit row: its object_id, the job id), and gets a
    PendingId that flush() fills in from INSERT .. RETURNING id, <id_by>. RETURNING's order is
    not the rows' order (SQLite promises none), and asking SQLAlchemy for the rows' order
    (sort_by_parameter_order) makes it send SQLite one INSERT per row. Rows whose id_by
    values are equal get their ids in an arbitrary order among themselves."""

    __slots__ = ("_groups", "written")

    def __init__(self) -> None:
        # (table name, columns, id_by) -> (table, rows, their PendingIds or None)
        self._groups: dict[tuple, tuple[Table, list[dict], list[PendingId | None]]] = {}
        # table name -> the rows flush() wrote (their values as given): for whoever wants to
        # know, once the transaction committed, what it holds without reading it back
        self.written: dict[str, list[dict]] = {}

    @classmethod
    def open(cls, session: Session) -> "InsertBatch":
        batch = session.info[_BATCH_KEY] = cls()
        return batch

    def add(self, table: Table, values: dict, *, id_by: str | None = None) -> PendingId | None:
        key = (table.name, tuple(values), id_by)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = (table, [], [])
        group[1].append(values)
        pending = PendingId() if id_by is not None else None
        group[2].append(pending)
        return pending

    def __len__(self) -> int:
        return sum(len(rows) for _t, rows, _p in self._groups.values())

    def flush(self, conn: Connection) -> None:
        """Write every row held (one statement per group), then forget them."""
        groups, self._groups = self._groups, {}
        for (name, _columns, id_by), (table, rows, pendings) in groups.items():
            stmt = _BATCH_INSERTS.get((name, id_by))
            if stmt is None:
                stmt = insert(table)
                if id_by is not None:
                    stmt = stmt.returning(table.c.id, table.c[id_by])
                _BATCH_INSERTS[(name, id_by)] = stmt
            result = conn.execute(stmt, rows[0] if len(rows) == 1 else rows)
            self.written.setdefault(name, []).extend(rows)
            if id_by is None:
                continue
            ids: dict[Any, list[int]] = {}
            for ident, by in result.all():
                ids.setdefault(by, []).append(ident)
            for same in ids.values():
                same.sort(reverse=True)  # pop(): the lowest first, as the rows were added
            for row, pending in zip(rows, pendings, strict=True):
                pending.value = ids[row[id_by]].pop()


def insert_batch_of(session: Session) -> InsertBatch | None:
    """The InsertBatch of the session's transaction, if its owner opened one."""
    return session.info.get(_BATCH_KEY)


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

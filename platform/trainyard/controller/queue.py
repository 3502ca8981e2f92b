"""The controller's picture of the queue, held in memory and kept in step with the store.

Reading every queued job (and parsing its spec) on every tick cost more than deciding about
it: 1.6 s a tick at 9,400 queued. The mirror reads only what changed:
- a scan of (id, version, phase) of the queued (PENDING, PREEMPTED) and active jobs, through the phase index.
  `version` is bumped by every ORM write (optimistic locking), so a job whose version did
  not move did not change;
- the full rows (with the spec JSON) only of jobs that are new or whose version moved.
The scan itself runs only when a session of this process committed a write to the jobs
table since the last scan (an engine hook, `_WriteWatch`), or every `resync_interval_s`
for writers in other processes. An idle server with a long queue reads nothing.
When the hook could tell which rows each of those writes touched (an INSERT's ids, an
UPDATE or DELETE by `jobs.id = ` or `jobs.id IN`: what the ORM and the store emit), only
those rows are scanned: a submission costs a read of one (id, version, phase), not of the
whole queue. Any other write to the table, a burst of more than `_TARGETED_MAX` rows, the
periodic resync and `mark_dirty()` scan everything.

Jobs this server's group committer inserted are offered to the mirror once committed
(`offer`, wired by the app): a scan that finds such a job at the version and phase it was
written with takes its row from the offer instead of reading it (and decoding its spec JSON)
back. Offers are good for the next scan only; what it does not use is dropped.

The controller's own "waiting" notes do not bump `version` (see loop.py), and are written
with `QUIET` so that they do not wake the mirror either.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from sqlalchemy import event, select
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BindParameter

from trainyard.controller import views
from trainyard.scheduler import QueuedJob
from trainyard.store import Database
from trainyard.store import state as st
from trainyard.store.models import JobRow

__all__ = ["QueueMirror", "Queued", "Active", "QUIET"]

# execution option: a write to the jobs table that must not wake the mirror
QUIET = "trainyard_mirror_quiet"
_TRACKED = sorted(st.QUEUED | st.ACTIVE)
_CHUNK = 500  # ids per IN (...) query
_WRITES = ("INSERT INTO jobs ", "UPDATE jobs ", "DELETE FROM jobs ")
_TARGETED_MAX = 2000  # more rows written than this: one scan of everything is cheaper
_ID = JobRow.__table__.c.id
# the columns the mirror holds of a job, in the order _add_rows takes them
_LOADED = ("id", "version", "phase", "spec", "priority", "project", "created_at", "started_at", "cluster",
           "message", "result", "kind", "workers_live", "workers_granted")


def _written_ids(statement: str, context) -> set[str] | None:
    """The ids of the rows a write to `jobs` touched, from the compiled statement and its
    parameters; None when they cannot be told (then the whole queue is scanned)."""
    compiled = getattr(context, "compiled", None)
    stmt = getattr(compiled, "statement", None)
    params = getattr(context, "compiled_parameters", None)
    if stmt is None or not params:
        return None
    try:
        if statement.startswith("INSERT"):
            ids = {p["id"] for p in params}
        else:
            bind = _id_bind(getattr(stmt, "whereclause", None))
            key = None if bind is None else compiled.bind_names.get(bind)
            if key is None:
                return None
            ids = set()
            for p in params:
                if key in p:
                    value = p[key]
                    ids.update(value if isinstance(value, (list, tuple)) else (value,))
                else:  # an IN list, expanded into key_1, key_2, ...
                    n = 1
                    while f"{key}_{n}" in p:
                        ids.add(p[f"{key}_{n}"])
                        n += 1
    except (KeyError, TypeError):
        return None
    return ids if ids and all(isinstance(i, str) for i in ids) else None


def _id_bind(where) -> BindParameter | None:
    """The bind parameter in `jobs.id = :key` or `jobs.id IN (:key)`, when `where` is
    that or an AND with that among its terms (then no other row can match)."""
    if where is None:
        return None
    terms = list(where.clauses) if getattr(where, "operator", None) is operators.and_ else [where]
    for term in terms:
        left, right, op = getattr(term, "left", None), getattr(term, "right", None), getattr(term, "operator", None)
        if (left is not None and left.compare(_ID) and op in (operators.eq, operators.in_op)
                and isinstance(right, BindParameter)):
            return right
    return None


@dataclass
class Queued:
    version: int
    job: QueuedJob
    message: str | None
    pending: dict[str, Any] | None  # the why-pending record the store holds (views.pending_of)
    result_free: bool  # the result column holds nothing but that record: ours to overwrite
    # the scheduler's (Reason, positions) that `pending` was written from: comparing these
    # is much cheaper than building the record for 10,000 jobs a tick
    written: tuple | None = None


@dataclass
class Active:
    version: int
    phase: str
    cluster: str | None
    started_at: datetime | None
    job: QueuedJob
    kind: str = "job"  # only jobs can checkpoint and stop on request (preemption); sweeps cannot


class _WriteWatch:
    """Calls `on_write(ids)` after a transaction that wrote the jobs table commits (or ends);
    `ids`: the rows it wrote, or None when some write's rows could not be told.

    A statement that writes `jobs` marks its connection; the mark is read when the
    connection goes back to the pool, which is after the commit, so whoever reacts sees the
    committed rows. A rollback also ends up here: a spurious wake-up costs one scan.
    """

    def __init__(self, db: Database, on_write: Callable[[set[str] | None], None]):
        self.on_write = on_write
        event.listen(db.engine, "after_cursor_execute", self._mark)
        event.listen(db.engine.pool, "checkin", self._checkin)

    def _mark(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith(_WRITES) and not (context is not None and context.execution_options.get(QUIET)):
            info = conn.info
            known = info.get("trainyard_jobs_written", set())
            if known is not None:
                ids = _written_ids(statement, context)
                known = None if ids is None or len(known) + len(ids) > _TARGETED_MAX else known | ids
            info["trainyard_jobs_written"] = known

    def _checkin(self, dbapi_connection, record) -> None:
        if record is not None and "trainyard_jobs_written" in record.info:
            self.on_write(record.info.pop("trainyard_jobs_written"))


class QueueMirror:
    """Queued jobs (`pending`: PENDING and PREEMPTED) and jobs that may hold resources (`active`), by id."""

    def __init__(self, db: Database, *, resync_interval_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic, pace: Callable[[], None] = lambda: None):
        self.db = db
        self.pace = pace  # called every few rows: the controller's loop rests its thread (pacing.py)
        self.resync_interval_s = resync_interval_s
        self.clock = clock
        self.pending: dict[str, Queued] = {}
        self.active: dict[str, Active] = {}
        self.scans = 0
        self.rows_read = 0
        self._dirty = True  # nothing read yet
        self._last_scan = float("-inf")
        # what changed since the last scan: these ids only, unless `_dirty` (everything)
        self._written: set[str] = set()
        # job id -> its row as inserted (committed), offered by the group committer: `offer`
        self._offered: dict[str, dict[str, Any]] = {}
        self.rows_offered = 0
        self._marks = threading.Lock()
        self._lock = threading.Lock()
        self._watch = _WriteWatch(db, self._on_write)

    def mark_dirty(self) -> None:
        """Scan everything at the next sync."""
        self._dirty = True

    def _on_write(self, ids: set[str] | None) -> None:
        if ids is None:
            self._dirty = True
            return
        with self._marks:
            self._written |= ids

    def offer(self, rows: list[dict[str, Any]]) -> None:
        """Jobs' rows as just inserted and committed (a column left out is NULL): the next scan
        that finds one of them unchanged (same version and phase) takes it from here."""
        with self._marks:
            for row in rows:
                if row.get("phase") in st.QUEUED and isinstance(row.get("id"), str):
                    self._offered[row["id"]] = row
            if len(self._offered) > 4 * _TARGETED_MAX:  # nobody scans: do not hoard
                self._offered.clear()

    def sync(self, *, force: bool = False) -> bool:
        """Bring the mirror up to date; True when anything in it changed."""
        now = self.clock()
        everything = force or self._dirty or now - self._last_scan >= self.resync_interval_s
        if not (everything or self._written):
            return False
        with self._lock:
            # taken before reading: a commit that lands during the scan marks it again
            with self._marks:
                written, self._written = self._written, set()
                offered, self._offered = self._offered, {}
            if everything:
                self._dirty = False
                self._last_scan = now
            self.scans += 1
            with self.db.session() as s:
                # Core rows, not ORM: a third of the cost at 10,000 rows
                conn = s.connection()
                query = select(JobRow.id, JobRow.version, JobRow.phase).where(JobRow.phase.in_(_TRACKED))
                if everything:
                    seen = []
                    rows = conn.execute(query)
                    while batch := rows.fetchmany(_CHUNK * 4):
                        self.pace()
                        seen.extend(batch)
                else:
                    ordered = sorted(written)
                    seen = []
                    for i in range(0, len(ordered), _CHUNK):  # after a burst: thousands of ids
                        self.pace()
                        seen.extend(conn.execute(query.where(JobRow.id.in_(ordered[i:i + _CHUNK]))))
                stale: list[str] = []
                ids: set[str] = set()
                from_offers: list[dict[str, Any]] = []
                for n, (job_id, version, phase) in enumerate(seen):
                    if not n & 255:
                        self.pace()
                    ids.add(job_id)
                    queued = phase in st.QUEUED
                    have = self.pending.get(job_id) if queued else self.active.get(job_id)
                    if have is None or have.version != version or (not queued and have.phase != phase):
                        row = offered.get(job_id)
                        if row is not None and row.get("version") == version and row.get("phase") == phase:
                            from_offers.append(row)  # as committed, and unchanged since
                        else:
                            stale.append(job_id)
                if everything:
                    gone = [i for i in self.pending if i not in ids] + [i for i in self.active if i not in ids]
                else:  # written, and no longer PENDING or active
                    gone = [i for i in written if i not in ids and (i in self.pending or i in self.active)]
                if stale:
                    self._load(conn, stale, whole=everything and len(stale) > len(seen) // 2)
            if from_offers:
                self.rows_offered += len(from_offers)
                # lazily: each row becomes a tuple inside _add_rows' paced loop (12,000 offered
                # rows after a burst took ~40 ms as one list, a stop of every request)
                self._add_rows(tuple(row.get(c) for c in _LOADED) for row in from_offers)
            for job_id in gone:
                self.pending.pop(job_id, None)
                self.active.pop(job_id, None)
            return bool(stale or gone or from_offers)

    def _load(self, conn, job_ids: list[str], *, whole: bool) -> None:
        cols = tuple(getattr(JobRow, name) for name in _LOADED)
        if whole:  # after a burst (or at start) one read of everything beats many IN lists
            batches = [conn.execute(select(*cols).where(JobRow.phase.in_(_TRACKED)))]
            wanted: set[str] | None = set(job_ids)
        else:
            batches = [conn.execute(select(*cols).where(JobRow.id.in_(job_ids[i:i + _CHUNK])))
                       for i in range(0, len(job_ids), _CHUNK)]
            wanted = None
        for rows in batches:
            self._add_rows(rows, wanted=wanted, read=True)

    def _add_rows(self, rows, *, wanted: set[str] | None = None, read: bool = False) -> None:
        """Hold these rows (the _LOADED columns, in order): queued ones in `pending`, active
        ones in `active`. `read`: they came from the store (counted in rows_read)."""
        for n, (job_id, version, phase, spec, priority, project, created_at, started_at, cluster, message,
                result, kind, live, granted) in enumerate(rows):
            if not n & 63:
                self.pace()
            if wanted is not None and job_id not in wanted:
                continue
            if read:
                self.rows_read += 1
            self.pending.pop(job_id, None)
            self.active.pop(job_id, None)
            # a preempted job's checkpoint lies where it ran: placement prefers that cluster;
            # an active elastic job holds its live size, within its grant (views.row_job)
            active = phase in st.ACTIVE
            job = views.queued_job(job_id, spec or {}, priority=priority or 0,
                                   seq=created_at.timestamp() if created_at else 0.0,
                                   project=project or "default",
                                   checkpoint_cluster=cluster if phase == st.PREEMPTED else None,
                                   live=live if active else None, granted=granted if active else None)
            if phase in st.QUEUED:
                record = views.pending_of(result)
                self.pending[job_id] = Queued(version, job, message, record,
                                              result is None or record is not None)
            elif phase in st.ACTIVE:
                self.active[job_id] = Active(version, phase, cluster, started_at, job, kind or "job")

    def noted(self, job_id: str, *, message: str, pending: dict[str, Any] | None, written: tuple | None) -> None:
        """Record what the controller just wrote for a queued job (its version is unchanged)."""
        entry = self.pending.get(job_id)
        if entry is not None:
            entry.message = message
            entry.written = written
            if entry.result_free:
                entry.pending = pending

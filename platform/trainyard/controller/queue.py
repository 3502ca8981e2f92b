"""The controller's picture of the queue, held in memory and kept in step with the store.

Reading every queued job (and parsing its spec) on every tick cost more than deciding about
it: 1.6 s a tick at 9,400 queued. The mirror reads only what changed:
- a scan of (id, version, phase) of the PENDING and active jobs, through the phase index.
  `version` is bumped by every ORM write (optimistic locking), so a job whose version did
  not move did not change;
- the full rows (with the spec JSON) only of jobs that are new or whose version moved.
The scan itself runs only when a session of this process committed a write to the jobs
table since the last scan (an engine hook, `_WriteWatch`), or every `resync_interval_s`
for writers in other processes. An idle server with a long queue reads nothing.

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

from trainyard.controller import views
from trainyard.scheduler import QueuedJob
from trainyard.store import Database
from trainyard.store import state as st
from trainyard.store.models import JobRow

__all__ = ["QueueMirror", "Queued", "Active", "QUIET"]

# execution option: a write to the jobs table that must not wake the mirror
QUIET = "trainyard_mirror_quiet"
_TRACKED = sorted({st.PENDING} | st.ACTIVE)
_CHUNK = 500  # ids per IN (...) query
_WRITES = ("INSERT INTO jobs ", "UPDATE jobs ", "DELETE FROM jobs ")


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


class _WriteWatch:
    """Calls `on_write` after a transaction that wrote the jobs table commits (or ends).

    A statement that writes `jobs` marks its connection; the mark is read when the
    connection goes back to the pool, which is after the commit, so whoever reacts sees the
    committed rows. A rollback also ends up here: a spurious wake-up costs one scan.
    """

    def __init__(self, db: Database, on_write: Callable[[], None]):
        self.on_write = on_write
        event.listen(db.engine, "after_cursor_execute", self._mark)
        event.listen(db.engine.pool, "checkin", self._checkin)

    def _mark(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith(_WRITES) and not (context is not None and context.execution_options.get(QUIET)):
            conn.info["trainyard_jobs_written"] = True

    def _checkin(self, dbapi_connection, record) -> None:
        if record is not None and record.info.pop("trainyard_jobs_written", False):
            self.on_write()


class QueueMirror:
    """PENDING jobs (`pending`) and jobs that may hold resources (`active`), by id."""

    def __init__(self, db: Database, *, resync_interval_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic):
        self.db = db
        self.resync_interval_s = resync_interval_s
        self.clock = clock
        self.pending: dict[str, Queued] = {}
        self.active: dict[str, Active] = {}
        self.scans = 0
        self.rows_read = 0
        self._dirty = True  # nothing read yet
        self._last_scan = float("-inf")
        self._lock = threading.Lock()
        self._watch = _WriteWatch(db, self.mark_dirty)

    def mark_dirty(self) -> None:
        self._dirty = True

    def sync(self, *, force: bool = False) -> bool:
        """Bring the mirror up to date; True when anything in it changed."""
        now = self.clock()
        if not (force or self._dirty or now - self._last_scan >= self.resync_interval_s):
            return False
        with self._lock:
            # cleared before reading: a commit that lands during the scan marks it again
            self._dirty = False
            self._last_scan = now
            self.scans += 1
            with self.db.session() as s:
                # Core rows, not ORM: a third of the cost at 10,000 rows
                conn = s.connection()
                seen = conn.execute(select(JobRow.id, JobRow.version, JobRow.phase)
                                    .where(JobRow.phase.in_(_TRACKED))).all()
                stale: list[str] = []
                ids: set[str] = set()
                for job_id, version, phase in seen:
                    ids.add(job_id)
                    have = self.pending.get(job_id) if phase == st.PENDING else self.active.get(job_id)
                    if have is None or have.version != version or (phase != st.PENDING and have.phase != phase):
                        stale.append(job_id)
                gone = [i for i in self.pending if i not in ids] + [i for i in self.active if i not in ids]
                if stale:
                    self._load(conn, stale, whole=len(stale) > len(seen) // 2)
            for job_id in gone:
                self.pending.pop(job_id, None)
                self.active.pop(job_id, None)
            return bool(stale or gone)

    def _load(self, conn, job_ids: list[str], *, whole: bool) -> None:
        cols = (JobRow.id, JobRow.version, JobRow.phase, JobRow.spec, JobRow.priority, JobRow.project,
                JobRow.created_at, JobRow.started_at, JobRow.cluster, JobRow.message, JobRow.result)
        if whole:  # after a burst (or at start) one read of everything beats many IN lists
            batches = [conn.execute(select(*cols).where(JobRow.phase.in_(_TRACKED)))]
            wanted: set[str] | None = set(job_ids)
        else:
            batches = [conn.execute(select(*cols).where(JobRow.id.in_(job_ids[i:i + _CHUNK])))
                       for i in range(0, len(job_ids), _CHUNK)]
            wanted = None
        for rows in batches:
            for (job_id, version, phase, spec, priority, project, created_at, started_at, cluster, message,
                 result) in rows:
                if wanted is not None and job_id not in wanted:
                    continue
                self.rows_read += 1
                self.pending.pop(job_id, None)
                self.active.pop(job_id, None)
                job = views.queued_job(job_id, spec or {}, priority=priority or 0,
                                       seq=created_at.timestamp() if created_at else 0.0,
                                       project=project or "default")
                if phase == st.PENDING:
                    record = views.pending_of(result)
                    self.pending[job_id] = Queued(version, job, message, record,
                                                  result is None or record is not None)
                elif phase in st.ACTIVE:
                    self.active[job_id] = Active(version, phase, cluster, started_at, job)

    def noted(self, job_id: str, *, message: str, pending: dict[str, Any] | None, written: tuple | None) -> None:
        """Record what the controller just wrote for a queued job (its version is unchanged)."""
        entry = self.pending.get(job_id)
        if entry is not None:
            entry.message = message
            entry.written = written
            if entry.result_free:
                entry.pending = pending

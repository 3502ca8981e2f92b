"""Group commit: concurrent durable writes share one transaction, so they share its fsync.

A submission is acknowledged only after its row is committed (write-ahead). One commit per
submission made the store's fsync the limit: about as many submissions per second with 32
clients as with one. Here the first writer to arrive leads: it takes every write queued so
far, runs them in one session, commits once, and hands each caller its own result. Writers
that arrive meanwhile queue up for the next leader. A lone writer never waits for company.

The batch's session carries an InsertBatch (store.db): the writes' plain INSERTs (a job, its
first event, an audit row) are held there and written at the end as one multi-row INSERT per
table, instead of one statement per row.

Whoever registered with `on_inserted(callback)` is handed, after each batch's commit, the rows
its InsertBatch wrote ({table name: [values]}): the controller's queue mirror takes new jobs
from there instead of reading them (and their spec JSON) back.

If any write of a batch fails (or the batch's INSERTs do), the batch is rolled back and each
write is retried alone, in a transaction of its own without an InsertBatch (each statement
runs as it comes), so one bad write never fails (or commits) another's. Nothing is
acknowledged before the commit that holds it returned.

Asynchronous callers (the API's submissions, awaited on the event loop) use `run_async`: their
writes queue in the same batches, led by one writer thread of the committer's own, and each
caller's future is settled on its event loop once the commit returned. A request then costs no
worker thread of its own while it waits for the commit, and a commit wakes only its callers.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from sqlalchemy.orm import Session

from trainyard.store import Database
from trainyard.store.db import InsertBatch

__all__ = ["GroupCommitter"]

T = TypeVar("T")
log = logging.getLogger("trainyard.controller")


class _Slot:
    __slots__ = ("work", "finished", "lead", "result", "error", "loop", "future")

    def __init__(self, work: Callable[[Session], Any], loop: asyncio.AbstractEventLoop | None = None,
                 future: asyncio.Future | None = None):
        self.work = work
        self.finished = False
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None
        # run_async's caller: settled on its loop (a slot without one is a waiting thread's)
        self.loop = loop
        self.future = future


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled: the write stands, nobody waits for it
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(slots: list[_Slot]) -> None:
    for slot in slots:
        _settle(slot.future, slot.result, slot.error)


class GroupCommitter:
    def __init__(self, db: Database, *, max_batch: int = 256):
        self.db = db
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Slot] = []
        self._leading = False
        # leads batches whose first write is an asynchronous caller's (it has no thread to lead)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self.commits = 0
        self.writes = 0
        self._on_inserted: list[Callable[[dict[str, list[dict]]], None]] = []

    def on_inserted(self, callback: Callable[[dict[str, list[dict]]], None]) -> None:
        """Call `callback(rows by table)` after each batch whose InsertBatch wrote rows, once it
        committed, in the writer's thread (keep it short; an error in it is logged and ignored)."""
        self._on_inserted.append(callback)

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` and return its result once it is committed."""
        slot = _Slot(work)
        with self._cond:
            self._queue.append(slot)
            if not self._leading:
                self._leading = slot.lead = True
        while True:
            if slot.lead:
                slot.lead = False
                self._lead_once()
            with self._cond:
                while not (slot.finished or slot.lead):
                    self._cond.wait()
                if slot.finished:
                    break
        if slot.error is not None:
            raise slot.error
        return slot.result

    async def run_async(self, work: Callable[[Session], T]) -> T:
        """run() for a coroutine: `work(session)` runs in the committer's writer thread (with
        the batch it joins) and this returns its result once that batch is committed."""
        loop = asyncio.get_running_loop()
        slot = _Slot(work, loop, loop.create_future())
        with self._cond:
            self._queue.append(slot)
            start = not self._leading
            if start:
                self._leading = True
        if start:
            self._writer.submit(self._drain)
        return await slot.future

    def _drain(self) -> None:
        """The writer thread: lead batches while their first write is an asynchronous one."""
        while self._lead_once(writer=True):
            pass

    def _lead_once(self, *, writer: bool = False) -> bool:
        """Commit one batch (it holds the leader's own write), then pass the lead on; True when
        the next batch is the caller's to lead too (its first write has no thread of its own)."""
        with self._cond:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        self._commit(batch)
        waiting = False
        again = False
        with self._cond:
            for slot in batch:
                slot.finished = True
                waiting = waiting or slot.future is None
            if not self._queue:
                self._leading = False
            elif self._queue[0].future is None:
                self._queue[0].lead = True
                waiting = True
            elif writer:
                again = True
            else:
                self._writer.submit(self._drain)
            if waiting:
                self._cond.notify_all()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Slot]] = {}
        for slot in batch:
            if slot.future is not None:
                by_loop.setdefault(slot.loop, []).append(slot)
        for loop, slots in by_loop.items():  # one wake-up of each loop per batch
            try:
                loop.call_soon_threadsafe(_settle_all, slots)
            except RuntimeError:  # that loop is closed: nobody waits for the answers
                pass
        return again

    def _commit(self, batch: list[_Slot]) -> None:
        try:
            with self.db.session() as s:
                inserts = InsertBatch.open(s)
                results = [slot.work(s) for slot in batch]
                if len(inserts):
                    inserts.flush(s.connection())
        except BaseException:
            for slot in batch:  # find the bad one: each on its own
                self._alone(slot)
            return
        self.commits += 1
        self.writes += len(batch)
        for slot, result in zip(batch, results):
            slot.result = result
        if inserts.written:
            for callback in self._on_inserted:
                try:
                    callback(inserts.written)
                except Exception:  # a listener must not turn a committed write into a failed one
                    log.exception("a group-commit listener failed")

    def _alone(self, slot: _Slot) -> None:
        try:
            with self.db.session() as s:
                slot.result = slot.work(s)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:  # the caller re-raises it in its own thread
            slot.error = exc

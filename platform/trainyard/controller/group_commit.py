"""Group commit: concurrent durable writes share one transaction, so they share its fsync.

A submission is acknowledged only after its row is committed (write-ahead). One commit per
submission made the store's fsync the limit: about as many submissions per second with 32
clients as with one. Here the first writer to arrive leads: it takes every write queued so
far, runs them in one session, commits once, and hands each caller its own result. Writers
that arrive meanwhile queue up for the next leader. A lone writer never waits for company.

If any write of a batch fails, the batch is rolled back and each write is retried alone, so
one bad write never fails (or commits) another's. Nothing is acknowledged before the commit
that holds it returned.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

from sqlalchemy.orm import Session

from trainyard.store import Database

__all__ = ["GroupCommitter"]

T = TypeVar("T")


class _Slot:
    __slots__ = ("work", "finished", "lead", "result", "error")

    def __init__(self, work: Callable[[Session], Any]):
        self.work = work
        self.finished = False
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    def __init__(self, db: Database, *, max_batch: int = 256):
        self.db = db
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Slot] = []
        self._leading = False
        self.commits = 0
        self.writes = 0

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

    def _lead_once(self) -> None:
        """Commit one batch (it holds the leader's own write), then pass the lead on."""
        with self._cond:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        self._commit(batch)
        with self._cond:
            for slot in batch:
                slot.finished = True
            if self._queue:
                self._queue[0].lead = True
            else:
                self._leading = False
            self._cond.notify_all()

    def _commit(self, batch: list[_Slot]) -> None:
        try:
            with self.db.session() as s:
                results = [slot.work(s) for slot in batch]
        except BaseException:
            for slot in batch:  # find the bad one: each on its own
                self._alone(slot)
            return
        self.commits += 1
        self.writes += len(batch)
        for slot, result in zip(batch, results):
            slot.result = result

    def _alone(self, slot: _Slot) -> None:
        try:
            with self.db.session() as s:
                slot.result = slot.work(s)
            self.commits += 1
            self.writes += 1
        except BaseException as exc:  # the caller re-raises it in its own thread
            slot.error = exc

"""A bound on followed logs (`GET /v1/jobs/{id}/logs?follow=true`).

A followed log is a synchronous generator that blocks between lines (controller.service
`JobService.stream_log`), so each open one holds a thread of the server's worker pool for as
long as the client stays, possibly days. That pool (anyio's, 40 threads by default) also runs
every synchronous route. Unbounded, one user opening a few dozen streams would stall the whole
API for everyone. So open follows are counted per user and in all, and the one past either
limit gets a 429 that says how many are open and what to do instead, before its stream starts.

The count is released when the response finishes however it ends (the job ended, the client
went away, the server stops): `GatedStream` releases in a `finally` around the whole response,
since Starlette runs neither a background task nor the generator's own `finally` when a client
disconnects before the first chunk.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Callable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from trainyard.errors import TooManyError

__all__ = ["FollowGate", "GatedStream"]


class FollowGate:
    """Counts open follows; `enter` refuses past `per_user` for the caller or `total` in all."""

    def __init__(self, *, per_user: int, total: int):
        self.per_user, self.total = per_user, total
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def enter(self, user: str, *, job_id: str) -> Callable[[], None]:
        """Take a place for `user`, or raise TooManyError; returns the release (idempotent)."""
        fix = (f"close a followed log you no longer read (Ctrl-C), or read without following: "
               f"`trainyard jobs logs {job_id} --tail 200`")
        with self._lock:
            if self._open[user] >= self.per_user:
                raise TooManyError(f"{user} already follows {self._open[user]} job logs "
                                   f"(at most {self.per_user} at once per user)", fix=fix)
            if sum(self._open.values()) >= self.total:
                raise TooManyError(f"the server already streams {self.total} followed logs, its limit",
                                   fix=fix + ", or try again later")
            self._open[user] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if released:
                    return
                released = True
                self._open[user] -= 1
                if self._open[user] <= 0:
                    del self._open[user]
        return release

    def open_for(self, user: str) -> int:
        with self._lock:
            return self._open[user]

    def open_total(self) -> int:
        with self._lock:
            return sum(self._open.values())


class GatedStream(StreamingResponse):
    """A StreamingResponse that gives its place in a FollowGate back when it is done."""

    def __init__(self, *args, release: Callable[[], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()

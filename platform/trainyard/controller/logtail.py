"""Following jobs' driver logs: one reader per Ray submission, shared by everyone who asks.

Ray 2.60's Jobs REST API gives a job's whole log (`GET /api/jobs/{id}/logs`, no offset) or a
websocket that sends it from the start and then each new chunk until the job ends
(`/api/jobs/{id}/logs/tail`). On a head with token auth that websocket closes at once, so the
cluster client then follows the driver's log file through Ray's state API
(`/api/v0/logs/stream`), which also sends each byte once (RayClusterClient.tail_logs).
Reading progress by downloading the whole log on every poll grows with the log; a `LogTail`
instead keeps one such follow open in a thread: `offset` counts what it read, and the last
progress line and the newest lines (bounded) are kept in memory for whoever asks
(`JobService._progress`, log streams).

Ray's log lines carry no time, so each line is stamped when the server read it: lines that
were written before the server began to follow the job carry that moment. A `since` filter
is as exact as that.

`LogTails` holds the readers: at most `max_tails`, the least recently used closed first,
and a reader nobody asked for in `idle_s` is closed on the next look-up.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterator

from trainyard.protocol import PROGRESS, parse_line

__all__ = ["Line", "LogTail", "LogTails", "MAX_LINES", "MAX_LINE_CHARS"]

log = logging.getLogger("trainyard.controller")

MAX_LINES = 20_000  # newest lines kept per job; older ones only through a full read of the log
MAX_LINE_CHARS = 64 * 1024  # a longer "line" (no newline in sight) is cut into pieces this long

# stop event -> chunks of the log, from its start, until the job ended
Opener = Callable[[threading.Event], Iterator[str]]


@dataclass(frozen=True)
class Line:
    seq: int  # 0-based index of the line in the log (as far as this reader saw it)
    at: float  # wall time the server read it
    text: str  # without its newline


class LogTail:
    """One job's log, followed. `feed` is the pure part (tested without threads)."""

    def __init__(self, opener: Opener | None = None, *, max_lines: int = MAX_LINES,
                 clock: Callable[[], float] = time.time):
        self.opener = opener
        self.clock = clock
        self.lines: deque[Line] = deque(maxlen=max_lines)
        self.next_seq = 0
        self.offset = 0  # characters read from Ray so far
        self.progress: dict | None = None  # the last TRAINYARD_PROGRESS payload
        self.error: str | None = None
        self.done = False
        self.settled = False  # someone waited for the replay once: later readers need not
        self.last_chunk_at: float | None = None  # monotonic
        self.last_used = time.monotonic()
        self._partial = ""
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ reading Ray
    def feed(self, chunk: str) -> None:
        """Take the next chunk of the log: whole lines are kept, a partial one waits for its end."""
        now = self.clock()
        with self._cond:
            self.offset += len(chunk)
            text = self._partial + chunk
            parts = text.split("\n")
            self._partial = parts.pop()
            while len(self._partial) > MAX_LINE_CHARS:
                parts.append(self._partial[:MAX_LINE_CHARS])
                self._partial = self._partial[MAX_LINE_CHARS:]
            for part in parts:
                self._add(part.rstrip("\r"), now)
            self.last_chunk_at = time.monotonic()
            self._cond.notify_all()

    def _add(self, text: str, now: float) -> None:
        parsed = parse_line(text) if "TRAINYARD_" in text else None
        if parsed and parsed[0] == PROGRESS:
            self.progress = parsed[1]
        self.lines.append(Line(self.next_seq, now, text))
        self.next_seq += 1

    def finish(self, error: str | None = None) -> None:
        with self._cond:
            if self._partial:
                self._add(self._partial, self.clock())
                self._partial = ""
            self.error = error
            self.done = True
            self._cond.notify_all()

    def start(self) -> "LogTail":
        assert self.opener is not None and self._thread is None
        self._thread = threading.Thread(target=self._run, name="trainyard-logtail", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        error = None
        try:
            for chunk in self.opener(self._stop):
                self.feed(chunk)
        except Exception as exc:  # a reader must never take the server down; say why it stopped
            error = str(exc)[:500]
            log.info("log tail stopped: %s", error)
        finally:
            self.finish(error)

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ for readers
    def touch(self) -> None:
        self.last_used = time.monotonic()

    def wait_settled(self, *, quiet_s: float = 0.3, timeout_s: float = 5.0) -> None:
        """Wait until the first chunk came and then none for `quiet_s` (Ray's replay of what was
        written before we attached is done), or the log ended, or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._wait_replay(deadline, quiet_s)
            self.settled = True

    def _wait_replay(self, deadline: float, quiet_s: float) -> None:
        while not self.done:
            now = time.monotonic()
            if now >= deadline:
                return
            if self.last_chunk_at is not None and now - self.last_chunk_at >= quiet_s:
                return
            wait = deadline - now if self.last_chunk_at is None else quiet_s - (now - self.last_chunk_at)
            self._cond.wait(max(0.01, min(wait, deadline - now)))

    def snapshot(self, *, tail: int | None = None, since: float | None = None) -> tuple[list[Line], int]:
        """The kept lines (the last `tail`, those read at or after `since`), and the seq of the
        newest line read so far (-1: none): follow from there with `after`."""
        with self._cond:
            lines, newest = list(self.lines), self.next_seq - 1
        if since is not None:
            lines = [ln for ln in lines if ln.at >= since]
        if tail is not None:
            lines = lines[-tail:] if tail else []
        return lines, newest

    def after(self, seq: int, *, timeout_s: float) -> tuple[list[Line], bool]:
        """Lines past `seq` (waiting up to `timeout_s` for some), and whether the log ended
        (then no more will come). Lines that dropped out of the buffer are skipped."""
        with self._cond:
            if not self.done and (not self.lines or self.lines[-1].seq <= seq):
                self._cond.wait(timeout_s)
            fresh = [ln for ln in self.lines if ln.seq > seq] if self.lines and self.lines[-1].seq > seq else []
            return fresh, self.done  # done: every line is in the buffer, so `fresh` holds the rest


class LogTails:
    """The readers, by (cluster, submission id): bounded, idle ones closed."""

    def __init__(self, open_for: Callable[[str, str], Opener], *, max_tails: int = 256, idle_s: float = 300.0):
        self.open_for = open_for
        self.max_tails = max_tails
        self.idle_s = idle_s
        self._tails: "OrderedDict[tuple[str, str], LogTail]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cluster: str, submission_id: str) -> LogTail:
        key = (cluster, submission_id)
        closing: list[LogTail] = []
        with self._lock:
            tail = self._tails.get(key)
            if tail is None or (tail.done and tail.error):  # a reader that failed is tried again
                tail = LogTail(self.open_for(cluster, submission_id))
                self._tails[key] = tail
                tail.start()
            self._tails.move_to_end(key)
            tail.touch()
            now = time.monotonic()
            for other_key, other in list(self._tails.items()):
                if other is not tail and now - other.last_used > self.idle_s:
                    closing.append(self._tails.pop(other_key))
            while len(self._tails) > self.max_tails:
                closing.append(self._tails.popitem(last=False)[1])
        for old in closing:
            old.close()
        return tail

    def __len__(self) -> int:
        return len(self._tails)

    def close(self) -> None:
        with self._lock:
            tails, self._tails = list(self._tails.values()), OrderedDict()
        for tail in tails:
            tail.close()

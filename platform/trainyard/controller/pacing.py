"""How the controller's ticks share the CPU with the API they run beside.

The tick runs in a worker thread of the API's process and shares its GIL. Two limits keep a
long queue's tick (hundreds of ms of CPU at 50,000 queued) from starving a burst of
submissions:

- `pause_after`: between ticks, the loop waits long enough that ticks take at most
  `share` of the time (Slurm's sched_min_interval answers the same problem).
- `Pacer`: within a tick. Its long loops (the queue mirror's rows, the plan, the notes) call
  `step()`; after every `grain_s` of the thread's CPU it sleeps so that the tick keeps to
  `share` there too. Without it, a 300 ms tick held the GIL half of every switch interval for
  its whole length, the event loop ran at half speed meanwhile, and the requests of that
  stretch made the latency tail. A paced tick takes longer, and the loop never drops below
  1 - share of the CPU.

Both count CPU time (time.thread_time), not wall time: a tick waiting on Ray's dashboard or
the store leaves the CPU to the API, and pacing that would only delay dispatch.

While the API is serving requests, the Pacer keeps the tick to a smaller share, `busy_share`:
requests come first, and the scheduler takes what they leave (Slurm defers scheduling for the
same reason while its RPC count is high, `max_rpc_cnt`). An idle server's tick runs at `share`.
Measured at 32 clients on 2 cores with ~20,000 queued (benchmarks/submit_throughput.py): with
the tick held to 25% of the CPU, ~1,400 submissions/s at p99 ~55 ms; at 5%, ~1,600/s at ~38 ms.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["pause_after", "Pacer", "RequestGauge", "GRAIN_S"]

GRAIN_S = 0.001  # CPU a tick may spend before it rests (the GIL's switch interval is 0.5 ms)
_MAX_REST_BASIS_S = 0.02  # a late step (a long store read between two) rests for at most this much CPU


def pause_after(took_s: float, *, poll_interval_s: float, max_share: float, slept_s: float = 0.0) -> float:
    """How long the loop waits after a tick that used `took_s` of CPU and rested `slept_s`
    within itself (Pacer): the poll interval, or longer when ticks would otherwise take more
    than `max_share` of the time (tick / (tick + rests + wait) <= share)."""
    return max(poll_interval_s, took_s * (1.0 / max_share - 1.0) - slept_s)


class Pacer:
    """`step()` rests the calling thread to keep it at `share` of the CPU, only inside
    `pacing()` and only in the thread that entered it: a tick run by a test, or a queue
    sync run outside the loop, is never slowed.

    `activity`: a counter of the requests the API has started (RequestGauge.started). When
    it moved since the last rest, the API is busy and the rest keeps the thread to
    `busy_share` instead (never more than `share`)."""

    def __init__(self, share: float, *, busy_share: float | None = None,
                 activity: Callable[[], int] | None = None, grain_s: float = GRAIN_S,
                 clock: Callable[[], float] = time.thread_time, sleep: Callable[[float], None] = time.sleep):
        self.share = share
        # share 1 turns pacing off, the busy share's included (rests and the pause after a tick)
        self.busy_share = share if busy_share is None or share >= 1 else min(busy_share, share)
        self.activity = activity
        self._seen = activity() if activity is not None else 0
        self.busy_rests = 0  # rests taken at busy_share: how often the API held the tick back
        self.tick_share = share  # the share that applied at the end of the last paced stretch
        self.grain_s = grain_s
        self.clock = clock
        self.sleep = sleep
        self.slept_s = 0.0  # rested within the current (or last) paced stretch
        self._thread: int | None = None
        self._since = 0.0

    @contextmanager
    def pacing(self) -> Iterator[None]:
        self._thread = threading.get_ident()
        self._since = self.clock()
        self.slept_s = 0.0
        try:
            yield
        finally:
            self._thread = None
            # the share the loop's pause after this tick keeps to (pause_after): the busy one
            # when requests came in since the last rest, so that the tick's CPU spent between
            # two steps (store reads, the commit of its notes) yields to them too
            self.tick_share = self._current_share()

    def step(self) -> None:
        if self._thread is None or self.share >= 1 or threading.get_ident() != self._thread:
            return
        used = self.clock() - self._since
        if used >= self.grain_s:
            share = self._current_share()
            self.busy_rests += share < self.share
            rest = min(used, _MAX_REST_BASIS_S) * (1.0 / share - 1.0)
            self.sleep(rest)
            self.slept_s += rest
            self._since = self.clock()

    def busy(self) -> bool:
        """Whether the API started requests since the last rest (or the last paced stretch's
        end): the next stretch will most likely be paced at busy_share."""
        return self.activity is not None and self.activity() != self._seen

    def _current_share(self) -> float:
        if self.activity is None:
            return self.share
        seen, self._seen = self._seen, self.activity()
        if seen == self._seen:
            return self.share
        return self.busy_share


class RequestGauge:
    """The requests the API has started: the server's outermost layer counts them
    (api.app.CountRequests) and the controller's Pacer reads the count. One int and no lock:
    a lost increment would only move one rest from one share to the other."""

    def __init__(self) -> None:
        self.started = 0

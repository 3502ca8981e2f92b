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
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["pause_after", "Pacer", "GRAIN_S"]

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
    sync run outside the loop, is never slowed."""

    def __init__(self, share: float, *, grain_s: float = GRAIN_S, clock: Callable[[], float] = time.thread_time,
                 sleep: Callable[[float], None] = time.sleep):
        self.share = share
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

    def step(self) -> None:
        if self._thread is None or self.share >= 1 or threading.get_ident() != self._thread:
            return
        used = self.clock() - self._since
        if used >= self.grain_s:
            rest = min(used, _MAX_REST_BASIS_S) * (1.0 / self.share - 1.0)
            self.sleep(rest)
            self.slept_s += rest
            self._since = self.clock()

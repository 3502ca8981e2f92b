"""The loop's counters: mean training losses between reports and in the progress window, and step timing."""
from __future__ import annotations

import time

__all__ = ["Meters"]


class Meters:
    """Running sums of each optimizer step's values, and optimizer steps per second after a
    warm-up (the first steps pay for lazy init); the median step time shrugs off a noisy
    neighbour."""

    def __init__(self, *, start_step: int, warmup: int):
        self.start_step, self.warmup = start_step, warmup
        self.started = time.monotonic()
        self._sums: dict[str, float] = {}
        self._count = 0
        self._window: dict[str, float] = {}
        self._window_n = 0
        self.first_step_unix: float | None = None
        self._warm_at: tuple[int, float] | None = None
        self._last_at: tuple[int, float] | None = None
        self._step_times: list[float] = []
        # the cost record's busy fraction: wall time inside optimizer steps (data loading and
        # evaluation between them excluded), over the steps this worker group ran
        self.started_unix = time.time()
        self.steps_run = 0
        self.step_seconds = 0.0

    def step_done(self, step: int, values: dict[str, float]) -> None:
        if self.first_step_unix is None:
            self.first_step_unix = time.time()
        now = time.perf_counter()
        if step - self.start_step == self.warmup:
            self._warm_at = (step, now)
        elif self._warm_at is not None:
            self._step_times.append(now - self._last_at[1])
        self._last_at = (step, now)
        for k, v in values.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
            self._window[k] = self._window.get(k, 0.0) + v
        self._count += 1
        self._window_n += 1

    def busy(self, seconds: float) -> None:
        """Add the wall time of one optimizer step (all its micro-batches' train_step calls)."""
        self.step_seconds += seconds
        self.steps_run += 1

    def take_means(self) -> dict[str, float]:
        """Mean of each value since the last report; starts the next report's sums."""
        means = {k: v / max(1, self._count) for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return means

    def take_window(self) -> dict[str, float]:
        """Mean of each value since the last progress line; starts the next window."""
        means = {k: v / self._window_n for k, v in self._window.items()}
        self._window, self._window_n = {}, 0
        return means

    def timing(self) -> dict[str, float]:
        timing: dict[str, float] = {}
        warm, last = self._warm_at, self._last_at
        if warm and last and last[0] > warm[0]:
            timing["train_steps_per_s"] = (last[0] - warm[0]) / (last[1] - warm[1])
        if self._step_times:
            timing["train_step_time_median_s"] = sorted(self._step_times)[len(self._step_times) // 2]
        if self.first_step_unix is not None:
            timing["trainyard_first_step_unix"] = self.first_step_unix
        return timing

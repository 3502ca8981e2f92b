"""Estimated start times for jobs waiting in a cluster's line, from running jobs' expected ends.

A forecast of one cluster's free resources over time, in totals (not per node, so an
estimate can be early when a gang does not pack): what is free now, plus what each running
job gives back at its expected end, minus what jobs ahead in line will take from their
estimated start until their expected end. A waiting job's estimate is the first moment from
which its demand stays available for good (its own end is not counted on, so estimates err
late rather than early). Jobs are estimated in line order, each claiming its slot, so an estimate is never
earlier than that of a job ahead of it on the same cluster. Bounded by `depth` per cluster.
"""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["Forecast", "demand_total"]

_EPS = 1e-9
_NEVER = float("inf")


class Forecast:
    """One cluster's free resources over time; `events` are (time, change) pairs."""

    def __init__(self, free_nodes: Sequence[Mapping[str, float]], *, now: float):
        self.now = now
        self.free: dict[str, float] = {}
        for node in free_nodes:
            for key, value in node.items():
                self.free[key] = self.free.get(key, 0.0) + value
        self.events: list[tuple[float, dict[str, float]]] = []

    def release(self, at: float | None, amounts: Mapping[str, float]) -> None:
        if at is not None:
            self.events.append((max(at, self.now), dict(amounts)))

    def claim(self, start: float, runtime: float | None, amounts: Mapping[str, float]) -> None:
        self.events.append((start, {k: -v for k, v in amounts.items()}))
        if runtime is not None:
            self.events.append((start + runtime, dict(amounts)))

    def earliest(self, amounts: Mapping[str, float], *, not_before: float) -> float | None:
        """First time >= not_before from which `amounts` stay free for good (a job's own end
        is not counted on: the estimate errs late, not early); None when never."""
        self.events.sort(key=lambda e: e[0])
        keys = [k for k, v in amounts.items() if v > 0]
        times = [self.now] + [t for t, _ in self.events]
        levels = [{k: self.free.get(k, 0.0) for k in keys}]
        for _, change in self.events:
            prev = levels[-1]
            levels.append({k: prev[k] + change.get(k, 0.0) for k in keys})
        # lowest level from each point on
        floor = [dict(levels[-1])]
        for level in reversed(levels[:-1]):
            last = floor[-1]
            floor.append({k: min(level[k], last[k]) for k in keys})
        floor.reverse()
        for i, t in enumerate(times):
            if i + 1 < len(times) and times[i + 1] <= not_before:
                continue  # a later event at or before `not_before` sets the level then
            if all(floor[i][k] + _EPS >= amounts[k] for k in keys):
                return max(t, not_before)
        return None


def demand_total(per_worker: Mapping[str, float], workers: int) -> dict[str, float]:
    return {k: v * workers for k, v in per_worker.items() if v}

"""One job run, several worker groups: what each (re)start of the group ran, for the cost record. Pure.

Ray Train restarts a job's worker group inside one driver run: after a worker or its node is
lost (failure.max_failures), and, for an elastic job, to shrink onto the workers left or grow
back when the autoscaler adds room. Each group is a *segment*: a world size held from one start
to the next. Rank 0 of each group tags its progress items with its own figures
(`segment_figures`); the driver (`Segments`, fed by runner.job's progress printer) keeps one
entry per group and sends the list with the result's `usage` as `segments`:

    {"workers": 2, "start_unix": ..., "ready_unix": ..., "last_unix": ..., "resumed_step": 0,
     "steps": 40, "step_seconds": 12.5, "ckpt_steps": 30, "ckpt_step_seconds": 9.4}

start_unix is when rank 0 began building the group (a Trainer), ready_unix when it was about to
take its first step (checkpoint restored), last_unix its last report. steps/step_seconds are
the steps the group ran and the seconds inside them; ckpt_* the same at its last checkpoint, so
the work a restart threw away is steps - ckpt_steps. The controller turns segments into
allocations (controller.costs.allocations_for): a restart onto another world size is a
`resize`, onto the same one a `restart`, and the time from the old group's last report to the
new group's first step is time lost to it (trainyard.costs.record).
"""
from __future__ import annotations

import time
from typing import Any

__all__ = ["segment_figures", "Segments", "MAX_SEGMENTS"]

# a job that flaps for days must not grow its result line without bound: the first segment and
# the latest ones are kept (the cost record needs where it began and where it ended)
MAX_SEGMENTS = 200


def segment_figures(*, world: int, started_unix: float, steps: int, step_seconds: float,
                    checkpoint: bool = False, start: bool = False, resumed_step: int | None = None,
                    now: float | None = None) -> dict[str, Any]:
    """What rank 0 attaches to a progress item: its group's size and work so far."""
    out: dict[str, Any] = {"workers": int(world), "started_unix": float(started_unix), "steps": int(steps),
                           "step_seconds": float(step_seconds), "unix": time.time() if now is None else float(now)}
    if checkpoint:
        out["checkpoint"] = True
    if start:
        out["start"] = True
        out["resumed_step"] = int(resumed_step or 0)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
        return None
    return float(value)


class Segments:
    """The driver's list of worker groups, built from rank 0's progress items in their order."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self.dropped = 0

    @property
    def current(self) -> dict[str, Any] | None:
        return self._items[-1] if self._items else None

    @property
    def workers(self) -> int | None:
        return self._items[-1]["workers"] if self._items else None

    def observe(self, item: dict[str, Any]) -> bool:
        """Take one progress item; True when it began a new segment (a (re)started group)."""
        seg = item.get("segment") if isinstance(item, dict) else None
        if not isinstance(seg, dict):
            return False
        workers, started = seg.get("workers"), _number(seg.get("started_unix"))
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1 or started is None:
            return False
        cur = self.current
        new = cur is None or seg.get("start") or cur["start_unix"] != started
        if new:
            cur = {"workers": workers, "start_unix": started, "ready_unix": _number(seg.get("unix")) or started,
                   "last_unix": _number(seg.get("unix")) or started, "resumed_step": int(seg.get("resumed_step") or 0),
                   "steps": 0, "step_seconds": 0.0, "ckpt_steps": 0, "ckpt_step_seconds": 0.0}
            self._items.append(cur)
            if len(self._items) > MAX_SEGMENTS:
                del self._items[1]
                self.dropped += 1
        steps, seconds, unix = seg.get("steps"), _number(seg.get("step_seconds")), _number(seg.get("unix"))
        if isinstance(steps, int) and not isinstance(steps, bool) and steps >= cur["steps"]:
            cur["steps"] = steps
            if seconds is not None:
                cur["step_seconds"] = max(cur["step_seconds"], seconds)
            if seg.get("checkpoint"):
                cur["ckpt_steps"], cur["ckpt_step_seconds"] = cur["steps"], cur["step_seconds"]
        if unix is not None:
            cur["last_unix"] = max(cur["last_unix"], unix)
        return bool(new)

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._items]

"""Stuck-job detection: a running job whose workers report no new step for its stall timeout. Pure.

The controller feeds `StallWatch.observe` with the last step it read from the job's progress
lines (TRAINYARD_PROGRESS; None before the first one) and its own clock; the watch says
whether the job just stalled or just came back. The clock starts when the controller first
sees the job running, so start-up (image pull, DeepSpeed init, data download) counts against
the timeout too: a job that never reaches its first step is stuck as well.

What the timeout and the policy are for one job: `policy_for(spec, settings)` (the spec's
failure.stall_timeout_s / failure.on_stall, else the server's).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["StallPolicy", "StallWatch", "policy_for", "POLICIES", "STALLED", "RESUMED"]

POLICIES = ("stop", "requeue", "none")
STALLED = "stalled"
RESUMED = "resumed"


@dataclass(frozen=True)
class StallPolicy:
    timeout_s: float
    on_stall: str  # stop | requeue | none
    max_requeues: int = 2

    def outcome(self, *, stalls_so_far: int) -> str:
        """What a stopped, stalled job becomes: "requeue" (PENDING) or "fail" (FAILED)."""
        if self.on_stall == "requeue" and stalls_so_far <= self.max_requeues:
            return "requeue"
        return "fail"


def policy_for(spec: Mapping[str, Any], settings: Any) -> StallPolicy:
    failure = (spec or {}).get("failure") or {}
    timeout = failure.get("stall_timeout_s") or settings.stall_timeout_s
    on_stall = failure.get("on_stall") or settings.on_stall
    return StallPolicy(timeout_s=float(timeout), on_stall=str(on_stall),
                       max_requeues=int(getattr(settings, "stall_max_requeues", 2)))


@dataclass
class _Seen:
    step: Any
    since: float  # when this step was first seen (or the job first seen running)
    stalled: bool = False


@dataclass
class StallWatch:
    """Per job: the last step seen and since when. Memory only: after a server restart the
    clock starts again, so a stall is detected late, never early."""

    seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, job_id: str, step: Any, *, now: float, timeout_s: float) -> str | None:
        """STALLED when the job has shown no new step for `timeout_s`, RESUMED when a stalled
        job's step moved, else None. Each is said once per change."""
        entry = self.seen.get(job_id)
        if entry is None:
            self.seen[job_id] = _Seen(step=step, since=now)
            return None
        if step is not None and step != entry.step:
            was = entry.stalled
            self.seen[job_id] = _Seen(step=step, since=now)
            return RESUMED if was else None
        if not entry.stalled and now - entry.since >= timeout_s:
            entry.stalled = True
            return STALLED
        return None

    def idle_for(self, job_id: str, *, now: float) -> float:
        entry = self.seen.get(job_id)
        return 0.0 if entry is None else now - entry.since

    def forget(self, job_id: str) -> None:
        self.seen.pop(job_id, None)

    def keep_only(self, job_ids) -> None:
        """Drop jobs that are no longer running (bounded memory)."""
        live = set(job_ids)
        for job_id in [j for j in self.seen if j not in live]:
            del self.seen[job_id]

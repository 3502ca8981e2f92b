"""Why a job is pending: structured reasons that the API and CLI can show as they are.

Every queued job that plan_tick does not dispatch gets a `Pending`: one `Reason` (a stable
code plus a sentence), its place in its project's queue and in the cluster's queue, and an
estimated start time when one can be computed from running jobs' expected ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["QUOTA", "BUDGET", "CAPACITY", "FAIR_SHARE", "BEHIND_JOB", "CLUSTER_UNHEALTHY", "PREEMPTING",
           "CODES", "Reason", "Pending"]

QUOTA = "quota"  # the project is over its quota (or no idle quota is left to borrow)
BUDGET = "budget"  # the project's GPU-/CPU-hour budget for the window is spent
CAPACITY = "capacity"  # first in line, but the cluster is full: waits for running jobs to end
FAIR_SHARE = "fair_share"  # behind a job of a project that is further under its fair share
BEHIND_JOB = "behind_job"  # behind a job ahead of it in line (same project, or higher priority)
CLUSTER_UNHEALTHY = "cluster_unhealthy"  # every cluster it may use is unreachable
PREEMPTING = "preempting"  # running jobs are being preempted to make room for it
CODES = (QUOTA, BUDGET, CAPACITY, FAIR_SHARE, BEHIND_JOB, CLUSTER_UNHEALTHY, PREEMPTING)


@dataclass(frozen=True)
class Reason:
    code: str  # one of CODES
    message: str  # a sentence for people
    cluster: str | None = None
    blocking_job: str | None = None  # for behind_job / fair_share: the job ahead
    resource: str | None = None  # for quota / budget: which resource
    victims: tuple[str, ...] = ()  # for preempting

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        for key in ("cluster", "blocking_job", "resource"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.victims:
            out["victims"] = list(self.victims)
        return out


@dataclass(frozen=True)
class Pending:
    job_id: str
    reason: Reason
    position_in_queue: int  # 1-based, in the cluster-wide (fair) order
    position_in_project: int  # 1-based, among its project's queued jobs
    position_in_cluster: int | None = None  # 1-based, among jobs that may use reason.cluster
    estimated_start: float | None = None  # same clock as `now`; None when it cannot be computed

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "reason": self.reason.to_dict(), "position_in_queue": self.position_in_queue,
                "position_in_project": self.position_in_project, "position_in_cluster": self.position_in_cluster,
                "estimated_start": self.estimated_start}

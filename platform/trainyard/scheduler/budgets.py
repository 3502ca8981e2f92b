"""GPU-hour and CPU-hour budgets per project over a rolling window.

Usage is counted from what jobs really held: `UsageRecord`s (intervals of resources, the
open ones still running) clipped to the window [now - window, now]. When a budget is spent,
new jobs of the project that need that resource wait (code 'budget'); running ones go on.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from trainyard.scheduler.model import DAY, Budget, Project, UsageRecord
from trainyard.scheduler.reasons import BUDGET, Reason

__all__ = ["BudgetStatus", "budget_status", "budget_statuses", "budget_reason", "resource_hours"]

_KINDS = (("GPU", "gpu"), ("CPU", "cpu"))


def resource_hours(records: Iterable[UsageRecord], *, start: float, end: float) -> dict[str, float]:
    """Resource-hours held within [start, end], per resource."""
    out: dict[str, float] = {}
    for rec in records:
        lo = max(rec.start, start)
        hi = min(end if rec.end is None else rec.end, end)
        if hi <= lo:
            continue
        hours = (hi - lo) / 3600.0
        for key, amount in rec.resources.items():
            out[key] = out.get(key, 0.0) + amount * hours
    return out


@dataclass(frozen=True)
class BudgetStatus:
    """What `projects show` displays. Burn rates are resource-hours per hour over the
    recent `burn_window_s`; `*_exhausted_at` assumes that rate goes on (None: never, or no budget)."""

    project: str
    window_s: float
    gpu_hours_used: float
    cpu_hours_used: float
    gpu_hours_budget: float | None
    cpu_hours_budget: float | None
    gpu_burn_per_hour: float
    cpu_burn_per_hour: float
    gpu_exhausted_at: float | None
    cpu_exhausted_at: float | None

    @property
    def gpu_hours_remaining(self) -> float | None:
        return None if self.gpu_hours_budget is None else max(0.0, self.gpu_hours_budget - self.gpu_hours_used)

    @property
    def cpu_hours_remaining(self) -> float | None:
        return None if self.cpu_hours_budget is None else max(0.0, self.cpu_hours_budget - self.cpu_hours_used)

    def exhausted(self) -> set[str]:
        """Resources ("GPU", "CPU") whose budget is spent."""
        out = set()
        for key, kind in _KINDS:
            budget = getattr(self, f"{kind}_hours_budget")
            if budget is not None and getattr(self, f"{kind}_hours_used") >= budget - 1e-9:
                out.add(key)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"project": self.project, "window_s": self.window_s}
        for _, kind in _KINDS:
            out[kind] = {"used_hours": getattr(self, f"{kind}_hours_used"),
                         "budget_hours": getattr(self, f"{kind}_hours_budget"),
                         "remaining_hours": getattr(self, f"{kind}_hours_remaining"),
                         "burn_per_hour": getattr(self, f"{kind}_burn_per_hour"),
                         "exhausted_at": getattr(self, f"{kind}_exhausted_at")}
        return out


def budget_status(project: str, records: Iterable[UsageRecord], budget: Budget | None, *, now: float,
                  burn_window_s: float = DAY) -> BudgetStatus:
    """Used, remaining and burn rate of one project's budget at `now` (records of other
    projects are ignored)."""
    window = budget.window_s if budget is not None else 30 * DAY
    mine = [r for r in records if r.project == project]
    used = resource_hours(mine, start=now - window, end=now)
    recent = resource_hours(mine, start=now - burn_window_s, end=now)
    values: dict[str, Any] = {}
    for key, kind in _KINDS:
        total = (getattr(budget, f"{kind}_hours") if budget is not None else None)
        burn = recent.get(key, 0.0) / (burn_window_s / 3600.0)
        spent = used.get(key, 0.0)
        if total is None or burn <= 0:
            at = None if total is None or spent < total else now
        else:
            at = now + max(0.0, total - spent) / burn * 3600.0
        values.update({f"{kind}_hours_used": spent, f"{kind}_hours_budget": total,
                       f"{kind}_burn_per_hour": burn, f"{kind}_exhausted_at": at})
    return BudgetStatus(project=project, window_s=window, **values)


def budget_statuses(projects: Mapping[str, Project], records: Iterable[UsageRecord], *, now: float,
                    burn_window_s: float = DAY) -> dict[str, BudgetStatus]:
    """One status per project that has a budget; the records are read once."""
    grouped: dict[str, list[UsageRecord]] = defaultdict(list)
    for rec in records:
        if rec.project in projects and projects[rec.project].budget is not None:
            grouped[rec.project].append(rec)
    return {name: budget_status(name, grouped.get(name, ()), p.budget, now=now, burn_window_s=burn_window_s)
            for name, p in projects.items() if p.budget is not None}


def budget_reason(status: BudgetStatus | None, demand: Mapping[str, float]) -> Reason | None:
    """Why a job with this demand must wait for its project's budget, or None."""
    if status is None:
        return None
    for key in sorted(status.exhausted()):
        if demand.get(key, 0.0) > 0:
            kind = key.lower()
            days = status.window_s / DAY
            return Reason(BUDGET, f"project '{status.project}' has used {getattr(status, kind + '_hours_used'):.1f} "
                          f"of its {getattr(status, kind + '_hours_budget'):g} {key}-hours over the last {days:g} days",
                          resource=key)
    return None

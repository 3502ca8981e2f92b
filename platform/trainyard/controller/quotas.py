"""Quotas, budgets and the usage ledger of projects: checking settings, and turning store
rows into the scheduler's plain data (`Project`, `UsageRecord`). The rows are store/quotas.py's.

What is stored on a project (projects.weight/quota/budget):
  weight  fair-share weight, > 0
  quota   {"nominal": {res: amount}, "borrowing_limit": {res: amount} | None,
           "lending_limit": {res: amount} | None}
  budget  {"gpu_hours": h | None, "cpu_hours": h | None, "window_days": d}
Resource names are the scheduler's accounting names: CPU, GPU, memory (bytes) and
accelerator_type:<T> (a count of GPUs of type T).
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from sqlalchemy.orm import Session

from trainyard.controller.views import job_demand
from trainyard.errors import SpecError
from trainyard.scheduler.model import DAY, Budget, Project, Quota, UsageRecord
from trainyard.store import quotas as repo

__all__ = ["RESOURCE_RE", "MAX_RESOURCES", "MAX_AMOUNT", "MAX_HOURS", "MAX_WINDOW_DAYS", "MAX_WEIGHT",
           "check_settings", "project_of", "usage_of", "closed_usage", "usage_for"]

RESOURCE_RE = re.compile(r"^(CPU|GPU|memory|accelerator_type:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
MAX_RESOURCES = 16  # per map
MAX_AMOUNT = 1e15  # memory is in bytes: a petabyte
MAX_HOURS = 1e9
MAX_WINDOW_DAYS = 366.0
MAX_WEIGHT = 1e6
_KNOWN = "CPU, GPU, memory (bytes), accelerator_type:<T> (e.g. accelerator_type:A100)"


def _number(where: str, value: Any, *, upper: float, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"must be a finite number, got {value!r}", field=where, value=value,
                        fix=f"give a number from {'above ' if positive else ''}0 to {upper:g}")
    if value < 0 or (positive and value == 0) or value > upper:
        bound = "> 0" if positive else ">= 0"
        raise SpecError(f"must be {bound} and at most {upper:g}, got {value!r}", field=where, value=value,
                        fix=f"give a number from {'above ' if positive else ''}0 to {upper:g}")
    return float(value)


def _amounts(where: str, amounts: Any) -> dict[str, float] | None:
    if amounts is None:
        return None
    if not isinstance(amounts, Mapping):
        raise SpecError(f"must be a map of resource name to amount, got {type(amounts).__name__}", field=where,
                        value=amounts, fix='e.g. {"CPU": 16, "GPU": 4}')
    if len(amounts) > MAX_RESOURCES:
        raise SpecError(f"names {len(amounts)} resources, at most {MAX_RESOURCES} are allowed", field=where,
                        value=len(amounts), fix="name only the resources the quota limits")
    out = {}
    for key, value in amounts.items():
        if not isinstance(key, str) or not RESOURCE_RE.match(key):
            raise SpecError(f"{key!r} is not a resource name the scheduler accounts", field=f"{where}.{key}",
                            value=key, fix=f"use one of: {_KNOWN}")
        out[key] = _number(f"{where}.{key}", value, upper=MAX_AMOUNT)
    return out


def check_settings(project: str, *, weight: Any = 1.0, nominal: Any = None, borrowing_limit: Any = None,
                   lending_limit: Any = None, budget: Any = None) -> dict[str, Any]:
    """The values to store ({"weight", "quota", "budget"}: store/quotas.set_quota), checked strictly; SpecError names
    the field, the value and the fix. `nominal`, `borrowing_limit` and `lending_limit` all
    None: no quota. `budget` None (or with no hours): no budget."""
    w = _number("weight", weight, upper=MAX_WEIGHT, positive=True)
    quota = None
    maps = {"nominal": _amounts("nominal", nominal), "borrowing_limit": _amounts("borrowing_limit", borrowing_limit),
            "lending_limit": _amounts("lending_limit", lending_limit)}
    if any(v is not None for v in maps.values()):
        quota = {"nominal": maps["nominal"] or {}, "borrowing_limit": maps["borrowing_limit"],
                 "lending_limit": maps["lending_limit"]}
        for key, value in (quota["lending_limit"] or {}).items():
            if value > quota["nominal"].get(key, 0.0):
                raise SpecError(f"lending limit {value:g} is above the nominal quota "
                                f"{quota['nominal'].get(key, 0.0):g}", field=f"lending_limit.{key}", value=value,
                                fix="lend at most the nominal quota")
    stored_budget = None
    if budget is not None:
        if not isinstance(budget, Mapping):
            raise SpecError(f"must be a map, got {type(budget).__name__}", field="budget", value=budget,
                            fix='e.g. {"gpu_hours": 500, "window_days": 30}')
        unknown = sorted(set(budget) - {"gpu_hours", "cpu_hours", "window_days"})
        if unknown:
            raise SpecError(f"unknown key {unknown[0]!r}", field=f"budget.{unknown[0]}", value=unknown[0],
                            fix="use gpu_hours, cpu_hours and window_days")
        hours = {k: (None if budget.get(k) is None else _number(f"budget.{k}", budget[k], upper=MAX_HOURS))
                 for k in ("gpu_hours", "cpu_hours")}
        days = _number("budget.window_days", budget.get("window_days", 30), upper=MAX_WINDOW_DAYS, positive=True)
        if hours["gpu_hours"] is not None or hours["cpu_hours"] is not None:
            stored_budget = {**hours, "window_days": days}
    out = {"weight": w, "quota": quota, "budget": stored_budget}
    project_of(project, **out).validate()  # the scheduler's own checks, the same ones each tick runs
    return out


def project_of(name: str, *, weight: float | None, quota: Mapping[str, Any] | None,
               budget: Mapping[str, Any] | None) -> Project:
    """Stored values -> the scheduler's Project. Pure."""
    q = None
    if quota:
        q = Quota(nominal=dict(quota.get("nominal") or {}),
                  borrowing_limit=None if quota.get("borrowing_limit") is None else dict(quota["borrowing_limit"]),
                  lending_limit=None if quota.get("lending_limit") is None else dict(quota["lending_limit"]))
    b = None
    if budget:
        b = Budget(gpu_hours=budget.get("gpu_hours"), cpu_hours=budget.get("cpu_hours"),
                   window_s=float(budget.get("window_days", 30)) * DAY)
    return Project(name=name, weight=float(weight if weight is not None else 1.0), quota=q, budget=b)


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def usage_of(project: str, *, started_at: datetime, ended_at: datetime | None,
             resources: Mapping[str, float]) -> UsageRecord:
    """One ledger entry (or a running job: ended_at None) -> the scheduler's UsageRecord. Pure."""
    return UsageRecord(project=project, start=_ts(started_at), end=None if ended_at is None else _ts(ended_at),
                       resources={k: float(v) for k, v in resources.items()})


def closed_usage(session: Session, *, since: datetime, projects: Iterable[str] | None = None) -> list[UsageRecord]:
    """Ledger entries that end after `since`."""
    return [usage_of(p, started_at=s, ended_at=e, resources=r or {})
            for p, s, e, r in repo.closed_usage(session, since=since, projects=projects)]


def usage_for(session: Session, project: str, *, window_s: float, now: datetime) -> list[UsageRecord]:
    """Everything that counts against a project's budget at `now`: ledger and running jobs."""
    since = now - timedelta(seconds=max(window_s, DAY))
    return closed_usage(session, since=since, projects=[project]) + [
        usage_of(j.project, started_at=j.started_at, ended_at=None, resources=job_demand(j))
        for j in repo.running_jobs(session, projects=[project])]

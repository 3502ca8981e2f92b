"""The pending queue as `GET /v1/queue` and `trainyard queue` show it. Pure: rows in, dicts out.

Per cluster, the queued jobs in the scheduler's order, each with the why-pending record the
controller last wrote (reason, positions in the queue, its project's and the cluster's,
estimated start). Per project, how much of its quota its active jobs hold and what is left
of its budget. A job is filed under the cluster its reason names (where the scheduler would
place it), else the one its spec pins, else under no cluster (`null`: not placed yet).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from trainyard.controller.views import iso, pending_of, quota_demand
from trainyard.scheduler.budgets import BudgetStatus
from trainyard.store.models import JobRow, ProjectRow

__all__ = ["queued_entry", "queue_view", "quota_use", "budget_left"]

_LAST = 10**12  # sorts jobs without a position yet after the placed ones


def queued_entry(job: JobRow) -> dict[str, Any]:
    record = pending_of(job.result) or {}
    reason = record.get("reason") if isinstance(record.get("reason"), dict) else None
    pinned = ((job.spec or {}).get("resources") or {}).get("cluster")
    return {
        "id": job.id, "name": job.name, "project": job.project, "owner": job.owner, "priority": job.priority,
        "kind": job.kind, "created_at": iso(job.created_at),
        "cluster": (reason or {}).get("cluster") or pinned,
        "position_in_queue": record.get("position_in_queue"),
        "position_in_project": record.get("position_in_project"),
        "position_in_cluster": record.get("position_in_cluster"),
        "reason": reason,  # None until the controller looked at the job
        "estimated_start": record.get("estimated_start"),
    }


def _order(entry: dict[str, Any]) -> tuple:
    pos = entry["position_in_queue"]
    return (pos if isinstance(pos, int) else _LAST, entry["created_at"] or "", entry["id"])


def quota_use(project: ProjectRow | None, active: Iterable[JobRow]) -> dict[str, Any] | None:
    """{"nominal", "borrowing_limit", "used"} for a project with a quota: `used` is what its
    dispatched and running jobs count as against it (an elastic job at its grant), per
    resource its quota names. None without a quota."""
    quota = (project.quota if project is not None else None) or None
    if not quota:
        return None
    nominal = dict(quota.get("nominal") or {})
    keys = set(nominal) | set(quota.get("borrowing_limit") or {})
    used = {k: 0.0 for k in sorted(keys)}
    for job in active:
        for key, amount in quota_demand(job).items():
            if key in used:
                used[key] += amount
    return {"nominal": nominal, "borrowing_limit": quota.get("borrowing_limit"), "used": used}


def budget_left(status: BudgetStatus | None) -> dict[str, Any] | None:
    """{"gpu"|"cpu": {"used_hours", "budget_hours", "remaining_hours"}} for the budgeted kinds."""
    if status is None:
        return None
    out = {}
    for kind in ("gpu", "cpu"):
        budget = getattr(status, f"{kind}_hours_budget")
        if budget is not None:
            out[kind] = {"used_hours": round(getattr(status, f"{kind}_hours_used"), 4), "budget_hours": budget,
                         "remaining_hours": round(getattr(status, f"{kind}_hours_remaining"), 4)}
    return out or None


def queue_view(pending: Iterable[JobRow], *, active: Iterable[JobRow], projects: Mapping[str, ProjectRow],
               budgets: Mapping[str, BudgetStatus], limit: int) -> dict[str, Any]:
    """`pending`: the visible queued jobs (filtered already); `active`: the visible jobs that
    hold resources; `projects`: rows of projects with settings; `budgets`: their budget status.
    At most `limit` jobs are listed (in queue order); counts cover all of them."""
    entries = sorted((queued_entry(j) for j in pending), key=_order)
    # the scheduler writes positions once it knows the clusters; until then a job's place in
    # its project is still certain (within a project: priority, then first come)
    ranked: dict[str, int] = {}
    for entry in sorted(entries, key=lambda e: (-(e["priority"] or 0), e["created_at"] or "", e["id"])):
        ranked[entry["project"]] = ranked.get(entry["project"], 0) + 1
        if entry["position_in_project"] is None:
            entry["position_in_project"] = ranked[entry["project"]]
    active_by_project: dict[str, list[JobRow]] = {}
    for job in active:
        active_by_project.setdefault(job.project, []).append(job)
    clusters: dict[str | None, dict[str, Any]] = {}
    per_project: dict[str, int] = {}
    for n, entry in enumerate(entries):
        group = clusters.setdefault(entry["cluster"], {"cluster": entry["cluster"], "count": 0, "jobs": []})
        group["count"] += 1
        per_project[entry["project"]] = per_project.get(entry["project"], 0) + 1
        if n < limit:
            group["jobs"].append(entry)
    summaries = []
    for name in sorted(per_project):
        row = projects.get(name)
        summaries.append({"project": name, "queued": per_project[name],
                          "running": len(active_by_project.get(name, [])),
                          "weight": row.weight if row is not None and row.weight is not None else 1.0,
                          "quota": quota_use(row, active_by_project.get(name, [])),
                          "budget": budget_left(budgets.get(name))})
    # clusters by name, the jobs not placed yet last
    groups = sorted(clusters.values(), key=lambda g: (g["cluster"] is None, g["cluster"] or ""))
    return {"clusters": groups, "projects": summaries, "total": len(entries), "truncated": len(entries) > limit}

"""/v1/queue: the pending queue per cluster and project, with why each job waits."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query

from trainyard.api.auth import current_principal
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.params import NAME_RE, OptName
from trainyard.apitypes import Queue
from trainyard.auth.principal import Principal
from trainyard.controller import quotas, queueview
from trainyard.scheduler.budgets import budget_status
from trainyard.scheduler.model import DAY
from trainyard.store import jobs as jobs_repo
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st

__all__ = ["router", "MAX_QUEUE_LIST"]

router = APIRouter(prefix="/v1/queue", tags=["jobs"], dependencies=[Depends(current_principal)],
                   responses=error_responses(401, 403, 422))

MAX_QUEUE_LIST = 5000  # jobs listed in one answer; the counts cover the whole queue


@router.get("", summary="The pending queue per cluster and project: positions, reasons, estimated starts")
def get_queue(project: OptName = None,
              cluster: Annotated[Optional[str], Query(max_length=63, pattern=NAME_RE,
                                                      description="Only jobs waiting for this cluster.")] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_QUEUE_LIST,
                                          description=f"Jobs listed, at most {MAX_QUEUE_LIST}.")] = 500,
              principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> Queue:
    """`{clusters: [{cluster, count, jobs: [...]}], projects: [{project, queued, running, weight,
    quota: {nominal, borrowing_limit, used} | null, budget: {gpu|cpu: {used_hours, budget_hours,
    remaining_hours}} | null}], total, truncated}`. Only the projects the caller can read;
    a job's positions are in the whole queue (the scheduler's order). `cluster: null` groups
    the jobs the scheduler has not placed yet."""
    visible = principal.visible_projects()
    now = time.time()
    with ctx.db.session() as s:
        # queued: new jobs, and preempted ones waiting for their next attempt
        pending = jobs_repo.list_jobs(s, phases=sorted(st.QUEUED), project=project, projects=visible,
                                      limit=10**9, newest_first=False)
        if cluster is not None:
            pending = [j for j in pending if queueview.queued_entry(j)["cluster"] == cluster]
        names = {j.project for j in pending}
        active = [j for j in jobs_repo.active_jobs(s) if j.project in names]
        settings = {p.name: p for p in quotas_repo.projects_with_settings(s) if p.name in names}
        budgets: dict[str, Any] = {}
        for name, row in settings.items():
            plan = quotas.project_of(name, weight=row.weight, quota=row.quota, budget=row.budget)
            if plan.budget is None:
                continue
            records = quotas.usage_for(s, name, window_s=plan.budget.window_s,
                                       now=datetime.fromtimestamp(now, tz=timezone.utc))
            budgets[name] = budget_status(name, records, plan.budget, now=now, burn_window_s=DAY)
        return Queue.model_validate(queueview.queue_view(pending, active=active, projects=settings, budgets=budgets,
                                                         limit=limit))

"""/v1/jobs: submit, list, describe, logs, cancel."""
from __future__ import annotations

from typing import Any, Optional, Union

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.controller import views
from trainyard.errors import SpecError, did_you_mean
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_admin)])


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: Union[dict[str, Any], str] = Field(..., description="The job spec: a mapping, or YAML text.")
    working_dir_zip_b64: Optional[str] = Field(
        None, description="The spec's working_dir folder, zipped (files at the zip's root), base64.")
    workload_meta: Optional[dict[str, Any]] = Field(
        None, description="Metadata of the spec's own workload (name, metric, mode, metrics, search_space, "
                          "default_hparams, ...), read by the client on the user's machine; the server "
                          "imports no user code. Ignored for registered families that ship metadata.")


def _phases(state: str | None) -> list[str] | None:
    if not state:
        return None
    wanted: list[str] = []
    for item in state.split(","):
        item = item.strip().upper()
        if item in st.PUBLIC_STATES:
            wanted += st.phases_for_public(item)
        elif item in st.PHASES:
            wanted.append(item)
        else:
            raise SpecError(f"unknown state {item!r};{did_you_mean(item, st.PUBLIC_STATES) or ''} "
                            f"known: {', '.join(st.PUBLIC_STATES)}", field="state", value=item)
    return wanted


@router.post("", status_code=201, summary="Submit a job")
def submit_job(body: SubmitJobRequest, ctx: ServerContext = Depends(get_ctx)) -> dict:
    return ctx.jobs.submit(body.spec, working_dir_zip_b64=body.working_dir_zip_b64,
                          workload_meta=body.workload_meta)


@router.get("", summary="List jobs, newest first")
def list_jobs(state: Optional[str] = Query(None, description="PENDING, RUNNING, ... (comma-separated)"),
              project: Optional[str] = None, kind: Optional[str] = None, cluster: Optional[str] = None,
              limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
              ctx: ServerContext = Depends(get_ctx)) -> dict:
    phases = _phases(state)
    with ctx.db.session() as s:
        rows = jobs_repo.list_jobs(s, phases=phases, project=project, kind=kind, cluster=cluster,
                                   limit=limit, offset=offset)
        items = [views.job_dict(r, mlflow_uri=ctx.settings.mlflow_uri) for r in rows]
    return {"jobs": items, "count": len(items), "limit": limit, "offset": offset}


@router.get("/{job_id}", summary="Describe a job (progress while it runs, result when done)")
def get_job(job_id: str, ctx: ServerContext = Depends(get_ctx)) -> dict:
    return ctx.jobs.describe(job_id)


@router.get("/{job_id}/logs", response_class=PlainTextResponse,
            summary="The job driver's log from `offset` (characters); headers give the next offset")
def job_logs(job_id: str, response: Response, offset: int = Query(0, ge=0),
             ctx: ServerContext = Depends(get_ctx)) -> PlainTextResponse:
    text, state = ctx.jobs.logs(job_id, offset=offset)
    return PlainTextResponse(text, headers={"X-Trainyard-Job-State": state,
                                            "X-Trainyard-Next-Offset": str(offset + len(text))})


@router.post("/{job_id}/cancel", summary="Cancel a job (PENDING at once; RUNNING once Ray stopped it)")
def cancel_job(job_id: str, ctx: ServerContext = Depends(get_ctx)) -> dict:
    return ctx.jobs.cancel(job_id)

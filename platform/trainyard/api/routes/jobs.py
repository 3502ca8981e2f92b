"""/v1/jobs: submit, list, describe, logs, cancel."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.idempotency import IdempotencyKey, idempotency_for
from trainyard.api.params import SUBMIT_BODY_LIMIT, JobId, Limit, LogOffset, Offset, OptName
from trainyard.controller import views
from trainyard.errors import SpecError, did_you_mean
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403, 422))

# the spec's YAML text (specs caps it further); the zip's base64 (MAX_PACKAGE_BYTES * 4/3)
MAX_ZIP_B64 = SUBMIT_BODY_LIMIT


class SubmitJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # text of any length up to the body limit: the spec parser refuses past its cap with a
    # 413 that names the cap (a length bound here would answer a vague 422 first)
    spec: Union[dict[str, Any], str] = Field(
        ..., description="The job spec: a mapping, or YAML text.")
    working_dir_zip_b64: Optional[str] = Field(
        None, max_length=MAX_ZIP_B64,
        description="The spec's working_dir folder, zipped (files at the zip's root), base64.")
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
            raise SpecError(f"unknown state {item[:40]!r};{did_you_mean(item, st.PUBLIC_STATES) or ''} "
                            f"known: {', '.join(st.PUBLIC_STATES)}", field="state", value=item[:40])
    return wanted


@router.post("", status_code=201, summary="Submit a job", max_body_size=SUBMIT_BODY_LIMIT,
             responses=error_responses(409, 413))
def submit_job(body: SubmitJobRequest, idempotency_key: IdempotencyKey = None,
               ctx: ServerContext = Depends(get_ctx)) -> Any:
    return submit_kind(ctx, body, idempotency_key, kind="job", route="/v1/jobs")


def submit_kind(ctx: ServerContext, body: Any, key: Optional[str], *, kind: str, route: str,
                view=lambda job: job) -> Any:
    """Submit a job or a sweep; with a key, at most once (its record is written with the row)."""
    idem = idempotency_for(key, method="POST", route=route, body=body.model_dump(mode="json"))

    def create(on_created=None) -> Any:
        return view(ctx.jobs.submit(body.spec, working_dir_zip_b64=body.working_dir_zip_b64, kind=kind,
                                    workload_meta=body.workload_meta, on_created=on_created))

    if idem is None:
        return create()

    def record(session, job: dict) -> dict:
        answer = view(job)
        idem.record_in(session, status_code=201, response=answer, resource_id=job["id"])
        return job

    return idem.guarded(ctx, lambda: create(record))


@router.get("", summary="List jobs, newest first")
def list_jobs(state: Annotated[Optional[str], Query(max_length=200, description="PENDING, RUNNING, ... "
                                                                                 "(comma-separated)")] = None,
              project: OptName = None,
              kind: Annotated[Optional[str], Query(pattern="^(job|sweep)$")] = None,
              cluster: OptName = None, limit: Limit = 100, offset: Offset = 0,
              ctx: ServerContext = Depends(get_ctx)) -> dict:
    phases = _phases(state)
    with ctx.db.session() as s:
        rows = jobs_repo.list_jobs(s, phases=phases, project=project, kind=kind, cluster=cluster,
                                   limit=limit, offset=offset)
        items = [views.job_dict(r, mlflow_uri=ctx.settings.mlflow_uri) for r in rows]
    return {"jobs": items, "count": len(items), "limit": limit, "offset": offset}


@router.get("/{job_id}", summary="Describe a job (progress while it runs, result when done)",
            responses=error_responses(404, 502))
def get_job(job_id: JobId, ctx: ServerContext = Depends(get_ctx)) -> dict:
    return ctx.jobs.describe(job_id)


@router.get("/{job_id}/logs", response_model=None,
            summary="The job driver's log from `offset` (characters); headers give the next offset",
            responses={200: {"description": "The log text", "content": {"text/plain": {"schema": {"type": "string"}}}},
                       **error_responses(404, 502)})
def job_logs(job_id: JobId, response: Response, offset: LogOffset = 0,
             ctx: ServerContext = Depends(get_ctx)) -> PlainTextResponse:
    text, state = ctx.jobs.logs(job_id, offset=offset)
    return PlainTextResponse(text, headers={"X-Trainyard-Job-State": state,
                                            "X-Trainyard-Next-Offset": str(offset + len(text))})


@router.post("/{job_id}/cancel", summary="Cancel a job (PENDING at once; RUNNING once Ray stopped it)",
             responses=error_responses(404, 409, 502))
def cancel_job(job_id: JobId, ctx: ServerContext = Depends(get_ctx)) -> dict:
    return ctx.jobs.cancel(job_id)

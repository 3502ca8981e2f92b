"""/v1/sweeps: submit, list, describe (with the leaderboard), cancel.

A sweep is a row of the jobs table with kind "sweep": the same queue, state machine,
logs and cancel path as a job. Its Ray job runs `python -m trainyard.runner sweep`, whose
TRAINYARD_PROGRESS lines carry the live leaderboard and whose TRAINYARD_RESULT holds the
final one (with every trial's curve).
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import current_principal, principal_of
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.models import SpecCheck, Sweep, SweepList
from trainyard.api.idempotency import IdempotencyKey
from trainyard.api.params import SUBMIT_BODY_LIMIT, JobId, Limit, Offset, OptName
from trainyard.api.routes.jobs import MAX_ZIP_B64, submit_kind, validate_kind, visible_job
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role
from trainyard.controller import views
from trainyard.errors import NotFoundError
from trainyard.store import jobs as jobs_repo

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"], dependencies=[Depends(current_principal)],
                   responses=error_responses(401, 403, 422))


class SubmitSweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # text of any length up to the body limit: the spec parser refuses past its cap with a
    # 413 that names the cap (a length bound here would answer a vague 422 first)
    spec: Union[dict[str, Any], str] = Field(
        ..., description="The sweep spec: a mapping, or YAML text.")
    working_dir_zip_b64: Optional[str] = Field(
        None, max_length=MAX_ZIP_B64, description="The spec's working_dir folder, zipped (files at the zip's root), base64.")
    workload_meta: Optional[dict[str, Any]] = Field(
        None, description="Metadata of the spec's own workload (name, metric, mode, metrics, search_space, "
                          "default_hparams, ...), read by the client on the user's machine; the server "
                          "imports no user code. Ignored for registered families that ship metadata.")


def sweep_view(job: dict) -> dict:
    """A job description plus `leaderboard`: the final one when done, else the live one."""
    result = job.get("result") or {}
    progress = job.get("progress") or {}
    board = result.get("leaderboard")
    if board is None and progress.get("leaderboard") is not None:
        board = {"metric": progress.get("metric"), "mode": progress.get("mode"),
                 "rows": progress.get("leaderboard"), "best": progress.get("best"),
                 "curves": progress.get("curves") or {}, "best_so_far": progress.get("best_so_far") or [],
                 "live": True}
    out = dict(job)
    out["leaderboard"] = board
    out["best"] = result.get("best") or progress.get("best")
    spec = job.get("spec") or {}
    out["sweep"] = spec.get("sweep")
    out["promote"] = spec.get("promote")
    out["model"] = ({k: result.get(k) for k in ("model_name", "model_version", "model_alias", "registered_trial")}
                    if result.get("model_name") else None)
    return out


def _describe(ctx: ServerContext, principal: Principal, sweep_id: str, *, need: Role = Role.VIEWER,
              request: Request | None = None) -> dict:
    visible_job(ctx, principal, sweep_id, what="sweep", need=need, own=need == Role.MEMBER,
                doing="see it" if need == Role.VIEWER else "cancel it", request=request)
    job = ctx.jobs.describe(sweep_id)
    if job.get("kind") != "sweep":
        raise NotFoundError("sweep", sweep_id, fix="it is a job: see `trainyard jobs show`")
    return job


@router.post("", status_code=201, summary="Submit a sweep", max_body_size=SUBMIT_BODY_LIMIT,
             response_model=Sweep, responses=error_responses(409, 413))
async def submit_sweep(body: SubmitSweepRequest, request: Request, idempotency_key: IdempotencyKey = None) -> Any:
    # as submit_job: the caller from the router's dependency, no dependency declared again
    return await submit_kind(request.app.state.ctx, body, idempotency_key, kind="sweep", route="/v1/sweeps",
                             model=Sweep, shape=sweep_view, principal=principal_of(request), request=request)


@router.post("/validate", summary="Check a sweep spec as a submission would, creating nothing",
             max_body_size=SUBMIT_BODY_LIMIT, responses=error_responses(404, 413))
def validate_sweep(body: SubmitSweepRequest, principal: Principal = Depends(current_principal),
                   ctx: ServerContext = Depends(get_ctx)) -> SpecCheck:
    """The checks and role check of `POST /v1/sweeps`, with its field-named 422 answers; creates nothing."""
    return validate_kind(ctx, body, kind="sweep", principal=principal)


@router.get("", summary="List sweeps, newest first")
def list_sweeps(project: OptName = None, limit: Limit = 100, offset: Offset = 0,
                principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> SweepList:
    with ctx.db.session() as s:
        rows = jobs_repo.list_jobs(s, project=project, kind="sweep", limit=limit, offset=offset,
                                   projects=principal.visible_projects())
        items = []
        for row in rows:
            item = views.job_dict(row, mlflow_uri=ctx.settings.mlflow_uri)
            result = row.result or {}
            item["best"] = result.get("best")
            item["num_trials"] = ((row.spec or {}).get("sweep") or {}).get("num_trials")
            items.append(item)
    return SweepList(sweeps=items, count=len(items), limit=limit, offset=offset)


@router.get("/{sweep_id}", summary="Describe a sweep, with its leaderboard", responses=error_responses(404, 502))
def get_sweep(sweep_id: JobId, principal: Principal = Depends(current_principal),
              ctx: ServerContext = Depends(get_ctx)) -> Sweep:
    return Sweep.model_validate(sweep_view(_describe(ctx, principal, sweep_id)))


@router.post("/{sweep_id}/cancel", summary="Cancel a sweep (its running trials stop with it)",
             responses=error_responses(404, 409, 502))
def cancel_sweep(sweep_id: JobId, request: Request, principal: Principal = Depends(current_principal),
                 ctx: ServerContext = Depends(get_ctx)) -> Sweep:
    _describe(ctx, principal, sweep_id, need=Role.MEMBER, request=request)
    return Sweep.model_validate(sweep_view(ctx.jobs.cancel(sweep_id, reason=f"cancelled by {principal.user}")))

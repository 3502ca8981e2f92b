"""/v1/jobs: submit, list, describe, logs, cancel."""
from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from typing import Annotated, Any, Callable, Optional, Union

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from trainyard.api.audit import audit_note, mark_recorded, record_in
from trainyard.api.auth import authorize, current_principal, principal_of
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.follows import GatedStream
from trainyard.api.models import JobDetail, JobList, SpecCheck, validated
from trainyard.api.idempotency import IdempotencyKey, idempotency_for
from trainyard.api.params import MAX_OFFSET, NAME_RE, SUBMIT_BODY_LIMIT, JobId, LogOffset, OptName
from trainyard.controller import views
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role
from trainyard.errors import ConflictError, NotFoundError, SpecError, did_you_mean
from trainyard.store import jobs as jobs_repo
from trainyard.store.paging import MAX_CURSOR_LEN, decode_cursor
from trainyard.store import state as st
from trainyard.store import teams as teams_repo

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(current_principal)],
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


MAX_PAGE = 500  # jobs per page of GET /v1/jobs
DEFAULT_PAGE = 50
MAX_STATE_VALUES = 16  # `state` values, repeated or comma-separated


def _phases(state: str | list[str] | None) -> list[str] | None:
    """The internal phases that the `state` filter (public states or phases, repeated or
    comma-separated) selects; None: no filter. SpecError naming `state` for an unknown one."""
    if not state:
        return None
    items = [item.strip().upper() for value in ([state] if isinstance(state, str) else state)
             for item in value.split(",")]
    if len(items) > MAX_STATE_VALUES:
        raise SpecError(f"names {len(items)} states, at most {MAX_STATE_VALUES} are allowed", field="state",
                        value=len(items), fix=f"use some of: {', '.join(st.PUBLIC_STATES)}")
    wanted: list[str] = []
    for item in items:
        if item in st.PUBLIC_STATES:
            wanted += st.phases_for_public(item)
        elif item in st.PHASES:
            wanted.append(item)
        else:
            raise SpecError(f"unknown state {item[:40]!r};{did_you_mean(item, st.PUBLIC_STATES) or ''} "
                            f"known: {', '.join(st.PUBLIC_STATES)}", field="state", value=item[:40],
                            fix="give one or more known states, e.g. state=PENDING,RUNNING")
    return wanted


@router.post("", status_code=201, summary="Submit a job", max_body_size=SUBMIT_BODY_LIMIT,
             response_model=JobDetail, responses=error_responses(409, 413))
async def submit_job(body: SubmitJobRequest, request: Request, idempotency_key: IdempotencyKey = None) -> Any:
    # the caller and the context without declaring them again: the router's dependency found
    # the caller (principal_of), and FastAPI's solving of each declared dependency was the
    # largest cost of a submission on the event loop
    return await submit_kind(request.app.state.ctx, body, idempotency_key, kind="job", route="/v1/jobs",
                             principal=principal_of(request), request=request, model=JobDetail)


async def submit_kind(ctx: ServerContext, body: Any, key: Optional[str], *, kind: str, route: str,
                      principal: Principal, request: Request, model: type[BaseModel],
                      shape: Callable[[dict], dict] = lambda job: job) -> Response:
    """Submit a job or a sweep as `principal` (its owner); with a key, at most once (its record
    is written with the row). The project comes from the validated spec; the role check runs in
    the transaction that creates the row, so a refused submission leaves nothing behind.

    Awaited on the event loop: the spec is checked there and the write joins the committer's
    next batch (group_commit.run_async), so a submission holds no worker thread. The answer is
    `shape(job)` as `model`, validated once here and sent as built (the route's response_model
    documents it; FastAPI does not validate a Response again)."""
    # the key is the caller's: another user's retry with the same key must not replay this answer
    idem = idempotency_for(f"{principal.user}:{key}"[:255], method="POST", route=route,
                           body=body.model_dump(mode="json")) if key else None  # the body's dump: for a key only
    if idem is not None:
        replayed = await run_in_threadpool(idem.replay, ctx)
        if replayed is not None:
            return replayed
    note = audit_note(request)
    audited: list[int] = []  # the audit row's id, written with the job's row

    def on_created(session, job: dict) -> Any:
        project = job["project"]
        note.project = project
        authorize(principal, project=project, need=Role.MEMBER, what="project", ident=project,
                  doing=f"submit a {kind} into it")
        if principal.admin and project not in ctx.known_projects:  # an admin's submission creates it
            teams_repo.ensure_project_exists(session, project)
        note.object_id = job["id"]
        answer = None
        if idem is not None:  # the key's record holds the answer: built in the job's transaction
            answer = validated(model, shape(job))
            idem.record_in(session, status_code=201, response=answer.model_dump(mode="json"),
                           resource_id=job["id"])
        # in the job's transaction: the submission waits for one commit, not a second for
        # its audit row (a batch retried alone runs this again: the last id is the one kept)
        audited[:] = [record_in(request, session, status=201)]
        return answer

    try:
        created = await ctx.jobs.submit_async(body.spec, working_dir_zip_b64=body.working_dir_zip_b64, kind=kind,
                                              workload_meta=body.workload_meta, on_created=on_created,
                                              owner=principal.user)
    except IntegrityError:
        if idem is None:
            raise
        # a twin request with the same key recorded it first: answer as it did
        replayed = await run_in_threadpool(idem.replay, ctx)
        if replayed is None:
            raise ConflictError("the request conflicted with another one", fix="retry it") from None
        return replayed
    mark_recorded(request, audited[0], status=201)  # committed: the batch returned
    if principal.admin and len(ctx.known_projects) < 10_000:
        ctx.known_projects.add(note.project)
    answer = created if isinstance(created, BaseModel) else validated(model, shape(created))
    return Response(answer.model_dump_json(), status_code=201, media_type="application/json")


@router.post("/validate", summary="Check a job spec as a submission would, creating nothing",
             max_body_size=SUBMIT_BODY_LIMIT, responses=error_responses(404, 413))
def validate_job(body: SubmitJobRequest, principal: Principal = Depends(current_principal),
                 ctx: ServerContext = Depends(get_ctx)) -> SpecCheck:
    """The checks of `POST /v1/jobs` (schema, workload, working_dir zip, storage, capacity) and
    its role check (a member of the spec's project), with the same field-named 422 answers;
    nothing is stored, queued or audited."""
    return validate_kind(ctx, body, kind="job", principal=principal)


def validate_kind(ctx: ServerContext, body: Any, *, kind: str, principal: Principal) -> SpecCheck:
    job, _package = ctx.jobs.validate(body.spec, working_dir_zip_b64=body.working_dir_zip_b64, kind=kind,
                                      workload_meta=body.workload_meta)
    # in the order submit_kind checks: the spec first (its project is only known then), then the role
    authorize(principal, project=job.project, need=Role.MEMBER, what="project", ident=job.project,
              doing=f"submit a {kind} into it")
    return SpecCheck(kind=kind, project=job.project, spec=views.redacted_spec(job.model_dump(mode="json")))


def visible_job(ctx: ServerContext, principal: Principal, job_id: str, *, need: Role = Role.VIEWER,
                what: str = "job", doing: str = "see it", request: Request | None = None,
                own: bool = False) -> None:
    """Raise unless the caller may act on the job: 404 (the same answer as a missing job) when
    its project is not visible, 403 when the role is too low (or, with `own`, a member acts on
    another's job)."""
    with ctx.db.session() as s:
        row = jobs_repo.find_job(s, job_id)
        if row is None:
            if principal.admin:
                jobs_repo.get_job(s, job_id)  # raises, with the did-you-mean of recent ids
            raise NotFoundError(what, job_id)
        project, owner = row.project, row.owner
    if request is not None:
        audit_note(request).project = project
    authorize(principal, project=project, need=need, what=what, ident=job_id,
              owner=owner if own else None, doing=doing)


@router.get("", summary="List jobs, newest first, a page at a time")
def list_jobs(state: Annotated[Optional[list[str]], Query(
                  description="Public states (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED) or phases; "
                              "repeat the parameter or separate with commas.")] = None,
              project: OptName = None,
              user: Annotated[Optional[str], Query(max_length=63, pattern=NAME_RE,
                                                   description="Only jobs this user submitted (their owner).")] = None,
              kind: Annotated[Optional[str], Query(pattern="^(job|sweep)$")] = None,
              cluster: OptName = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Jobs per page, at most {MAX_PAGE}.")]
              = DEFAULT_PAGE,
              cursor: Annotated[Optional[str], Query(max_length=MAX_CURSOR_LEN,
                                                     description="The `next_cursor` of the previous page.")] = None,
              offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (older callers; "
                                                                            "prefer `cursor`).")] = 0,
              principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> JobList:
    """`{jobs, total, next_cursor}`: `total` counts every job under the filters that the caller
    may see (not only this page); `next_cursor` is null on the last page. Paging by cursor is
    stable while jobs are submitted: new jobs sort before the pages already read."""
    for value in state or ():
        if len(value) > 200:
            raise SpecError(f"is {len(value)} characters long, at most 200 are allowed", field="state",
                            value=value[:40], fix="give one or more known states, e.g. state=PENDING,RUNNING")
    phases = _phases(state)
    after = decode_cursor(cursor) if cursor is not None else None
    if after is not None and offset:
        raise SpecError("cannot be combined with cursor", field="offset", value=offset,
                        fix="page with cursor alone (offset=0)")
    with ctx.db.session() as s:
        page = jobs_repo.page_jobs(s, limit=limit, after=after, offset=offset, phases=phases, project=project,
                                   kind=kind, cluster=cluster, owner=user, projects=principal.visible_projects())
        items = [views.job_dict(r, mlflow_uri=ctx.settings.mlflow_uri) for r in page.rows]
    return JobList(jobs=items, total=page.total, next_cursor=page.next_cursor, count=len(items), limit=limit,
                   offset=offset)


@router.get("/{job_id}", summary="Describe a job (progress while it runs, result when done)",
            responses=error_responses(404, 502))
def get_job(job_id: JobId, principal: Principal = Depends(current_principal),
            ctx: ServerContext = Depends(get_ctx)) -> JobDetail:
    visible_job(ctx, principal, job_id)
    return JobDetail.model_validate(ctx.jobs.describe(job_id))


MAX_TAIL = 10_000  # lines; the server keeps the newest 20,000 of a followed log (controller/logtail.py)
MAX_SINCE_S = 10 * 366 * 86400


def parse_since(value: str | None, *, now: float | None = None) -> float | None:
    """`since`: an RFC 3339 time with its zone (2026-12-05T14:00:00Z), or seconds before now
    (300). A Unix time; SpecError naming `since` for anything else."""
    if value is None:
        return None
    now = time.time() if now is None else now
    text = value.strip()
    fix = "give an RFC 3339 time with its zone (2026-12-05T14:00:00Z) or a number of seconds (300)"
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        seconds = float(text)
        if seconds > MAX_SINCE_S:
            raise SpecError(f"{seconds:g} seconds is more than ten years", field="since", value=text[:40], fix=fix)
        return now - seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"is neither a time nor a number of seconds: {text[:40]!r}", field="since",
                        value=text[:40], fix=fix) from None
    if when.tzinfo is None:
        raise SpecError(f"has no time zone: {text[:40]!r}", field="since", value=text[:40], fix=fix)
    return when.timestamp()


@router.get("/{job_id}/logs", response_model=None,
            summary="The job driver's log: from `offset`, the last `tail` lines, or followed (server-sent events)",
            responses={200: {"description": "The log text (text/plain), or with follow=true a stream of server-sent "
                                            "events: `id: <line number>` + `data: <line>` per line, a `: keep-alive` "
                                            "comment while quiet, then `event: end` (data {state, phase}) when the "
                                            "job ended, or `event: error` (data {message}).",
                             "content": {"text/plain": {"schema": {"type": "string"}},
                                         "text/event-stream": {"schema": {"type": "string"}}}},
                       **error_responses(404, 429, 502)})
def job_logs(job_id: JobId, offset: LogOffset = 0,
             follow: Annotated[bool, Query(description="Stream the log until the job ends (server-sent events).")]
             = False,
             tail: Annotated[Optional[int], Query(ge=0, le=MAX_TAIL, description=f"Only the last N lines "
                                                                                 f"(at most {MAX_TAIL}).")] = None,
             since: Annotated[Optional[str], Query(max_length=40, description=(
                 "Only lines the server read at or after this time: RFC 3339 with a zone, or seconds before "
                 "now. Ray's log lines carry no time: lines written before the server began to follow the "
                 "job count as read then."))] = None,
             principal: Principal = Depends(current_principal),
             ctx: ServerContext = Depends(get_ctx)) -> Response:
    visible_job(ctx, principal, job_id)
    since_ts = parse_since(since)
    if not follow and tail is None and since_ts is None:
        text, state = ctx.jobs.logs(job_id, offset=offset)
        return PlainTextResponse(text, headers={"X-Trainyard-Job-State": state,
                                                "X-Trainyard-Next-Offset": str(offset + len(text))})
    if offset:
        raise SpecError("cannot be combined with follow, tail or since", field="offset", value=offset,
                        fix="use offset alone (polling), or follow/tail/since without it")
    if not follow:
        text, state = ctx.jobs.log_lines(job_id, tail=tail, since=since_ts)
        return PlainTextResponse(text, headers={"X-Trainyard-Job-State": state})
    events = ctx.jobs.stream_log(job_id, tail=tail, since=since_ts)
    first = next(events)  # errors (no such job, a cluster that cannot stream) answer before the stream starts
    release = ctx.follows.enter(principal.user, job_id=job_id)  # 429 past the limits, before the stream
    return GatedStream(itertools.chain([first], events), release=release, media_type="text/event-stream",
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/{job_id}/cancel", summary="Cancel a job (PENDING at once; RUNNING once Ray stopped it)",
             responses=error_responses(404, 409, 502))
def cancel_job(job_id: JobId, request: Request, principal: Principal = Depends(current_principal),
               ctx: ServerContext = Depends(get_ctx)) -> JobDetail:
    visible_job(ctx, principal, job_id, need=Role.MEMBER, own=True, doing="cancel it", request=request)
    return JobDetail.model_validate(ctx.jobs.cancel(job_id, reason=f"cancelled by {principal.user}"))

"""/v1/endpoints and /v1/models/{name}/promote|history: serving, owned by trainyard.serving.

    POST   /v1/endpoints                   deploy MODEL (version | alias | spec), or move it
    GET    /v1/endpoints                   list
    GET    /v1/endpoints/{name}            versions, weights, replicas, rate, errors, p50/p99
    DELETE /v1/endpoints/{name}
    POST   /v1/endpoints/{name}/predict    forwarded to Serve's HTTP port at the same path
    GET    /v1/endpoints/{name}/openapi.json   the family's request and response schema
    POST   /v1/endpoints/{name}/keys       a new endpoint key (its text is in this answer only)
    GET    /v1/endpoints/{name}/keys       the endpoint's keys (id, name, created_at; never the key)
    DELETE /v1/endpoints/{name}/keys/{id}  revoke a key (no replica accepts it once this answers)
    POST   /v1/models/{name}/promote       run a promotion (background unless wait)
    POST   /v1/models/{name}/rollback      serve again the version from before the last promotion
    GET    /v1/models/{name}/history       every promotion decision with its evidence
    GET    /v1/promotions/{id}             one promotion started by this server
"""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import authorize, current_principal
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_body, error_responses
from trainyard.api.models import (CreatedEndpointKey, Deployment, Endpoint, EndpointKeyList, EndpointList,
                                  ModelHistory, OpenAPIDocument, Promotion, Rollback, answer)
from trainyard.api.idempotency import IdempotencyKey, idempotency_for
from trainyard.api.params import (ALIAS_RE, MODEL_RE, NAME_RE, PREDICT_BODY_LIMIT, VERSION_RE, ModelName, Name,
                                  OptCluster, PromotionId)
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role
from trainyard.errors import NotFoundError, SpecError
from trainyard.serving.keys import KEY_NAME_RE

router = APIRouter(tags=["endpoints"],
                   responses=error_responses(401, 403, 422, 502, 503))

MAX_SPEC_TEXT = 64 * 1024

# every route needs a caller; what the caller may do is decided per endpoint or model, by the
# project that owns it (an endpoint's spec; a model's `trainyard.project` tag)
Caller = Annotated[Principal, Depends(current_principal)]


def get_serving(request: Request, ctx: ServerContext = Depends(get_ctx)):
    service = getattr(request.app.state, "serving", None)
    if service is None:
        from trainyard.clusters.registry import cluster_token
        from trainyard.serving.service import ServingService, deployment_id
        from trainyard.store import clusters as repo

        def cluster(name: str):
            with ctx.db.session() as s:
                row = repo.get_cluster(s, name)
                return row.dashboard_url, cluster_token(row)

        from trainyard.controller.runtime import mlflow_credentials

        settings = ctx.settings
        env = mlflow_credentials(settings)  # replicas load models from MLflow
        if settings.s3_endpoint_url:  # artifacts stored straight on S3: replicas need to reach it
            env["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
        service = ServingService(tracking_uri=settings.mlflow_uri, clusters=cluster, env=env,
                                 server_id=deployment_id(settings.db_url))
        request.app.state.serving = service
    return service


def _family_schemas(which: str) -> dict:
    """oneOf over the registered families' request (or response) schemas, from their static
    metadata (the server imports no family), for this app's OpenAPI page."""
    from trainyard.families import registered, static_meta

    schemas = []
    for name in sorted(registered()):
        meta = static_meta(name)
        schema = getattr(meta, f"{which}_schema", None) if meta is not None else None
        if schema:
            schemas.append({**schema, "title": f"{name} {which}"})
    return {"oneOf": schemas} if schemas else {"type": "object"}


def _family_request_schemas() -> dict:
    return _family_schemas("request")


def _family_response_schemas() -> dict:
    return _family_schemas("response")


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = Field(None, max_length=128, pattern=MODEL_RE,
                                 description="Registered model name (or give spec.model).")
    version: Optional[str] = Field(None, max_length=9, pattern=VERSION_RE,
                                   description="Model version to serve (a positive integer).")
    alias: Optional[str] = Field(None, max_length=64, pattern=ALIAS_RE,
                                 description="Registry alias to serve, e.g. champion.")
    spec: Union[dict[str, Any], Annotated[str, Field(max_length=MAX_SPEC_TEXT)], None] = Field(
        None, description="Endpoint spec: a mapping or YAML text.")
    cluster: Optional[str] = Field(None, max_length=63, pattern=NAME_RE,
                                   description="Registered cluster; default 'local'.")
    project: str = Field("default", max_length=63, pattern=NAME_RE,
                         description="The endpoint's project (or give spec.project); an endpoint never changes "
                                     "project once deployed.")
    public: bool = Field(False, strict=True,
                         description="true: Serve's HTTP port answers anyone; false: a request needs an endpoint "
                                     "key (or goes through this server's predict route).")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=64, pattern=KEY_NAME_RE,
                      description="What the key is for (unique per endpoint), e.g. the client that holds it.")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: Optional[str] = Field(None, max_length=9, pattern=VERSION_RE,
                                     description="Version to promote; default: the alias 'candidate'.")
    policy: Union[dict[str, Any], None] = Field(None, description="PromotionPolicy (a sweep's promote: block).")
    endpoint: Union[dict[str, Any], None] = Field(None, description="Endpoint spec fields for a new endpoint.")
    cluster: Optional[str] = Field(None, max_length=63, pattern=NAME_RE)
    wait: bool = Field(False, description="Answer when the promotion has ended (it lasts the canary window).")


def _spec_from(body: DeployRequest) -> Any:
    from trainyard.specs import load_yaml, parse_endpoint_spec

    if body.spec is None:
        if not body.model:
            raise SpecError("give a model name or an endpoint spec", field="model")
        return None
    data = load_yaml(body.spec, source="spec") if isinstance(body.spec, str) else dict(body.spec)
    if body.model and "model" not in data:
        data["model"] = body.model
    for key in _given_access(body):  # given twice: they must agree
        value = getattr(body, key)
        if key in data and data[key] != value:
            raise SpecError(f"the request says {key} {value!r} and its spec says {data[key]!r}", field=key,
                            value=value, fix=f"give {key} once, in the spec or in the request")
        data[key] = value
    return parse_endpoint_spec(data, source="spec")


def _deploy_access(caller: Principal, serving, manager, *, spec, body: DeployRequest, cluster) -> None:
    """Deploying needs maintainer in the endpoint's project (an existing endpoint's own, else the
    one asked for, else `default`) and read access to the model it serves."""
    model = spec.model if spec is not None else body.model
    name = spec.endpoint_name() if spec is not None else body.model
    asked = spec.project if spec is not None else (body.project if "project" in body.model_fields_set else None)
    if asked is not None:  # checked first: it costs no call to Serve
        authorize(caller, project=asked, need=Role.MAINTAINER, what="project", ident=asked,
                  doing="deploy endpoints in it")
    if manager.exists(name):  # moving an endpoint: its own project decides
        _endpoint_access(caller, serving, name, cluster, need=Role.MAINTAINER, doing="deploy to it")
    elif asked is None:
        authorize(caller, project="default", need=Role.MAINTAINER, what="project", ident="default",
                  doing="deploy endpoints in it")
    _model_access(caller, serving, model, need=Role.VIEWER)


def _given_access(body: DeployRequest) -> list[str]:
    """project and public as the request gave them: an omitted one leaves an existing endpoint's own."""
    return [k for k in ("project", "public") if k in body.model_fields_set]


@router.post("/v1/endpoints", status_code=201, summary="Deploy a model version as an endpoint (or move it)",
             response_model=Deployment, responses=error_responses(404, 409, 413))
def deploy(body: DeployRequest, caller: Caller, idempotency_key: IdempotencyKey = None,
           serving=Depends(get_serving), ctx: ServerContext = Depends(get_ctx)) -> Any:
    def create() -> dict:
        spec = _spec_from(body)
        cluster = body.cluster or (spec.cluster if spec is not None else None)
        manager = serving.manager(cluster)
        access = {k: getattr(body, k) for k in _given_access(body)} if spec is None else {}
        _deploy_access(caller, serving, manager, spec=spec, body=body, cluster=cluster)
        return answer(Deployment, manager.deploy(spec, model=body.model, version=body.version, alias=body.alias,
                                                 **access))

    idem = idempotency_for(idempotency_key, method="POST", route="/v1/endpoints", body=body.model_dump(mode="json"))
    return create() if idem is None else idem.run(ctx, create, status_code=201,
                                                  resource_id=lambda r: str(r.get("name") or ""))


@router.get("/v1/endpoints", summary="List endpoints", responses=error_responses(404))
async def list_endpoints(caller: Caller, cluster: OptCluster = None, serving=Depends(get_serving)) -> EndpointList:
    endpoints = await run_in_threadpool(serving.manager(cluster).list)
    visible = caller.visible_projects()
    return EndpointList(endpoints=[e for e in endpoints if visible is None or e.get("project", "default") in visible])


@router.get("/v1/endpoints/{name}", summary="Show an endpoint: versions, weights, replicas, traffic",
            responses=error_responses(404))
async def show_endpoint(name: Name, caller: Caller, cluster: OptCluster = None,
                        serving=Depends(get_serving)) -> Endpoint:
    await run_in_threadpool(_endpoint_access, caller, serving, name, cluster, need=Role.VIEWER)
    return Endpoint.model_validate(await run_in_threadpool(serving.manager(cluster).show, name))


@router.delete("/v1/endpoints/{name}", status_code=204, summary="Delete an endpoint",
               responses=error_responses(404))
async def delete_endpoint(name: Name, caller: Caller, cluster: OptCluster = None, serving=Depends(get_serving)):
    await run_in_threadpool(_endpoint_access, caller, serving, name, cluster, need=Role.MAINTAINER,
                            doing="delete it")
    await run_in_threadpool(serving.manager(cluster).delete, name)
    return Response(status_code=204)


@router.post("/v1/endpoints/{name}/predict", summary="Predict (forwarded to the endpoint on Ray Serve)",
             openapi_extra={
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": _family_request_schemas()}}},
                 "responses": {"200": {"description": "The family's predictor output; header x-trainyard-version "
                                                      "names the model version that answered",
                                       "content": {"application/json": {"schema": _family_response_schemas()}}}}},
             responses=error_responses(400, 404, 413, 422), max_body_size=PREDICT_BODY_LIMIT)
async def predict(name: Name, request: Request, caller: Caller, cluster: OptCluster = None,
                  serving=Depends(get_serving)) -> Response:
    from trainyard.serving.config import route_prefix

    manager = serving.manager(cluster)
    if not caller.admin:  # a viewer of the endpoint's project may predict (one Serve read more)
        await run_in_threadpool(_endpoint_access, caller, serving, name, cluster, need=Role.VIEWER)
    body = await request.body()
    from trainyard.errors import ClusterError, NotFoundError

    try:
        # the server's own key for this endpoint (serving/keys.py): whoever passed this route's
        # auth may predict, whether the endpoint is public or not
        resp = await run_in_threadpool(manager.serve.request, "POST", f"{route_prefix(name)}/predict",
                                       content=body, headers={"content-type": "application/json",
                                                              **manager.auth_headers(name)})
    except ClusterError:
        # Serve's proxy is down or absent: an unknown endpoint is still a 404 (asked only when
        # forwarding failed, so a prediction costs no extra call)
        if not await run_in_threadpool(manager.exists, name):
            raise NotFoundError("endpoint", name, fix="list them with `trainyard endpoints list`") from None
        raise
    if resp.status_code == 404 and not await run_in_threadpool(manager.exists, name):
        raise NotFoundError("endpoint", name, known=[e["name"] for e in manager.list()])
    headers = {k: v for k, v in resp.headers.items() if k.startswith("x-trainyard-")}
    if resp.status_code < 400:
        return Response(resp.content, status_code=resp.status_code, headers=headers,
                        media_type=resp.headers.get("content-type", "application/json"))
    # the replica's own errors, in the API's one error schema; its failures are a bad gateway
    try:
        upstream = resp.json()
    except ValueError:
        upstream = None
    if not isinstance(upstream, dict):
        upstream = {"message": resp.text[:500] or f"HTTP {resp.status_code}"}
    if resp.status_code in (401, 403):  # deployed before keys existed, or under another secret key
        raise ClusterError(f"endpoint {name!r} refused this server's key (HTTP {resp.status_code})",
                           fix=f"deploy it again through this server (`trainyard endpoints deploy {name}`), "
                               "which gives it this server's key; its endpoint keys stay")
    if resp.status_code >= 500:
        raise ClusterError(f"endpoint {name!r} failed to answer (HTTP {resp.status_code}): "
                           f"{str(upstream.get('message') or upstream.get('detail') or '')[:300]}",
                           fix=f"see the endpoint's replicas with `trainyard endpoints show {name}`")
    upstream.setdefault("error", "invalid_request" if resp.status_code in (400, 422) else "error")
    upstream.setdefault("message", f"HTTP {resp.status_code}")
    return JSONResponse(error_body(upstream), status_code=resp.status_code if resp.status_code in (400, 404, 413, 422)
                        else 400, headers=headers)


@router.get("/v1/endpoints/{name}/openapi.json", summary="The endpoint's OpenAPI page (its family's schema)",
            responses=error_responses(404))
async def endpoint_openapi(name: Name, caller: Caller, cluster: OptCluster = None,
                           serving=Depends(get_serving)) -> OpenAPIDocument:
    from trainyard.serving.openapi import endpoint_openapi as build

    state = await run_in_threadpool(_endpoint_access, caller, serving, name, cluster, need=Role.VIEWER)
    return OpenAPIDocument(build(name, state.family))


def _endpoint_access(caller: Principal, serving, name: str, cluster: str | None, *, need: Role,
                     doing: str = "do this"):
    """The endpoint `name`, once `caller` may act on it with role `need` in its project.

    An endpoint the caller cannot see answers exactly as a missing one, and a missing one names
    no other endpoint to a non-admin (did-you-mean would list other projects' names)."""
    try:
        state = serving.manager(cluster).get(name)
    except NotFoundError:
        if caller.admin:
            raise
        raise NotFoundError("endpoint", name) from None
    authorize(caller, project=state.spec.project, need=need, what="endpoint", ident=name, doing=doing)
    return state


def _model_access(caller: Principal, serving, name: str, *, need: Role, doing: str = "do this") -> None:
    """Raise unless `caller` may act on registered model `name` with role `need` in its project."""
    try:
        project = serving.registry().project(name)
    except NotFoundError:
        if caller.admin:
            raise
        raise NotFoundError("model", name) from None
    authorize(caller, project=project, need=need, what="model", ident=name, doing=doing)


KeyId = Annotated[str, PathParam(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$",
                                 description="A key id, as `POST /v1/endpoints/{name}/keys` returned it.")]


@router.post("/v1/endpoints/{name}/keys", status_code=201, summary="Create an endpoint key (shown once)",
             responses=error_responses(404, 409))
def create_key(name: Name, body: KeyRequest, caller: Caller, cluster: OptCluster = None,
               serving=Depends(get_serving)) -> CreatedEndpointKey:
    # no Idempotency-Key here: a replayed answer would have to keep the key's text
    _endpoint_access(caller, serving, name, cluster, need=Role.MAINTAINER, doing="manage its keys")
    return CreatedEndpointKey.model_validate(serving.manager(cluster).create_key(name, body.name))


@router.get("/v1/endpoints/{name}/keys", summary="List an endpoint's keys (never their text)",
            responses=error_responses(404))
def list_keys(name: Name, caller: Caller, cluster: OptCluster = None,
              serving=Depends(get_serving)) -> EndpointKeyList:
    state = _endpoint_access(caller, serving, name, cluster, need=Role.MAINTAINER, doing="manage its keys")
    return EndpointKeyList(keys=state.auth.listed())


@router.delete("/v1/endpoints/{name}/keys/{key_id}", status_code=204, summary="Revoke an endpoint key",
               responses=error_responses(404))
def revoke_key(name: Name, key_id: KeyId, caller: Caller, cluster: OptCluster = None,
               serving=Depends(get_serving)):
    _endpoint_access(caller, serving, name, cluster, need=Role.MAINTAINER, doing="manage its keys")
    serving.manager(cluster).revoke_key(name, key_id)
    return Response(status_code=204)


@router.post("/v1/models/{name}/promote", status_code=202, summary="Promote the model's candidate",
             response_model=Promotion,
             responses={200: {"model": Promotion, "description": "The promotion's record, when `wait` is true"},
                        **error_responses(404, 409, 413)})
def promote(name: ModelName, body: PromoteRequest, caller: Caller, idempotency_key: IdempotencyKey = None,
            serving=Depends(get_serving), ctx: ServerContext = Depends(get_ctx)) -> Any:
    status = 200 if body.wait else 202
    _model_access(caller, serving, name, need=Role.MAINTAINER, doing="promote it")

    def create() -> dict:
        return answer(Promotion, serving.promote(name, policy=body.policy, candidate=body.candidate,
                                                 endpoint=body.endpoint, cluster=body.cluster, wait=body.wait))

    idem = idempotency_for(idempotency_key, method="POST", route=f"/v1/models/{name}/promote",
                           body=body.model_dump(mode="json"))
    record = create() if idem is None else idem.run(ctx, create, status_code=status,
                                                    resource_id=lambda r: str(r.get("id") or ""))
    if isinstance(record, Response):  # an idempotent replay: the answer recorded the first time
        return record
    # the status depends on `wait`, so the answer is built here (create() validated it)
    return JSONResponse(record, status_code=status)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: Optional[str] = Field(None, max_length=63, pattern=NAME_RE,
                                   description="The cluster that serves the endpoint; default 'local'.")


@router.post("/v1/models/{name}/rollback", summary="Roll back the model's last promotion",
             description="The endpoint serves again the version that served before the last promotion (from the "
                         "model's promotion history) and `champion` moves back to it. Each roll-back undoes one "
                         "more promotion. 409 when there is nothing to roll back, or a promotion is running.",
             responses=error_responses(404, 409))
def rollback(name: ModelName, caller: Caller, body: Optional[RollbackRequest] = None,
             serving=Depends(get_serving)) -> Rollback:
    # the same role as promote: a roll-back is a promotion of the previous champion
    _model_access(caller, serving, name, need=Role.MAINTAINER, doing="roll it back")
    cluster = body.cluster if body is not None else None
    return Rollback.model_validate(serving.rollback(name, cluster=cluster, actor=caller.user))


@router.get("/v1/models/{name}/history", summary="Every promotion decision of a model, with its evidence",
            responses=error_responses(404))
async def history(name: ModelName, caller: Caller, serving=Depends(get_serving)) -> ModelHistory:
    await run_in_threadpool(_model_access, caller, serving, name, need=Role.VIEWER)
    return ModelHistory.model_validate(await run_in_threadpool(serving.history, name))


@router.get("/v1/promotions/{pid}", summary="One promotion started by this server",
            responses=error_responses(404))
async def promotion(pid: PromotionId, caller: Caller, serving=Depends(get_serving)) -> Promotion:
    try:
        record = serving.promotion(pid)
    except NotFoundError:
        if caller.admin:
            raise
        raise NotFoundError("promotion", pid, fix="see `trainyard models history MODEL`") from None
    if not caller.admin:  # its model's project decides; one that cannot be read hides it too
        try:
            await run_in_threadpool(_model_access, caller, serving, record["model"], need=Role.VIEWER)
        except NotFoundError:
            raise NotFoundError("promotion", pid, fix="see `trainyard models history MODEL`") from None
    return Promotion.model_validate(record)


async def _watch_sweeps(app, ctx: ServerContext, interval_s: float) -> None:
    import asyncio
    import logging

    log = logging.getLogger("trainyard.serving")
    while True:
        await asyncio.sleep(interval_s)
        if not ctx.settings.mlflow_uri:
            continue
        try:
            from types import SimpleNamespace

            service = get_serving(SimpleNamespace(app=app), ctx)  # cached on app.state
            await run_in_threadpool(service.promote_finished_sweeps, ctx.db)
        except Exception as exc:  # never let the watcher die
            log.warning("sweep promotion watcher: %s", exc)


def start_promotion_recovery(app, ctx: ServerContext):
    """Background thread: promotions a previous run of this server left unfinished are rolled back
    (or finished, when their decision was taken) and closed. Returns the thread, or None."""
    if not ctx.settings.mlflow_uri:
        return None
    from types import SimpleNamespace

    return get_serving(SimpleNamespace(app=app), ctx).start_recovery()


def start_sweep_promotions(app, ctx: ServerContext, *, interval_s: float = 5.0):
    """Background task: a sweep that SUCCEEDED with a `promote:` block gets its promotion."""
    import asyncio

    return asyncio.get_running_loop().create_task(_watch_sweeps(app, ctx, interval_s))

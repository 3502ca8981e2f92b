"""/v1/endpoints and /v1/models/{name}/promote|history: serving, owned by trainyard.serving.

    POST   /v1/endpoints                   deploy MODEL (version | alias | spec), or move it
    GET    /v1/endpoints                   list
    GET    /v1/endpoints/{name}            versions, weights, replicas, rate, errors, p50/p99
    DELETE /v1/endpoints/{name}
    POST   /v1/endpoints/{name}/predict    forwarded to Serve's HTTP port at the same path
    GET    /v1/endpoints/{name}/openapi.json   the family's request and response schema
    POST   /v1/models/{name}/promote       run a promotion (background unless wait)
    GET    /v1/models/{name}/history       every promotion decision with its evidence
    GET    /v1/promotions/{id}             one promotion started by this server
"""
from __future__ import annotations

from typing import Any, Optional, Union

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.errors import SpecError

router = APIRouter(tags=["endpoints"], dependencies=[Depends(require_admin)])


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

    model: Optional[str] = Field(None, description="Registered model name (or give spec.model).")
    version: Optional[str] = Field(None, description="Model version to serve.")
    alias: Optional[str] = Field(None, description="Registry alias to serve, e.g. champion.")
    spec: Union[dict[str, Any], str, None] = Field(None, description="Endpoint spec: a mapping or YAML text.")
    cluster: Optional[str] = Field(None, description="Registered cluster; default 'local'.")


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: Optional[str] = Field(None, description="Version to promote; default: the alias 'candidate'.")
    policy: Union[dict[str, Any], None] = Field(None, description="PromotionPolicy (a sweep's promote: block).")
    endpoint: Union[dict[str, Any], None] = Field(None, description="Endpoint spec fields for a new endpoint.")
    cluster: Optional[str] = None
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
    return parse_endpoint_spec(data, source="spec")


@router.post("/v1/endpoints", status_code=201, summary="Deploy a model version as an endpoint (or move it)")
async def deploy(body: DeployRequest, serving=Depends(get_serving)) -> dict:
    spec = _spec_from(body)
    cluster = body.cluster or (spec.cluster if spec is not None else None)
    manager = serving.manager(cluster)
    return await run_in_threadpool(manager.deploy, spec, model=body.model, version=body.version, alias=body.alias)


@router.get("/v1/endpoints", summary="List endpoints")
async def list_endpoints(cluster: Optional[str] = Query(None), serving=Depends(get_serving)) -> dict:
    return {"endpoints": await run_in_threadpool(serving.manager(cluster).list)}


@router.get("/v1/endpoints/{name}", summary="Show an endpoint: versions, weights, replicas, traffic")
async def show_endpoint(name: str, cluster: Optional[str] = Query(None), serving=Depends(get_serving)) -> dict:
    return await run_in_threadpool(serving.manager(cluster).show, name)


@router.delete("/v1/endpoints/{name}", status_code=204, summary="Delete an endpoint")
async def delete_endpoint(name: str, cluster: Optional[str] = Query(None), serving=Depends(get_serving)):
    await run_in_threadpool(serving.manager(cluster).delete, name)
    return Response(status_code=204)


@router.post("/v1/endpoints/{name}/predict", summary="Predict (forwarded to the endpoint on Ray Serve)",
             openapi_extra={
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": _family_request_schemas()}}},
                 "responses": {"200": {"description": "The family's predictor output; header x-trainyard-version "
                                                      "names the model version that answered",
                                       "content": {"application/json": {"schema": _family_response_schemas()}}},
                               "404": {"description": "Unknown endpoint"},
                               "422": {"description": "Payload of the wrong shape or type; names the field"}}})
async def predict(name: str, request: Request, cluster: Optional[str] = Query(None),
                  serving=Depends(get_serving)) -> Response:
    from trainyard.serving.config import route_prefix

    manager = serving.manager(cluster)
    body = await request.body()
    resp = await run_in_threadpool(manager.serve.request, "POST", f"{route_prefix(name)}/predict",
                                   content=body, headers={"content-type": "application/json"})
    if resp.status_code == 404 and not await run_in_threadpool(manager.exists, name):
        from trainyard.errors import NotFoundError

        raise NotFoundError("endpoint", name, known=[e["name"] for e in manager.list()])
    headers = {k: v for k, v in resp.headers.items() if k.startswith("x-trainyard-")}
    return Response(resp.content, status_code=resp.status_code, headers=headers,
                    media_type=resp.headers.get("content-type", "application/json"))


@router.get("/v1/endpoints/{name}/openapi.json", summary="The endpoint's OpenAPI page (its family's schema)")
async def endpoint_openapi(name: str, cluster: Optional[str] = Query(None), serving=Depends(get_serving)) -> dict:
    from trainyard.serving.openapi import endpoint_openapi as build

    state = await run_in_threadpool(serving.manager(cluster).get, name)
    return build(name, state.family)


@router.post("/v1/models/{name}/promote", status_code=202, summary="Promote the model's candidate")
async def promote(name: str, body: PromoteRequest, serving=Depends(get_serving)) -> JSONResponse:
    record = await run_in_threadpool(serving.promote, name, policy=body.policy, candidate=body.candidate,
                                     endpoint=body.endpoint, cluster=body.cluster, wait=body.wait)
    return JSONResponse(record, status_code=200 if body.wait else 202)


@router.get("/v1/models/{name}/history", summary="Every promotion decision of a model, with its evidence")
async def history(name: str, serving=Depends(get_serving)) -> dict:
    return await run_in_threadpool(serving.history, name)


@router.get("/v1/promotions/{pid}", summary="One promotion started by this server")
async def promotion(pid: str, serving=Depends(get_serving)) -> dict:
    return serving.promotion(pid)


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

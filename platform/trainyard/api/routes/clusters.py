"""/v1/clusters: register, list, remove Ray clusters."""
from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from trainyard.api.auth import require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.clusters.ray_client import RayClusterClient
from trainyard.clusters.registry import validate_cluster_name
from trainyard import redact
from trainyard.controller import views
from trainyard.errors import ConflictError, SpecError
from trainyard.store import clusters as repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

router = APIRouter(prefix="/v1/clusters", tags=["clusters"], dependencies=[Depends(require_admin)])


class AddClusterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Lower-case letters, digits and '-'.")
    address: str = Field(..., description="The Ray dashboard URL, e.g. http://10.0.0.5:8265")
    token: Optional[str] = Field(None, max_length=256,
                                 description="Ray auth token, by value (stored encrypted, never shown). "
                                             "The CLI's --token-file reads the file on the client.")
    token_file: Optional[str] = Field(None, description="Refused: the server reads no file named by a "
                                                        "request. Send the token's value in `token`.")
    max_resources: Optional[dict[str, Any]] = Field(
        None, description='For autoscaling clusters: {"nodes": [{"CPU": 8, "GPU": 1}, ...]}, the most '
                          "nodes it may grow to; jobs bigger than that are rejected at submit.")
    check: bool = Field(True, description="Contact the cluster before registering it.")


@router.get("", summary="List registered clusters")
def list_clusters(ctx: ServerContext = Depends(get_ctx)) -> dict:
    with ctx.db.session() as s:
        rows = repo.list_clusters(s)
        items = [views.cluster_dict(r, health=ctx.controller.health.get(r.name)) for r in rows]
    return {"clusters": items}


@router.post("", status_code=201, summary="Register a Ray cluster")
def add_cluster(body: AddClusterRequest, ctx: ServerContext = Depends(get_ctx)) -> dict:
    validate_cluster_name(body.name)
    if not body.address.startswith(("http://", "https://")):
        raise SpecError(f"must be an http(s):// URL of the Ray dashboard, got {body.address!r}",
                        field="address", value=body.address, fix="e.g. http://127.0.0.1:8265")
    if body.token_file is not None:
        # a path would make the server read any file it can and send it to any address
        raise SpecError("the server does not read token files", field="token_file", value=body.token_file,
                        fix="send the token's value in `token` (`trainyard clusters add --token-file F` "
                            "reads F on your machine)")
    if body.max_resources is not None and not isinstance(body.max_resources.get("nodes"), list):
        raise SpecError('must look like {"nodes": [{"CPU": 8}, ...]}', field="max_resources")
    token = body.token
    redact.register(token)
    with ctx.db.session() as s:
        if repo.find_cluster(s, body.name) is not None:
            raise ConflictError(f"cluster {body.name!r} is already registered", field="name", value=body.name,
                                fix=f"remove it first (`trainyard clusters remove {body.name}`)")
    if body.check:
        probe = RayClusterClient(body.name, body.address, token, timeout=5.0)
        try:
            probe.version()
        finally:
            probe.close()
    with ctx.db.session() as s:
        repo.add_cluster(s, name=body.name, dashboard_url=body.address,
                         token=body.token, max_resources=body.max_resources)
    ctx.controller.refresh_clusters()
    with ctx.db.session() as s:
        row = repo.get_cluster(s, body.name)
        return views.cluster_dict(row, health=ctx.controller.health.get(body.name))


@router.delete("/{name}", status_code=204, summary="Remove a cluster (no job may be active on it)")
def remove_cluster(name: str, ctx: ServerContext = Depends(get_ctx)) -> Response:
    with ctx.db.session() as s:
        repo.get_cluster(s, name)
        busy = [j.id for j in jobs_repo.active_jobs(s) if j.cluster == name]
        if busy:
            raise ConflictError(f"cluster {name!r} still has {len(busy)} active job(s): {', '.join(busy[:5])}",
                                field="name", value=name, fix="cancel them or wait until they end")
        repo.delete_cluster(s, name)
    ctx.registry.forget(name)
    ctx.controller.health.pop(name, None)
    return Response(status_code=204)

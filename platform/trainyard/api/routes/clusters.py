"""/v1/clusters: register, list, remove Ray clusters."""
from __future__ import annotations

from typing import Annotated, Any, Optional, Union
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from trainyard.api.auth import current_principal, require_admin
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.models import Cluster, ClusterList, answer
from trainyard.api.idempotency import IdempotencyKey, idempotency_for
from trainyard.api.params import NAME_RE, Name
from trainyard.clusters.ray_client import RayClusterClient
from trainyard.clusters.registry import validate_cluster_name
from trainyard import redact
from trainyard.controller import views
from trainyard.errors import ClusterError, ConflictError, SpecError
from trainyard.store import clusters as repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st

# anyone signed in sees the clusters; only admins add or remove them
router = APIRouter(prefix="/v1/clusters", tags=["clusters"], dependencies=[Depends(current_principal)],
                   responses=error_responses(401, 403, 422))

ResourceAmount = Annotated[Union[StrictInt, StrictFloat], Field(ge=0, le=1e9)]
ResourceName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:/-]+$")]


class NodePriceModel(BaseModel):
    """What one node of a node type costs an hour (trainyard.costs.NodePrice): jobs' cost records."""

    model_config = ConfigDict(extra="forbid")

    node_type: ResourceName
    instance_type: str = Field(..., min_length=1, max_length=128)
    market: str = Field(..., pattern="^(on_demand|spot)$")
    per_hour: Annotated[Union[StrictInt, StrictFloat], Field(gt=0, le=1e6)]
    cpus: ResourceAmount
    gpus: ResourceAmount
    accelerator_type: Optional[str] = Field(None, max_length=64)
    as_of: str = Field(..., pattern=r"^\d{4}-\d{2}-\d{2}$")
    currency: str = Field(..., pattern="^[A-Z]{3}$")


class MaxResources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[dict[ResourceName, ResourceAmount]] = Field(
        ..., min_length=1, max_length=1000, description='One entry per node, e.g. {"CPU": 8, "GPU": 1}.')
    # `trainyard clusters add --config F` names the file the maximum was read from
    source: Optional[str] = Field(None, max_length=4096, description="Where the maximum was read from.")
    prices: Optional[dict[ResourceName, NodePriceModel]] = Field(
        None, max_length=100, description="Hourly price per node type (from the launcher config and "
                                          "trainyard's dated price table): jobs on it get a money figure.")


class AddClusterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=63, pattern=NAME_RE,
                      description="Lower-case letters, digits and '-'.")
    address: str = Field(..., min_length=1, max_length=512,
                         description="The Ray dashboard URL, e.g. http://10.0.0.5:8265")
    token: Optional[str] = Field(None, min_length=1, max_length=512, pattern=r"^[!-~]+$",
                                 description="Ray auth token (stored by the server, never shown).")
    max_resources: Optional[MaxResources] = Field(
        None, description='For autoscaling clusters: {"nodes": [{"CPU": 8, "GPU": 1}, ...]}, the most '
                          "nodes it may grow to; jobs bigger than that are rejected at submit.")
    check: bool = Field(True, description="Contact the cluster before registering it.")

    token_file: Optional[str] = Field(
        None, max_length=4096, description="Refused: the server reads no file a request names. Send the "
                                           "token's value in `token` (the CLI's --token-file reads the file "
                                           "on your machine).")


def check_address(address: str, *, allowed_hosts: tuple[str, ...]) -> None:
    """An http(s) URL with a host (and, when the server restricts them, an allowed host):
    registration is the only request that makes the server call an address it is given."""
    fix = "e.g. http://127.0.0.1:8265"
    try:
        parts = urlsplit(address)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise SpecError("is not a valid URL", field="address", value=address, fix=fix) from None
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() or ord(c) < 32 for c in address):
        raise SpecError("must be an http(s):// URL of the Ray dashboard", field="address", value=address, fix=fix)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SpecError("must have no user, password, query or fragment", field="address", value=address,
                        fix="give the token in `token`")
    if allowed_hosts and host not in allowed_hosts:
        raise SpecError(f"host {host!r} is not one this server may contact; allowed: {', '.join(allowed_hosts)}",
                        field="address", value=address,
                        fix="ask the server's operator to add it to TRAINYARD_CLUSTER_HOSTS")


@router.get("", summary="List registered clusters")
def list_clusters(ctx: ServerContext = Depends(get_ctx)) -> ClusterList:
    with ctx.db.session() as s:
        rows = repo.list_clusters(s)
        items = [views.cluster_dict(r, health=ctx.controller.health.get(r.name)) for r in rows]
    return ClusterList(clusters=items)


@router.post("", status_code=201, summary="Register a Ray cluster (admins)", responses=error_responses(409, 413),
             response_model=Cluster, dependencies=[Depends(require_admin)])
def add_cluster(body: AddClusterRequest, idempotency_key: IdempotencyKey = None,
                ctx: ServerContext = Depends(get_ctx)) -> Any:
    idem = idempotency_for(idempotency_key, method="POST", route="/v1/clusters", body=body.model_dump(mode="json"))
    if idem is None:
        return _add_cluster(body, ctx)
    return idem.run(ctx, lambda: answer(Cluster, _add_cluster(body, ctx)), status_code=201,
                    resource_id=lambda r: r.get("name"))


def _add_cluster(body: AddClusterRequest, ctx: ServerContext) -> dict:
    validate_cluster_name(body.name)
    if body.token_file is not None:
        # a path would make the server read any file it can and send it, as a bearer token,
        # to any address
        raise SpecError("the server does not read token files", field="token_file", value=body.token_file,
                        fix="send the token's value in `token` (`trainyard clusters add --token-file F` "
                            "reads F on your machine)")
    check_address(body.address, allowed_hosts=ctx.settings.cluster_hosts_allowed())
    max_resources = body.max_resources.model_dump() if body.max_resources is not None else None
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
        except ClusterError as exc:
            # the address (or token) the request gave does not work: the request's fault, not a
            # failing backend of ours
            raise SpecError(f"the Ray dashboard did not answer as expected: {exc.message}",
                            field="token" if exc.message and "token" in exc.message else "address",
                            value=body.address,
                            fix="check the address and the token, or register it with check=false") from None
        finally:
            probe.close()
    with ctx.db.session() as s:
        repo.add_cluster(s, name=body.name, dashboard_url=body.address,
                         token=body.token, max_resources=max_resources)
    ctx.registry.invalidate()
    ctx.controller.refresh_clusters()
    with ctx.db.session() as s:
        row = repo.get_cluster(s, body.name)
        return views.cluster_dict(row, health=ctx.controller.health.get(body.name))


@router.delete("/{name}", status_code=204, summary="Remove a cluster (no job may be active on it; admins)",
               responses=error_responses(404, 409), dependencies=[Depends(require_admin)])
def remove_cluster(name: Name, ctx: ServerContext = Depends(get_ctx)) -> Response:
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

"""/healthz and /v1/auth/config (no auth), and /v1/status."""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends
from sqlalchemy import func, select

from trainyard import __version__
from trainyard.api.auth import current_principal
from trainyard.auth.principal import Principal
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.models import AuthConfig, Health, Status
from trainyard.controller import views
from trainyard.store import clusters as clusters_repo
from trainyard.store import state as st
from trainyard.store.models import JobRow

health_router = APIRouter(tags=["system"])
router = APIRouter(prefix="/v1", tags=["system"], dependencies=[Depends(current_principal)],
                   responses=error_responses(401, 403))


@health_router.get("/healthz", summary="Liveness (no auth)")
def healthz() -> Health:
    return Health(ok=True, version=__version__)


# the console's route that finishes a sign-on (console/src/main.js): register <server URL> + this
SSO_REDIRECT_PATH = "/auth/callback"


@health_router.get("/v1/auth/config", summary="How the console signs in (no auth)")
def auth_config(ctx: ServerContext = Depends(get_ctx)) -> AuthConfig:
    """Public values only: the browser needs them before anyone is signed in. `sso` is true when
    an issuer, its audience and the console's client id are all set."""
    settings = ctx.settings
    if not (settings.oidc_issuer and settings.oidc_audience and settings.oidc_client_id):
        return AuthConfig(sso=False)
    # an ID token's `aud` is the client id; any other audience is an API's, in the access token
    token = "id_token" if settings.oidc_audience == settings.oidc_client_id else "access_token"
    return AuthConfig(sso=True, issuer=settings.oidc_issuer, client_id=settings.oidc_client_id,
                      scopes=settings.oidc_scopes, redirect_path=SSO_REDIRECT_PATH, token=token)


@router.get("/status", summary="Server, clusters, job counts, controller")
def status(principal: Principal = Depends(current_principal), ctx: ServerContext = Depends(get_ctx)) -> Status:
    visible = principal.visible_projects()
    query = select(JobRow.phase, func.count()).group_by(JobRow.phase)
    if visible is not None:  # job counts of the caller's projects only
        query = query.where(JobRow.project.in_(sorted(visible)))
    with ctx.db.session() as s:
        counts = {state: 0 for state in st.PUBLIC_STATES}
        for phase, n in s.execute(query):
            counts[st.public_state(phase)] += n
        clusters = [views.cluster_dict(r, health=ctx.controller.health.get(r.name))
                    for r in clusters_repo.list_clusters(s)]
    return Status.model_validate({
        "server": {"version": __version__, "uptime_s": round(time.time() - ctx.started_at, 1),
                   "db": ctx.db.engine.url.get_backend_name(), "mlflow_uri": ctx.settings.mlflow_uri or None,
                   "storage": ctx.settings.storage},
        "clusters": clusters,
        "jobs": counts,
        "controller": ctx.controller.snapshot(),
    })

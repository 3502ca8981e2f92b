"""The FastAPI app: `create_app(settings)`. Lifespan: migrate the store, register the default
cluster, reconcile, recover promotions a previous run left unfinished (in the background),
then run the controller loop until shutdown."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from trainyard import __version__, redact
from trainyard.api.audit import AuditMiddleware
from trainyard.api.auth import Authenticator
from trainyard.api.console import install_console
from trainyard.api.context import ServerContext
from trainyard.api.errors import install_error_handlers
from trainyard.api.fastpath import FastSubmit, submit_route
from trainyard.api.follows import FollowGate
from trainyard.api.params import BODY_LIMIT, SUBMIT_BODY_LIMIT
from trainyard.api.routes import clusters, endpoints, job_metrics, jobs, queue, sweeps, system, teams
from trainyard.clusters.registry import ClientFactory, ClusterRegistry
from trainyard.config import Settings, ensure_secret
from trainyard.controller import housekeeping
from trainyard.controller.group_commit import GroupCommitter
from trainyard.controller.loop import Controller
from trainyard.controller.pacing import RequestGauge
from trainyard.controller.service import JobService
from trainyard.store import Database

__all__ = ["create_app", "ROUTERS"]

log = logging.getLogger("trainyard.api")

ROUTERS = [system.health_router, system.router, jobs.router, queue.router, clusters.router, sweeps.router,
           endpoints.router, teams.me_router, teams.users_router, teams.tokens_router, teams.projects_router,
           teams.audit_router, job_metrics.router]


def _bootstrap_teams(db: Database, admin_token: str) -> None:
    """User `admin` and project `default` exist; the admin token file's token is admin's."""
    from trainyard.auth.tokens import hash_token
    from trainyard.store import teams as teams_repo

    with db.session() as s:
        teams_repo.bootstrap_admin(s, admin_token_sha256=hash_token(admin_token) if admin_token else None)


def create_app(settings: Settings | None = None, *, client_factory: ClientFactory | None = None,
               run_controller: bool = True, fast_submit: bool = True) -> FastAPI:
    """Build the app. `client_factory` swaps the Ray REST client (unit tests); with
    run_controller=False no background loop runs (tests drive `ctx.controller.tick()`);
    with fast_submit=False every submission goes through FastAPI's routing (api.fastpath's
    tests compare the two)."""
    settings = settings or Settings.from_env()
    redact.register(*settings.secret_values())
    db = Database(settings.db_url)
    registry = ClusterRegistry(db, settings, client_factory=client_factory)
    commits = GroupCommitter(db)
    requests = RequestGauge()
    ctx = ServerContext(settings=settings, db=db, registry=registry,
                        jobs=JobService(db, registry, settings, commits=commits),
                        controller=Controller(db, registry, settings, commit=commits.run, requests=requests),
                        commits=commits)
    # the jobs a batch of submissions inserted go to the queue mirror as committed: its next
    # scan finds them unchanged and does not read them (and their spec JSON) back
    commits.on_inserted(lambda rows: ctx.controller.queue.offer(rows.get("jobs", ())))
    ctx.auth = Authenticator(db, settings)
    ctx.follows = FollowGate(per_user=settings.log_follows_per_user, total=settings.log_follows_total)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from trainyard.store import crypto

        await asyncio.to_thread(crypto.ensure_key)
        await asyncio.to_thread(db.upgrade)
        ctx.admin_token = ensure_secret(Path(settings.admin_token_file).expanduser())
        redact.register(ctx.admin_token)
        await asyncio.to_thread(_bootstrap_teams, db, ctx.admin_token)
        registry.ensure_default()
        if run_controller:
            await asyncio.to_thread(ctx.controller.refresh_clusters)
            await ctx.controller.start()
            endpoints.start_promotion_recovery(app, ctx)  # a thread: startup does not wait for it
            promotions = endpoints.start_sweep_promotions(app, ctx)
            retention = asyncio.create_task(housekeeping.run_forever(db, settings), name="retention")
        log.info("trainyard server %s ready (db %s)", __version__, db.engine.url.get_backend_name())
        try:
            yield
        finally:
            if run_controller:
                promotions.cancel()
                retention.cancel()
                await ctx.controller.stop()
            ctx.jobs.close()
            commits.close()
            registry.close()
            db.dispose()

    app = FastAPI(title="Trainyard", version=__version__, lifespan=lifespan,
                  description="Train deep-learning models on Ray clusters: jobs, clusters, status. "
                              "Every route needs `Authorization: Bearer <token>` (a personal API token, or a "
                              "single sign-on token where configured) except /healthz, /v1/auth/config (how the "
                              "console signs in: public values only) and this "
                              "reference (/docs, /redoc, /openapi.json), which describe the API and hold no data. "
                              "Objects belong to projects; callers see the projects they have a role in "
                              "(viewer, member, maintainer) and get 404 for the others. Every state-changing "
                              "request is recorded in the audit trail (GET /v1/audit, admins). "
                              "Every error answer has one shape (ErrorBody: `error`, `message`, `issues`). "
                              "Creating routes take an `Idempotency-Key` header, so that a retry creates nothing twice.")
    app.state.ctx = ctx
    if fast_submit:
        # added first, so innermost of ours: inside the catch-all 500 and the audit trail
        app.add_middleware(FastSubmit, counts=ctx.fast_submits, routes={
            "/v1/jobs": submit_route(jobs.submit_job, max_body=SUBMIT_BODY_LIMIT),
            "/v1/sweeps": submit_route(sweeps.submit_sweep, max_body=SUBMIT_BODY_LIMIT)})
    install_error_handlers(app)
    for router in ROUTERS:
        # request bodies: 1 MiB unless a route says more (submissions carry a zip, predictions
        # images); set per router, not per app, so that the 413 gets the error schema
        app.include_router(router, max_body_size=BODY_LIMIT)
    install_console(app)  # last: its catch-all answers only what no API route took
    # outermost: sees every answer's final status, the error handlers' and CatchAll's included
    app.add_middleware(AuditMiddleware, committer_of=lambda a: a.state.ctx.commits)
    # the controller's ticks yield to requests while the API is busy (controller/pacing.py)
    app.add_middleware(CountRequests, gauge=requests)
    return app


class CountRequests:
    """Counts every HTTP request into a RequestGauge, as the outermost layer: one increment."""

    def __init__(self, app, gauge: RequestGauge):
        self.app = app
        self.gauge = gauge

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.gauge.started += 1
        await self.app(scope, receive, send)

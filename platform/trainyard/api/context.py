"""What every route needs, built once per app: settings, store, clusters, service, controller."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings
from trainyard.controller.group_commit import GroupCommitter
from trainyard.controller.loop import Controller
from trainyard.controller.service import JobService
from trainyard.store import Database

__all__ = ["ServerContext", "get_ctx"]


@dataclass
class ServerContext:
    settings: Settings
    db: Database
    registry: ClusterRegistry
    jobs: JobService
    controller: Controller
    # durable writes of requests (submissions, audit rows) share commits through it
    commits: GroupCommitter
    admin_token: str = field(repr=False, default="")
    # api.auth.Authenticator: token lookups and their cache (made on first use)
    auth: Any = field(repr=False, default=None)
    started_at: float = field(default_factory=time.time)
    # api.follows.FollowGate: open followed logs, per user and in all
    follows: Any = field(repr=False, default=None)
    # projects seen committed: an admin's submission into one skips ensure_project_exists
    # (projects are never deleted, so an entry never goes stale)
    known_projects: set = field(repr=False, default_factory=set)
    # api.fastpath: submissions it answered ("served") and handed to the full stack ("handed_over")
    fast_submits: Counter = field(repr=False, default_factory=Counter)


async def get_ctx(request: Request) -> ServerContext:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request
    return request.app.state.ctx

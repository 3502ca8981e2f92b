"""The registry of Ray clusters: rows in the store, one REST client per cluster.

The default cluster, 'local', comes from settings (ray_dashboard_url + ray_token_file) and
is (re-)registered at every server start, so `trainyard up` on new ports just works.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from trainyard.clusters.ray_client import RayClusterClient
from trainyard.config import Settings, read_secret
from trainyard.errors import SpecError
from trainyard.store import Database
from trainyard.store import clusters as repo
from trainyard.store.models import ClusterRow

__all__ = ["ClusterRegistry", "DEFAULT_CLUSTER", "ClientFactory", "cluster_token", "validate_cluster_name"]

DEFAULT_CLUSTER = "local"
# How long a submission's capacity check may reuse the cluster list (see cached_rows).
ROWS_MAX_AGE_S = 2.0
ClientFactory = Callable[[str, str, "str | None"], RayClusterClient]


def cluster_token(row: ClusterRow) -> str | None:
    if row.token:
        return row.token
    if row.token_file:
        return read_secret(Path(row.token_file).expanduser())
    return None


def validate_cluster_name(name: str) -> None:
    import re

    if not re.match(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name or ""):
        raise SpecError(f"must be lower-case letters, digits and '-', at most 63, got {name!r}",
                        field="name", value=name)


class ClusterRegistry:
    def __init__(self, db: Database, settings: Settings, *, client_factory: ClientFactory | None = None):
        self.db = db
        self.settings = settings
        self._factory = client_factory or (lambda name, url, token: RayClusterClient(name, url, token))
        self._clients: dict[str, tuple[tuple, RayClusterClient]] = {}
        self._lock = threading.Lock()
        self._rows: tuple[float, list[ClusterRow]] | None = None  # (monotonic time read, rows)
        self._generation = 0  # bumped by invalidate(): a read begun before it is not cached

    def ensure_default(self) -> None:
        """Register 'local' from settings, when the settings name a dashboard."""
        if not self.settings.ray_dashboard_url:
            return
        from trainyard.clusters.autoscaling import default_autoscaling_config, max_nodes_from_config

        config = default_autoscaling_config(self.settings)
        max_resources = {"nodes": max_nodes_from_config(config), "source": config} if config else None
        with self.db.session() as s:
            repo.upsert_cluster(s, name=DEFAULT_CLUSTER, dashboard_url=self.settings.ray_dashboard_url,
                                token_file=self.settings.ray_token_file or None, token=None,
                                max_resources=max_resources)
        self.invalidate()

    def names(self) -> list[str]:
        with self.db.session() as s:
            return [r.name for r in repo.list_clusters(s)]

    def cached_rows(self, *, max_age_s: float = ROWS_MAX_AGE_S) -> list[ClusterRow]:
        """The cluster rows (detached, read-only: never change or add them to a session), read
        from the store at most every `max_age_s` seconds.

        Every submission's capacity check reads them; under a burst that read was as dear as
        the insert. A change made through this server (add, remove, the controller's refresh of
        what a cluster has) calls invalidate(), so only a change made behind its back, by
        another server on the same store, can go unseen, and for `max_age_s` at most: the
        check refuses only jobs that could never fit, and the scheduler decides placement
        from fresh rows anyway."""
        now = time.monotonic()
        with self._lock:
            cached, generation = self._rows, self._generation
        if cached is not None and now - cached[0] < max_age_s:
            return cached[1]
        with self.db.session() as s:
            rows = repo.list_clusters(s)
        with self._lock:
            if self._generation == generation:  # no change arrived while we read
                self._rows = (now, rows)
        return rows

    def invalidate(self) -> None:
        """Clusters changed (registered, removed, refreshed): the next cached_rows() reads them."""
        with self._lock:
            self._rows = None
            self._generation += 1

    def client(self, name: str) -> RayClusterClient:
        with self.db.session() as s:
            row = repo.get_cluster(s, name)
            key = (row.dashboard_url, cluster_token(row))
        with self._lock:
            cached = self._clients.get(name)
            if cached and cached[0] == key:
                return cached[1]
            client = self._factory(name, key[0], key[1])
            self._clients[name] = (key, client)
            return client

    def forget(self, name: str) -> None:
        self.invalidate()
        with self._lock:
            cached = self._clients.pop(name, None)
        if cached and hasattr(cached[1], "close"):
            cached[1].close()

    def close(self) -> None:
        for name in list(self._clients):
            self.forget(name)

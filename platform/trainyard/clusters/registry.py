"""The registry of Ray clusters: rows in the store, one REST client per cluster.

The default cluster, 'local', comes from settings (ray_dashboard_url + ray_token_file) and
is (re-)registered at every server start, so `trainyard up` on new ports just works.
"""
from __future__ import annotations

import threading
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

    def names(self) -> list[str]:
        with self.db.session() as s:
            return [r.name for r in repo.list_clusters(s)]

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
        with self._lock:
            cached = self._clients.pop(name, None)
        if cached and hasattr(cached[1], "close"):
            cached[1].close()

    def close(self) -> None:
        for name in list(self._clients):
            self.forget(name)

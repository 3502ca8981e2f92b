"""A Ray cluster over its dashboard REST API (Jobs, packages, node resources).

Plain httpx, no `import ray` (seconds to import). Token auth: `Authorization: Bearer`.
Error messages name the cluster and its address, never the token or any secret that was
sent along (runtime_env values are redacted from Ray's answers).
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable

import httpx

from trainyard import redact
from trainyard.errors import ClusterError, ConflictError

__all__ = ["RayClusterClient", "package_name_for", "IGNORED_RESOURCES", "SubmitRejected"]

# Resources the scheduler does not reason about.
IGNORED_RESOURCES = ("memory", "objectStoreMemory", "object_store_memory")


class SubmitRejected(ClusterError):
    """Ray answered and refused the submission (a 4xx/5xx with a reason, not a network error)."""


def package_name_for(data: bytes) -> str:
    """Content-addressed Ray package name: the same folder uploads once."""
    return f"_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"


def _keep(key: str) -> bool:
    return not key.startswith("node:") and key not in IGNORED_RESOURCES


class RayClusterClient:
    def __init__(self, name: str, dashboard_url: str, token: str | None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self.name = name
        self.url = dashboard_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)
        self._secrets: list[str] = [token] if token else []
        redact.register(token)

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing
    def _redact(self, text: str, extra: Iterable[str] = ()) -> str:
        return redact.redact(text, [*self._secrets, *extra])

    def _request(self, method: str, path: str, *, ok_404: bool = False,
                 secrets: Iterable[str] = (), **kwargs) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClusterError(f"cluster '{self.name}' at {self.url} did not answer in time",
                               fix="check that it runs (`trainyard status`) and is not overloaded") from None
        except httpx.TransportError as exc:
            raise ClusterError(f"cluster '{self.name}' at {self.url} is unreachable ({type(exc).__name__})",
                               fix="check that it runs (`trainyard status`) and that its address is right") from None
        if resp.status_code in (401, 403):
            what = "no token" if resp.status_code == 401 else "a token it does not accept"
            raise ClusterError(f"cluster '{self.name}' at {self.url} refused the request: we sent {what} "
                               f"(HTTP {resp.status_code})",
                               fix="re-register the cluster with its current token (`trainyard clusters add`)")
        if resp.status_code == 404 and ok_404:
            return resp
        if resp.status_code >= 400:
            detail = self._redact(resp.text.strip(), secrets)
            # Ray answers with a traceback; its last line says why
            lines = [ln for ln in detail.splitlines() if ln.strip() and ln.strip() != "."]
            reason = lines[-1] if lines else f"HTTP {resp.status_code}"
            raise SubmitRejected(f"cluster '{self.name}' refused {method} {path}: {reason[:500]}",
                                 value=resp.status_code)
        return resp

    # ------------------------------------------------------------------ jobs
    def submit(self, *, submission_id: str, entrypoint: str, runtime_env: dict | None = None,
               metadata: dict | None = None, entrypoint_num_cpus: float | None = None,
               secrets: Iterable[str] = ()) -> str:
        """Submit a Ray job. Returns "submitted", or "exists" when Ray already has this
        submission_id (a retry after a crash: it is the same job, not a second one)."""
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id}
        if runtime_env:
            body["runtime_env"] = runtime_env
        if metadata:
            body["metadata"] = {k: str(v) for k, v in metadata.items()}
        if entrypoint_num_cpus is not None:
            body["entrypoint_num_cpus"] = entrypoint_num_cpus
        try:
            self._request("POST", "/api/jobs/", json=body, secrets=secrets)
        except SubmitRejected as exc:
            if "already exists" in exc.message:
                return "exists"
            raise
        return "submitted"

    def status(self, submission_id: str) -> dict | None:
        """Ray's job details (status, message, start/end times, exit code), or None if unknown."""
        resp = self._request("GET", f"/api/jobs/{submission_id}", ok_404=True)
        if resp.status_code == 404:
            return None
        return resp.json()

    def logs(self, submission_id: str) -> str | None:
        resp = self._request("GET", f"/api/jobs/{submission_id}/logs", ok_404=True)
        if resp.status_code == 404:
            return None
        return resp.json().get("logs", "")

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job. False when it was already over or is unknown."""
        resp = self._request("POST", f"/api/jobs/{submission_id}/stop", ok_404=True)
        if resp.status_code == 404:
            return False
        return bool(resp.json().get("stopped", False))

    def list_jobs(self) -> list[dict]:
        return self._request("GET", "/api/jobs/").json()

    # ------------------------------------------------------------------ packages
    def package_exists(self, name: str) -> bool:
        resp = self._request("GET", f"/api/packages/gcs/{name}", ok_404=True)
        return resp.status_code == 200

    def upload_package(self, data: bytes) -> str:
        """Upload a working_dir zip to the cluster's GCS; returns the gcs:// URI for runtime_env."""
        name = package_name_for(data)
        if not self.package_exists(name):
            self._request("PUT", f"/api/packages/gcs/{name}", content=data,
                          headers={"Content-Type": "application/octet-stream"})
        return f"gcs://{name}"

    # ------------------------------------------------------------------ resources
    def version(self) -> dict:
        return self._request("GET", "/api/version").json()

    def resources(self) -> dict:
        """Per alive node: total and free logical resources.

        Totals come from the node table (/nodes?view=summary); usage from the autoscaler's
        load report (/api/cluster_status), which refreshes every few seconds and is empty
        right after the head starts (then every node counts as idle; the controller also
        subtracts what it dispatched itself, so it never over-admits on a stale report).
        """
        summary = self._request("GET", "/nodes", params={"view": "summary"}).json()
        nodes_raw = (summary.get("data") or {}).get("summary") or []
        usage_by_node: dict = {}
        try:
            status = self._request("GET", "/api/cluster_status").json()
            report = (((status.get("data") or {}).get("clusterStatus") or {}).get("loadMetricsReport") or {})
            usage_by_node = report.get("usageByNode") or {}
        except ClusterError:
            usage_by_node = {}
        nodes = []
        for node in nodes_raw:
            raylet = node.get("raylet") or {}
            if raylet.get("state", "ALIVE") != "ALIVE":
                continue
            node_id = raylet.get("nodeId", "")
            total = {k: float(v) for k, v in (raylet.get("resourcesTotal") or {}).items() if _keep(k)}
            used = {k: float(v[0]) for k, v in (usage_by_node.get(node_id) or {}).items()
                    if _keep(k) and isinstance(v, (list, tuple)) and v}
            free = {k: max(0.0, v - used.get(k, 0.0)) for k, v in total.items()}
            nodes.append({"id": node_id, "total": total, "free": free})
        return {"nodes": nodes}

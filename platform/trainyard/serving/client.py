"""Ray Serve over the dashboard REST API, and the endpoints' own HTTP routes.

Plain httpx, no `import ray`: the control plane uses this. The dashboard needs the
cluster's bearer token; Serve's HTTP port needs none.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import httpx

from trainyard import redact
from trainyard.errors import ClusterError, FieldIssue, NotFoundError, SpecError, TrainyardError

__all__ = ["ServeClient", "DEFAULT_HTTP_PORT", "raise_for_endpoint"]

DEFAULT_HTTP_PORT = 8000
_APPS = "/api/serve/applications/"


class ServeClient:
    """One cluster's Serve: declarative config (dashboard) + HTTP requests (proxy)."""

    def __init__(self, dashboard_url: str, *, token: str | None = None, http_host: str = "127.0.0.1",
                 http_port: int = DEFAULT_HTTP_PORT, http_bind_host: str | None = None,
                 name: str = "default", timeout: float = 30.0):
        self.name = name
        self.dashboard_url = dashboard_url.rstrip("/")
        self.http_host, self.http_port = http_host, int(http_port)
        # where the proxy listens on the cluster (0.0.0.0 in a real cluster) vs where we reach it
        self.http_bind_host = http_bind_host or http_host
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._token = token
        redact.register(token)
        self._dash = httpx.Client(base_url=self.dashboard_url, headers=headers, timeout=timeout)
        self._http = httpx.Client(base_url=self.serve_url, timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=32))

    @property
    def serve_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def close(self) -> None:
        self._dash.close()
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ dashboard
    def _dashboard(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            resp = self._dash.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ClusterError(f"cluster '{self.name}' dashboard at {self.dashboard_url} is unreachable "
                               f"({type(exc).__name__})", fix="check that the cluster runs and its address") from None
        if resp.status_code in (401, 403):
            raise ClusterError(f"cluster '{self.name}' refused the Serve API request (HTTP {resp.status_code}): "
                               "the token is missing or wrong", fix="re-register the cluster with its token")
        if resp.status_code >= 400:
            text = redact.redact(resp.text.strip(), [self._token])
            lines = [ln for ln in text.splitlines() if ln.strip()]
            raise ClusterError(f"cluster '{self.name}' Serve API {method} {path} failed "
                               f"(HTTP {resp.status_code}): {(lines[-1] if lines else '')[:500]}")
        return resp

    def details(self) -> dict:
        """GET /api/serve/applications/: every app with status, config and replicas."""
        return self._dashboard("GET", _APPS).json()

    def applications(self) -> dict[str, dict]:
        return dict(self.details().get("applications") or {})

    def current_config(self, details: Mapping | None = None) -> dict:
        """The declarative config of what is deployed now (apps deployed through this API)."""
        details = details if details is not None else self.details()
        apps = []
        for app in (details.get("applications") or {}).values():
            cfg = app.get("deployed_app_config")
            if cfg:
                apps.append(cfg)
        return {"applications": apps}

    def put_config(self, config: Mapping) -> None:
        self._dashboard("PUT", _APPS, json=dict(config))

    def shutdown(self) -> None:
        """Remove every application and stop Serve on the cluster."""
        self._dashboard("DELETE", _APPS)

    def wait_app(self, name: str, *, generation: int | None = None, timeout: float = 180.0,
                 gone: bool = False, poll: float = 0.1) -> dict | None:
        """Wait until app `name` is RUNNING with every deployment HEALTHY (at `generation`), or gone."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            app = self.applications().get(name)
            if gone:
                if app is None:
                    return None
                last = f"status {app.get('status')}"
            elif app is not None:
                status = app.get("status")
                if status == "DEPLOY_FAILED":
                    raise ClusterError(f"endpoint {name!r} failed to deploy on cluster '{self.name}': "
                                       f"{(app.get('message') or '').strip()[-800:]}",
                                       fix="see the Serve logs on the cluster")
                deps = app.get("deployments") or {}
                healthy = deps and all(d.get("status") == "HEALTHY" for d in deps.values())
                at_gen = generation is None or _generation(app) == generation
                if status == "RUNNING" and healthy and at_gen:
                    return app
                last = f"status {status}, deployments " + ", ".join(
                    f"{k}={v.get('status')}" for k, v in deps.items())
            time.sleep(poll)
        raise ClusterError(f"endpoint {name!r} on cluster '{self.name}' was not "
                           f"{'removed' if gone else 'running'} after {timeout:.0f}s ({last})",
                           fix="see `trainyard endpoints show` and the Serve logs")

    # ------------------------------------------------------------------ Serve HTTP
    def request(self, method: str, path: str, *, json: Any = None, content: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise ClusterError(f"Serve on cluster '{self.name}' at {self.serve_url} is unreachable "
                               f"({type(exc).__name__})", fix="deploy an endpoint first; check the Serve HTTP port") from None


def _generation(app: Mapping) -> int | None:
    for dep in (app.get("deployments") or {}).values():
        cfg = (dep.get("deployment_config") or {}).get("user_config") or {}
        traffic = cfg.get("traffic") if isinstance(cfg, dict) else None
        if traffic is not None:
            return int(traffic.get("generation", 0))
    return None


def raise_for_endpoint(resp: httpx.Response, name: str) -> None:
    """Map an endpoint's HTTP answer to Trainyard errors (422 names the field)."""
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
    except ValueError:
        body = {"message": resp.text[:500]}
    if resp.status_code == 404:
        raise NotFoundError("endpoint", name)
    if resp.status_code == 422:
        issues = body.get("issues") or []
        if issues:
            raise SpecError([FieldIssue(i.get("field") or "", i.get("message") or "invalid", i.get("value"),
                                        i.get("fix")) for i in issues], source=f"endpoint {name}")
        raise SpecError(body.get("message", "invalid payload"), field=body.get("field"), value=body.get("value"),
                        fix=body.get("fix"), source=f"endpoint {name}")
    err = TrainyardError(body.get("message", f"HTTP {resp.status_code}"))
    err.status = resp.status_code
    err.code = body.get("error", "endpoint_error")
    raise err

"""Ray Serve over the dashboard REST API, and the endpoints' own HTTP routes.

Plain httpx, no `import ray`: the control plane uses this. The dashboard needs the
cluster's bearer token (trainyard.clusters.dashboard handles it, and its errors); Serve's
HTTP port needs none.
"""
from __future__ import annotations

from typing import Any, Mapping

import httpx
import tenacity

from trainyard.clusters.dashboard import DashboardClient
from trainyard.errors import ClusterError, FieldIssue, NotFoundError, SpecError, TrainyardError

__all__ = ["ServeClient", "DEFAULT_HTTP_PORT", "raise_for_endpoint"]

DEFAULT_HTTP_PORT = 8000
_APPS = "/api/serve/applications/"
_PENDING = object()  # a wait's "not yet"


class ServeClient(DashboardClient):
    """One cluster's Serve: declarative config (dashboard, via DashboardClient) + HTTP requests (proxy)."""

    def __init__(self, dashboard_url: str, *, token: str | None = None, http_host: str = "127.0.0.1",
                 http_port: int = DEFAULT_HTTP_PORT, http_bind_host: str | None = None,
                 name: str = "default", timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        super().__init__(name, dashboard_url, token, timeout=timeout, transport=transport)
        self.http_host, self.http_port = http_host, int(http_port)
        # where the proxy listens on the cluster (0.0.0.0 in a real cluster) vs where we reach it
        self.http_bind_host = http_bind_host or http_host
        self._http = httpx.Client(base_url=self.serve_url, timeout=timeout,
                                  limits=httpx.Limits(max_keepalive_connections=32))

    @property
    def dashboard_url(self) -> str:
        return self.url

    @property
    def serve_url(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def close(self) -> None:
        super().close()
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ dashboard
    def details(self) -> dict:
        """GET /api/serve/applications/: every app with status, config and replicas."""
        return self._request("GET", _APPS).json()

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
        self._request("PUT", _APPS, json=dict(config))

    def shutdown(self) -> None:
        """Remove every application and stop Serve on the cluster."""
        self._request("DELETE", _APPS)

    def wait_app(self, name: str, *, generation: int | None = None, timeout: float = 180.0,
                 gone: bool = False, poll: float = 0.1) -> dict | None:
        """Wait until app `name` is RUNNING with every deployment HEALTHY (at `generation`), or gone."""
        last = "no answer"

        def check() -> Any:
            nonlocal last
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
            return _PENDING

        # a refusal or DEPLOY_FAILED ends the wait at once; only "not there yet" polls again
        result = tenacity.Retrying(stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(poll),
                                   retry=tenacity.retry_if_result(lambda r: r is _PENDING),
                                   retry_error_callback=lambda _state: _PENDING)(check)
        if result is not _PENDING:
            return result
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

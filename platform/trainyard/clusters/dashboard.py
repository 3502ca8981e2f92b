"""The HTTP plumbing of every client of a Ray cluster's dashboard (Jobs API, Serve API).

Plain httpx, no `import ray` (seconds to import). Token auth: `Authorization: Bearer`.
Errors name the cluster and its address, never the token or a secret that was sent
along: Ray answers a bad request with a traceback that may quote what it was given, so its
text is redacted before its last line (the reason) goes into a message.
"""
from __future__ import annotations

from typing import Iterable

import httpx

from trainyard import redact
from trainyard.errors import ClusterError

__all__ = ["DashboardClient", "DashboardRejected"]


class DashboardRejected(ClusterError):
    """The dashboard answered and refused the request (a 4xx/5xx with a reason, not a network error)."""


class DashboardClient:
    """One cluster's dashboard: `_request` maps every failure to a ClusterError that says why."""

    def __init__(self, name: str, dashboard_url: str, token: str | None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None):
        self.name = name
        self.url = dashboard_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._dash = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._secrets: list[str] = [token] if token else []
        redact.register(token)  # also kept out of every log line of this process

    def close(self) -> None:
        self._dash.close()

    def _redact(self, text: str, extra: Iterable[str] = ()) -> str:
        return redact.redact(text, [*self._secrets, *extra])

    def _request(self, method: str, path: str, *, ok_404: bool = False,
                 secrets: Iterable[str] = (), **kwargs) -> httpx.Response:
        try:
            resp = self._dash.request(method, path, **kwargs)
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
            raise DashboardRejected(f"cluster '{self.name}' refused {method} {path} (HTTP {resp.status_code}): "
                                    f"{reason[:500]}", value=resp.status_code)
        return resp

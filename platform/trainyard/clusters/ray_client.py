"""A Ray cluster over its dashboard REST API (Jobs, packages, node resources).

Plain httpx over trainyard.clusters.dashboard, which owns the token, the errors and the
redaction of what was sent along (runtime_env values) from Ray's answers.
"""
from __future__ import annotations

import hashlib
import socket
import threading
import time
from typing import Any, Iterable, Iterator

import httpx

from trainyard.clusters.dashboard import DashboardClient, DashboardRejected
from trainyard.errors import ClusterError

__all__ = ["RayClusterClient", "package_name_for", "IGNORED_RESOURCES", "SubmitRejected"]

# Resources the scheduler does not reason about.
IGNORED_RESOURCES = ("memory", "objectStoreMemory", "object_store_memory")


# a submission Ray answered and refused (not a network error): the controller fails the job
SubmitRejected = DashboardRejected


def package_name_for(data: bytes) -> str:
    """Content-addressed Ray package name: the same folder uploads once."""
    return f"_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"


def _keep(key: str) -> bool:
    return not key.startswith("node:") and key not in IGNORED_RESOURCES


def _interrupt(response) -> None:
    """End a streamed response that another thread is blocked reading. Closing a socket does not
    wake a blocked recv() on Linux; shutting it down does (the reader then sees the end)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed already
    response.close()


class RayClusterClient(DashboardClient):
    """Jobs, packages and node resources of one cluster (auth, errors: DashboardClient)."""

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

    def tail_logs(self, submission_id: str, *, stop: threading.Event | None = None,
                  poll_s: float = 1.0) -> Iterator[str]:
        """The driver's log as Ray writes it: from its start, then each new chunk, until the job
        ended (Ray closes the stream then) or `stop` is set. Ray's Jobs API has no offset on
        /logs; its tail websocket sends each byte once, so a follower never downloads the log again."""
        from websockets.exceptions import ConnectionClosedOK, InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        url = "ws" + self.url[len("http"):] + f"/api/jobs/{submission_id}/logs/tail"
        auth = self._dash.headers.get("Authorization")
        try:
            ws = connect(url, additional_headers={"Authorization": auth} if auth else None, open_timeout=10,
                         proxy=None, max_size=16 * 1024 * 1024)
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code == 404:
                raise ClusterError(f"cluster '{self.name}' does not know Ray job {submission_id}",
                                   value=submission_id, fix="its logs are gone with the cluster's job record") from None
            what = {401: "no token", 403: "a token it does not accept"}.get(code, f"HTTP {code}")
            raise ClusterError(f"cluster '{self.name}' at {self.url} refused the log tail ({what})",
                               fix="check the cluster's token (`trainyard clusters add`)") from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise ClusterError(f"cluster '{self.name}' at {self.url} is unreachable for the log tail "
                               f"({type(exc).__name__})", fix="check that it runs (`trainyard status`)") from None
        sent = 0
        try:
            while stop is None or not stop.is_set():
                try:
                    message = ws.recv(timeout=poll_s)
                except TimeoutError:
                    continue
                except ConnectionClosedOK:
                    break
                except WebSocketException as exc:
                    raise ClusterError(f"cluster '{self.name}' dropped the log tail of {submission_id} "
                                       f"({type(exc).__name__})", fix="follow the logs again") from None
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                sent += len(text)
                yield text
        finally:
            ws.close()
        # Ray closes the tail when the job ended, but also at once, with nothing sent, on a head
        # with token auth (measured on 2.60: its hop to the node's agent ends the stream). Then
        # follow the driver's log file through Ray's state API instead: the log agent sends
        # what is new as it is written, so each byte still comes once.
        if not self._done(submission_id):
            try:
                for text in self._stream_log_file(submission_id, skip=sent, stop=stop):
                    sent += len(text)
                    yield text
            except ClusterError:
                pass  # an older or restricted head: read the whole log once a poll below
        # the job ended (or the state API cannot stream): what is left, from the whole log
        while True:
            done = self._done(submission_id)
            text = self.logs(submission_id) or ""
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if done or (stop is not None and stop.wait(poll_s)):
                return
            if stop is None:
                time.sleep(poll_s)

    def _done(self, submission_id: str) -> bool:
        return (self.status(submission_id) or {}).get("status") in ("SUCCEEDED", "FAILED", "STOPPED", None)

    def _driver_node(self, submission_id: str) -> str:
        node = (self.status(submission_id) or {}).get("driver_node_id")
        if not node:
            raise ClusterError(f"cluster '{self.name}': Ray job {submission_id} has no driver node yet",
                               fix="try again once the job started")
        return node

    def log_lines(self, submission_id: str, *, lines: int, node_id: str | None = None) -> str:
        """The last `lines` lines of the driver's log, through Ray's state API (the log agent
        reads the file's end): what a progress check needs, whatever the log's length."""
        resp = self._request("GET", "/api/v0/logs/file",
                             params={"submission_id": submission_id, "lines": int(lines),
                                     "node_id": node_id or self._driver_node(submission_id)})
        return resp.text

    def _stream_log_file(self, submission_id: str, *, skip: int, stop: threading.Event | None,
                         check_s: float = 2.0) -> Iterator[str]:
        """The driver's log from its start, then each new piece until the job ended or `stop`:
        Ray's state API follows the file (`/api/v0/logs/stream`, lines=-1: all of it) but never
        ends the stream itself, so a watcher closes it once Ray reports the job over. The first
        `skip` characters (already passed on) are dropped."""
        node = self._driver_node(submission_id)
        params = {"submission_id": submission_id, "node_id": node, "lines": -1, "interval": 0.5}
        over = threading.Event()

        def watch(response) -> None:
            while not over.wait(check_s):
                try:
                    ended = self._done(submission_id)
                except ClusterError:
                    ended = False
                if ended:
                    over.wait(1.0)  # the agent sends the last lines within its interval
                if ended or (stop is not None and stop.is_set()):
                    over.set()
                    _interrupt(response)

        try:
            with self._dash.stream("GET", "/api/v0/logs/stream", params=params, timeout=httpx.Timeout(
                    10.0, read=None)) as response:
                if response.status_code >= 400:
                    raise ClusterError(f"cluster '{self.name}' cannot stream the log of {submission_id} "
                                       f"(HTTP {response.status_code})", fix="its whole log is read instead")
                watcher = threading.Thread(target=watch, args=(response,), daemon=True,
                                           name=f"log-end-{submission_id[-8:]}")
                watcher.start()
                try:
                    for text in response.iter_text():
                        if skip:
                            cut = min(skip, len(text))
                            text, skip = text[cut:], skip - cut
                        if text:
                            yield text
                except (httpx.StreamError, httpx.TransportError, RuntimeError):
                    if not over.is_set():
                        raise ClusterError(f"cluster '{self.name}' dropped the log stream of {submission_id}",
                                           fix="follow the logs again") from None
        except httpx.TransportError as exc:
            raise ClusterError(f"cluster '{self.name}' at {self.url} is unreachable for the log stream "
                               f"({type(exc).__name__})", fix="check that it runs (`trainyard status`)") from None
        finally:
            over.set()

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

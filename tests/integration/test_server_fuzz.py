"""The real server process (`python -m trainyard.api`) under hostile and unreliable HTTP.

- A submission storm through the SDK, behind a TCP proxy that loses answers: every logical
  submission exists exactly once.
- schemathesis against the live OpenAPI, with the bearer token: 0 server errors and 0
  answers that break their declared schema, over every operation.

The default cluster is the session's real Ray head (so the serving routes get real Ray
answers), but the controller ticks only at startup (a poll interval of an hour): fuzzed jobs
queue and are never dispatched. There is no MLflow. Cluster registration is confined to
127.0.0.1 (TRAINYARD_CLUSTER_HOSTS), so no fuzzed request makes the server call out of the
machine.
"""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from trainyard.local.processes import free_port, start_process, stop_process
from trainyard.sdk import Client

pytestmark = pytest.mark.integration


class BareServer:
    """A server process with its own home, the Ray head as its only cluster, no MLflow, no dispatch."""

    def __init__(self, root: Path, ray_head):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.token = "fuzz-admin-token-" + os.urandom(6).hex()
        (self.home / "admin.token").write_text(self.token + "\n")
        (self.home / "ray.token").write_text(ray_head.token + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "TRAINYARD_HOME": str(self.home),
            "TRAINYARD_ADMIN_TOKEN_FILE": str(self.home / "admin.token"),
            "TRAINYARD_RAY_DASHBOARD_URL": ray_head.dashboard_url,
            "TRAINYARD_RAY_TOKEN_FILE": str(self.home / "ray.token"),
            "TRAINYARD_MLFLOW_URI": "",
            "MLFLOW_TRACKING_URI": "",
            "TRAINYARD_POLL_INTERVAL_S": "3600",  # no dispatch: fuzzed jobs must not run
            "TRAINYARD_CLUSTER_HOSTS": "127.0.0.1",
            "TRAINYARD_SERVE_HOST": "127.0.0.1",
        }
        self.pid: int | None = None

    def start(self) -> None:
        proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1",
                                        "--port", str(self.port), "--log-level", "warning"],
                             url=self.url, health_url=f"{self.url}/healthz",
                             log_file=self.root / "server.log", env=self.env, timeout=60)
        self.pid = proc.pid

    def stop(self) -> None:
        if self.pid:
            stop_process(self.pid)
            self.pid = None

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def bare_server(test_root, ray_head):
    srv = BareServer(test_root / "bare-server", ray_head)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- lossy proxy


class LossyProxy:
    """A TCP proxy that, for a share of connections, forwards the request and then cuts the
    client off: either as the answer starts (the server has done the work) or a moment after
    the request went through (the server may still be working when the retry arrives)."""

    def __init__(self, upstream_port: int, *, drop_share: float, seed: int = 7):
        self.upstream_port = upstream_port
        self.drop_share = drop_share
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.dropped = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                mode = None
                if self.rng.random() < self.drop_share:
                    mode = self.rng.choice(["on_answer", "after_request"])
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str | None) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        cut = threading.Event()

        def cut_client():
            if not cut.is_set():
                cut.set()
                with self.lock:
                    self.dropped += 1
                try:
                    client.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                client.close()

        def upstream_to_client():
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    if mode == "on_answer" and not cut.is_set():
                        cut_client()
                    if cut.is_set():
                        continue  # drain: the server finishes as if the client were there
                    client.sendall(data)
            except OSError:
                pass
            finally:
                upstream.close()
                if not cut.is_set():
                    try:
                        client.close()
                    except OSError:
                        pass

        threading.Thread(target=upstream_to_client, daemon=True).start()
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                if mode == "after_request" and not cut.is_set():
                    threading.Timer(0.02, cut_client).start()
        except OSError:
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def test_a_submission_storm_with_lost_answers_creates_each_job_once(bare_server):
    proxy = LossyProxy(bare_server.port, drop_share=0.35)
    n = 40
    names = [f"storm-{i:03d}-{os.urandom(2).hex()}" for i in range(n)]
    errors: list[str] = []

    def submit(name: str) -> str:
        # one client per worker thread; each submission is one logical request (one key)
        with Client(url=f"http://127.0.0.1:{proxy.port}", token=bare_server.token, timeout=20,
                    retries=8, retry_budget_s=60) as client:
            spec = {"name": name, "workload": "cnn", "resources": {"workers": 1}, "training": {"max_steps": 1}}
            try:
                return client.submit_job(spec)["id"]
            except Exception as exc:  # noqa: BLE001  (counted: the assertion below names them)
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                return ""

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(submit, names))
    finally:
        proxy.close()
    assert not errors, errors[:5]
    assert proxy.dropped >= 5, f"the proxy lost only {proxy.dropped} answers: the test proves nothing"
    with Client(url=bare_server.url, token=bare_server.token) as direct:
        jobs = direct.list_jobs(limit=1000)
    stored = [j for j in jobs if j["name"] in set(names)]
    by_name: dict[str, list[str]] = {}
    for job in stored:
        by_name.setdefault(job["name"], []).append(job["id"])
    twice = {k: v for k, v in by_name.items() if len(v) != 1}
    assert not twice, f"submitted more than once: {twice}"
    assert sorted(by_name) == sorted(names)
    # the id each client got back is the one stored
    assert sorted(ids) == sorted(v[0] for v in by_name.values())
    print(f"\nstorm: {n} submissions, {proxy.connections} connections, {proxy.dropped} answers lost, "
          f"{len(stored)} jobs stored, 0 duplicates")


# ----------------------------------------------------------------------------- fuzzing

# One worker: with the seed, the same cases in the same order every run (with two, the
# coverage phase once failed inside schemathesis itself, never on a server answer).
# generated per operation by the fuzzing phase; the coverage phase adds its own boundary cases
# (huge ints, bad patterns, wrong types: about 45 per operation here). Raise it locally with
# TRAINYARD_FUZZ_EXAMPLES=60.
FUZZ_EXAMPLES = int(os.environ.get("TRAINYARD_FUZZ_EXAMPLES", "30"))
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(bare_server, tmp_path):
    schema_url = f"{bare_server.url}/openapi.json"
    operations = sum(len(methods) for methods in httpx.get(schema_url, timeout=10).json()["paths"].values())
    report = Path(os.environ.get("TRAINYARD_FUZZ_REPORT") or tmp_path / "report.ndjson")
    # A followed log (`follow=true`) of a job that exists streams until the job ends, by design,
    # and the storm's jobs never end here: each such case would hold its whole request timeout
    # (15 cases x 20 s was 300 of this test's 320 s). The stream's status and headers come at
    # once; 2 s is plenty for them. The timeout is set in a config file because an operation's
    # own setting there loses to any CLI option.
    config = tmp_path / "schemathesis.toml"
    config.write_text('request-timeout = 20.0\n\n[[operations]]\n'
                      'include-name = "GET /v1/jobs/{job_id}/logs"\nrequest-timeout = 2.0\n')
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", schema_url,
           "--checks", CHECKS, "--phases", "examples,coverage,fuzzing",
           "--max-examples", str(FUZZ_EXAMPLES), "--seed", "20261205", "--workers", "1",
           "--suppress-health-check", "all", "--no-shrink",
           "--header", f"Authorization: Bearer {bare_server.token}",
           "--report", "ndjson", "--report-ndjson-path", str(report), "--output-sanitize", "true"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    figures = _figures(report)
    figures["operations_in_schema"] = operations
    print(f"\nschemathesis: {json.dumps(figures)} in {elapsed:.0f}s")
    tail = out[-6000:]
    assert figures["operations_tested"] == operations, tail
    assert figures["server_errors"] == 0 and figures["schema_violations"] == 0, tail
    assert figures["failures"] == 0 and proc.returncode == 0, tail
    assert figures["examples"] >= operations * 10, tail
    assert "Traceback" not in bare_server.log()


def _figures(report: Path) -> dict:
    """Count operations, generated cases and failures (by check) from the NDJSON events."""
    operations: set[str] = set()
    examples = 0
    failures: dict[str, int] = {}
    for line in report.read_text().splitlines():
        event = json.loads(line)
        (kind, payload), = event.items() if len(event) == 1 else (("", event),)
        if kind != "ScenarioFinished":
            continue
        recorder = payload.get("recorder") or {}
        label = recorder.get("label") or payload.get("label")
        if label:
            operations.add(label)
        examples += len(recorder.get("cases") or {})
        for checks in (recorder.get("checks") or {}).values():
            for check in checks:
                if check.get("status") == "FAILURE" or check.get("status") == "failure":
                    failures[check["name"]] = failures.get(check["name"], 0) + 1
    return {"operations_tested": len(operations), "examples": examples, "failures": sum(failures.values()),
            "server_errors": failures.get("not_a_server_error", 0),
            "schema_violations": sum(failures.get(k, 0) for k in ("response_schema_conformance",
                                                                  "status_code_conformance",
                                                                  "content_type_conformance")),
            "failures_by_check": failures}

"""The real server process (`python -m trainyard.api`) against a real Ray head.

The runner is a stand-in here (a script that speaks the TRAINYARD_PROGRESS/RESULT protocol);
real training is the runner's own integration test. Everything else is real: uvicorn, the
SQLite store, the controller loop, Ray's Jobs REST API with token auth.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest

from trainyard import errors as E
from trainyard.local.processes import free_port, start_process, stop_process
from trainyard.sdk import Client

pytestmark = pytest.mark.integration

FAKE_RUNNER = r'''
import json, os, sys, time
job_id = sys.argv[1]
spec = json.loads(os.environ["TRAINYARD_SPEC"])
with open(os.environ["FAKE_RUNS_LOG"], "a") as fh:  # one line per driver start
    fh.write(job_id + "\n")
need = ["TRAINYARD_SPEC", "TRAINYARD_JOB_ID", "TRAINYARD_STORAGE", "MLFLOW_TRACKING_URI", "TRAINYARD_USER",
        "TRAINYARD_PROJECT"]
print("ENV_OK" if all(os.environ.get(k) for k in need) and os.environ["TRAINYARD_JOB_ID"] == job_id
      else "ENV_MISSING", flush=True)
if os.path.exists("marker.txt"):  # shipped in the job's working_dir (Ray makes it the cwd)
    print("MARKER " + open("marker.txt").read().strip(), flush=True)
steps = spec["training"].get("max_steps") or 3
sleep_s = float(spec["hyperparameters"].get("sleep_s", 0))
# an elastic job's group grows at once to what the scheduler granted (Ray Train would, given room)
grant = os.environ.get("TRAINYARD_WORKERS_MAX")
for step in range(1, steps + 1):
    time.sleep(sleep_s / steps)
    print("TRAINYARD_PROGRESS " + json.dumps({"step": step, "total_steps": steps, "epoch": 0,
                                             "metrics": {"loss": 1.0 / step},
                                             **({"workers": int(grant)} if grant else {})}), flush=True)
if spec["hyperparameters"].get("fail"):
    print('TRAINYARD_ERROR {"error": "runtime", "message": "boom on purpose"}', flush=True)
    sys.exit(3)
print("TRAINYARD_RESULT " + json.dumps({"metrics": {"accuracy": 0.75, "loss": 0.1},
      "mlflow_run_id": "run-" + job_id, "mlflow_experiment_id": "1", "model_name": spec["name"],
      "model_version": "1", "checkpoint": os.environ["TRAINYARD_STORAGE"] + "/" + job_id}), flush=True)
'''


class Server:
    def __init__(self, root: Path, ray_head):
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "ray.token").write_text(ray_head.token + "\n")
        self.token = "integration-admin-token-" + os.urandom(4).hex()
        (self.home / "admin.token").write_text(self.token + "\n")
        runner = root / "fake_runner.py"
        runner.write_text(FAKE_RUNNER)
        self.runs_log = root / "runs.log"
        self.runs_log.touch()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "TRAINYARD_HOME": str(self.home),
            "TRAINYARD_RAY_DASHBOARD_URL": ray_head.dashboard_url,
            "TRAINYARD_RAY_TOKEN_FILE": str(self.home / "ray.token"),
            "TRAINYARD_ADMIN_TOKEN_FILE": str(self.home / "admin.token"),
            "TRAINYARD_MLFLOW_URI": "http://127.0.0.1:1",  # not contacted by the stand-in runner
            "TRAINYARD_POLL_INTERVAL_S": "0.3",
            "TRAINYARD_RUNNER_ENTRYPOINT": f"{sys.executable} {runner} {{job_id}}",
        }
        self.pid: int | None = None

    def start(self, **extra_env):
        proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1",
                                        "--port", str(self.port)],
                             url=self.url, health_url=f"{self.url}/healthz",
                             log_file=self.root / "server.log", env={**self.env, **extra_env}, timeout=60)
        self.pid = proc.pid

    def wait_exit(self, timeout=60.0):
        """Wait for the server to die on its own (a failpoint)."""
        wait_for(lambda: not _alive(self.pid), timeout=timeout, what="the server to crash")
        stop_process(self.pid, timeout=1)
        self.pid = None

    def kill(self):
        """SIGKILL: no shutdown hook runs, as in a crash."""
        os.killpg(self.pid, signal.SIGKILL)
        stop_process(self.pid, timeout=5)
        self.pid = None

    def stop(self):
        if self.pid:
            stop_process(self.pid)
            self.pid = None

    def client(self) -> Client:
        return Client(url=self.url, token=self.token)

    def runs(self, job_id: str) -> int:
        return self.runs_log.read_text().split().count(job_id)


@pytest.fixture(scope="module")
def server(test_root, ray_head):
    srv = Server(test_root / "server", ray_head)
    os.environ["FAKE_RUNS_LOG"] = str(srv.runs_log)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        os.environ.pop("FAKE_RUNS_LOG", None)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def ray_jobs_for(ray_head, job_id: str) -> list[dict]:
    listed = httpx.get(f"{ray_head.dashboard_url}/api/jobs/", headers=ray_head.headers(), timeout=10).json()
    return [j for j in listed if (j.get("metadata") or {}).get("trainyard_job_id") == job_id]


def ray_job(ray_head, submission_id: str) -> dict:
    resp = httpx.get(f"{ray_head.dashboard_url}/api/jobs/{submission_id}", headers=ray_head.headers(), timeout=10)
    resp.raise_for_status()
    return resp.json()


def wait_for(predicate, *, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"gave up waiting for {what}")


def job_spec(name, **hyper):
    # the runner runs under Ray's environment, not the server's: what it needs goes in spec.env
    return {"name": name, "workload": "cnn", "resources": {"workers": 1},
            "training": {"max_steps": 3}, "hyperparameters": hyper,
            "env": {"FAKE_RUNS_LOG": os.environ["FAKE_RUNS_LOG"]}}


def test_auth(server):
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/v1/jobs").status_code == 401
    resp = httpx.get(f"{server.url}/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and server.token not in resp.text
    with pytest.raises(E.AuthError):
        Client(url=server.url, token="wrong").status()


def test_status_shows_the_local_cluster(server):
    client = server.client()
    status = wait_for(lambda: (s := client.status())["clusters"] and s["clusters"][0]["nodes"] and s,
                      what="cluster resources")
    local = status["clusters"][0]
    assert local["name"] == "local" and local["reachable"] is True
    assert local["resources_total"]["CPU"] == 2.0


def test_tiny_job_succeeds_with_result_metrics(server, ray_head):
    client = server.client()
    job = client.submit_job(job_spec("tiny"))
    final = client.wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "SUCCEEDED", final["message"]
    assert final["metrics"] == {"accuracy": 0.75, "loss": 0.1}
    assert final["mlflow_run_id"] == f"run-{job['id']}"
    assert final["result"]["checkpoint"].endswith(job["id"])
    logs = client.job_logs(job["id"])
    assert "ENV_OK" in logs and "TRAINYARD_PROGRESS" in logs
    ray = ray_job(ray_head, final["submission_id"])
    assert ray["status"] == "SUCCEEDED"
    # whose job, in which project: the admin token's user, the spec's (default) project
    assert (ray["metadata"]["trainyard_user"], ray["metadata"]["trainyard_project"]) == ("admin", "default")
    tail = client.job_logs(job["id"], offset=len(logs) - 10)
    assert tail == logs[-10:]
    # what the attempt held is in the budgets' ledger: CPU-hours used by project default
    used = client.get_quota("default")["usage"]["cpu"]["used_hours"]
    assert 0 < used < 1


def test_working_dir_is_shipped_to_the_cluster(server, tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "marker.txt").write_text("shipped-" + os.urandom(3).hex())
    client = server.client()
    job = client.submit_job(job_spec("shipped"), working_dir=folder)
    final = client.wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "SUCCEEDED", final["message"]
    assert "MARKER " + (folder / "marker.txt").read_text() in client.job_logs(job["id"])


def test_failing_job_reports_the_runner_error(server):
    client = server.client()
    job = client.submit_job(job_spec("boom", fail=True))
    final = client.wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "FAILED" and "boom on purpose" in final["message"]


def test_too_big_job_is_rejected_without_a_trace(server):
    client = server.client()
    before = len(client.list_jobs(limit=1000))
    spec = job_spec("huge")
    spec["resources"]["workers"] = 8
    with pytest.raises(E.CapacityError) as info:
        client.submit_job(spec)
    assert "largest cluster, 'local', has 2" in str(info.value)
    assert len(client.list_jobs(limit=1000)) == before


def test_cancel_running_job_stops_the_ray_job(server, ray_head):
    client = server.client()
    job = client.submit_job(job_spec("long", sleep_s=120))
    wait_for(lambda: client.get_job(job["id"])["state"] == "RUNNING", what="RUNNING")
    progress = wait_for(lambda: client.get_job(job["id"])["progress"], what="progress")
    assert progress["total_steps"] == 3
    client.cancel_job(job["id"])
    final = client.wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "CANCELLED"
    assert ray_job(ray_head, final["submission_id"])["status"] == "STOPPED"


def test_server_killed_mid_job_tracks_it_to_completion_without_resubmitting(server, ray_head):
    client = server.client()
    job = client.submit_job(job_spec("survivor", sleep_s=8))
    wait_for(lambda: client.get_job(job["id"])["state"] == "RUNNING", what="RUNNING")
    server.kill()
    with pytest.raises(E.ClusterError, match="unreachable"):
        client.get_job(job["id"])
    server.start()
    final = server.client().wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "SUCCEEDED" and final["attempt"] == 1
    assert final["metrics"]["accuracy"] == 0.75
    assert server.runs(job["id"]) == 1
    assert len(ray_jobs_for(ray_head, job["id"])) == 1


def test_server_killed_while_job_pending_picks_it_up(server):
    client = server.client()
    server.kill()
    server.start()
    job = server.client().submit_job(job_spec("after-restart"))
    final = server.client().wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "SUCCEEDED" and server.runs(job["id"]) == 1
    assert client  # the old client object still points at the same URL


@pytest.mark.parametrize("failpoint", ["after_write_ahead", "after_submit"])
def test_crash_around_the_ray_call_runs_the_job_exactly_once(server, ray_head, failpoint):
    """The server dies right after recording the dispatch (before Ray heard of it), or right
    after Ray accepted it (before the store knew): either way, one driver run, one Ray job."""
    server.stop()
    server.start(TRAINYARD_FAILPOINT=failpoint)
    job = server.client().submit_job(job_spec(f"crash-{failpoint.replace('_', '-')}"))
    server.wait_exit()
    server.start()
    final = server.client().wait_job(job["id"], timeout=120, poll=0.3)
    assert final["state"] == "SUCCEEDED", final["message"]
    assert final["attempt"] == 1
    assert server.runs(job["id"]) == 1
    assert len(ray_jobs_for(ray_head, job["id"])) == 1

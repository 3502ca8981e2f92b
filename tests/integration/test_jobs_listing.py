"""Job lists, the queue and followed logs through a real server process.

Listing and the queue run on SQLite and on PostgreSQL (where its server tools are installed),
with no Ray: the default cluster's address refuses connections, so every job stays queued
with a reason. Following logs runs a real job (the stand-in runner of test_server.py) on the
session's Ray head and reads it through Ray's log tail.
"""
from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from test_route_roles import MatrixServer, _ok
from test_server import Server, wait_for
from trainyard.sdk import Client

pytestmark = pytest.mark.integration


def _spec(name: str, project: str) -> dict:
    return {"name": name, "workload": "cnn", "project": project, "resources": {"workers": 1},
            "training": {"max_steps": 1}}


def run_listing(srv: MatrixServer) -> None:
    admin = Client(url=srv.url, token=srv.admin_token)
    http = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=30)
    with http:
        for project in ("alpha", "beta"):
            admin.create_project(project)
        for user, role in (("ann", "member"), ("vic", "viewer")):
            admin.create_user(user)
            admin.set_member("alpha", user, role=role)
        ann = Client(url=srv.url, token=admin.create_token("t", user="ann")["token"])
        vic = Client(url=srv.url, token=admin.create_token("t", user="vic")["token"])
        before = [admin.submit_job(_spec(f"a{i}", "alpha"))["id"] for i in range(8)]
        before += [admin.submit_job(_spec(f"b{i}", "beta"))["id"] for i in range(8)]
        before += [ann.submit_job(_spec(f"n{i}", "alpha"))["id"] for i in range(4)]
        admin.cancel_job(before[0])
        admin.cancel_job(before[8])

        # totals under filters; a viewer counts only what it can read
        assert admin.list_jobs(limit=1).total == 20
        assert admin.list_jobs(project="alpha").total == 12
        assert admin.list_jobs(user="ann").total == 4 and {j["owner"] for j in admin.list_jobs(user="ann")} == {"ann"}
        assert admin.list_jobs(state="CANCELLED").total == 2
        assert admin.list_jobs(state=["pending", "cancelled"]).total == 20
        assert _ok(http.get("/v1/jobs", params={"state": "PENDING,RUNNING"}))["total"] == 18
        assert vic.list_jobs().total == 12 and {j["project"] for j in vic.iter_jobs()} == {"alpha"}
        assert vic.list_jobs(project="beta").total == 0
        bad = http.get("/v1/jobs", params={"cursor": "bm9wZQ"})
        assert bad.status_code == 422 and bad.json()["field"] == "cursor"

        # page through everything while new jobs arrive: each old job once, none skipped
        seen: list[str] = []
        arrived: list[str] = []
        cursor = None
        while True:
            page = admin.list_jobs(limit=3, cursor=cursor)
            seen += [j["id"] for j in page]
            arrived += [admin.submit_job(_spec(f"late{len(arrived) + i}", "beta"))["id"] for i in range(2)]
            cursor = page.next_cursor
            if not cursor:
                break
        assert len(seen) == len(set(seen)) and set(before) <= set(seen) and not set(arrived) & set(seen)
        assert admin.list_jobs(limit=1).total == 20 + len(arrived)

        # the queue: every queued job, with a reason once the controller looked, per cluster
        queued = 18 + len(arrived)

        def reasons():
            queue = admin.get_queue()
            jobs = [j for group in queue["clusters"] for j in group["jobs"]]
            return queue if queue["total"] == queued and all(j["reason"] for j in jobs) else None

        queue = wait_for(reasons, timeout=30, what="why-pending reasons on every queued job")
        jobs = [j for group in queue["clusters"] for j in group["jobs"]]
        assert {j["id"] for j in jobs} == (set(before) | set(arrived)) - {before[0], before[8]}
        # the cluster is unknown, so the scheduler gave no queue positions; the project's order is certain
        alpha = sorted((j for j in jobs if j["project"] == "alpha"), key=lambda j: j["position_in_project"])
        assert [j["position_in_project"] for j in alpha] == list(range(1, 12))
        assert [j["created_at"] for j in alpha] == sorted(j["created_at"] for j in alpha)
        by_project = {p["project"]: p for p in queue["projects"]}
        assert by_project["alpha"]["queued"] == 11 and by_project["beta"]["queued"] == 7 + len(arrived)
        mine = vic.get_queue()
        assert mine["total"] == 11 and [p["project"] for p in mine["projects"]] == ["alpha"]
    assert "Traceback" not in srv.log()


def test_listing_and_queue_on_sqlite(test_root):
    with MatrixServer(test_root / "listing-sqlite", None) as srv:
        run_listing(srv)


def test_listing_and_queue_on_postgres(test_root, request):
    pg_url = request.getfixturevalue("pg_url")
    with MatrixServer(test_root / "listing-postgres", pg_url) as srv:
        run_listing(srv)


from test_server_postgres import pg_url  # noqa: E402,F401


# ----------------------------------------------------------------------------- following logs


def test_follow_logs_of_a_real_ray_job(test_root, ray_head):
    srv = Server(test_root / "follow-logs", ray_head)
    srv.start()
    try:
        client = srv.client()
        spec = {"name": "chatty", "workload": "cnn", "resources": {"workers": 1}, "training": {"max_steps": 6},
                "hyperparameters": {"sleep_s": 8}, "env": {"FAKE_RUNS_LOG": str(srv.runs_log)}}
        job = client.submit_job(spec)
        lines: list[str] = []
        got: dict = {}

        def follow():  # from before the job runs: the stream waits for its dispatch
            try:
                for line in client.stream_logs(job["id"]):
                    lines.append((time.monotonic(), line))
                got["state"] = client.last_stream_state
            except Exception as exc:  # reported below, not swallowed
                got["error"] = exc

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        # progress comes from the followed log while the job runs
        running = wait_for(lambda: (j := client.get_job(job["id"])) and (
            j["progress"] or j["state"] not in ("PENDING", "RUNNING")) and j, timeout=90,
            what="progress while the job runs")
        reader.join(120)
        assert not reader.is_alive() and "error" not in got, (got, lines)
        assert running["state"] == "RUNNING" and running["progress"]["total_steps"] == 6, (running, lines)
        assert got["state"] == "SUCCEEDED"
        texts = [t for _, t in lines]
        steps = [t for t in texts if t.startswith("TRAINYARD_PROGRESS")]
        assert "ENV_OK" in texts and len(steps) == 6 and texts[-1].startswith("TRAINYARD_RESULT")
        # lines came as they were written, not all at once at the end
        assert lines[-1][0] - lines[0][0] > 1.0
        # what the stream showed is the job's whole log, in order
        assert client.job_logs(job["id"]).splitlines()[-len(texts):] == texts
        # and a second follower of the ended job gets the last lines, then the end
        assert list(client.stream_logs(job["id"], tail=1)) == texts[-1:] and client.last_stream_state == "SUCCEEDED"
        assert "Traceback" not in (srv.root / "server.log").read_text(errors="replace")
    finally:
        srv.stop()
        os.environ.pop("FAKE_RUNS_LOG", None)

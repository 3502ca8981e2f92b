"""Quotas and budgets through a real server process: set over HTTP, enforced by its controller.

No Ray runs here: cluster `fleet` is registered with an address that refuses connections and
its node resources are recorded in the store (as a refresh would), so the scheduler knows the
fleet's capacity while the cluster itself reads as unreachable. Budget and quota checks come
before the cluster's health in the plan (scheduler/plan.py), so a job held back by them says
so, and a job of another project waits only for the cluster. Runs on SQLite, and on
PostgreSQL where its server tools are installed.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from test_route_roles import DEAD, MatrixServer, _ok

pytestmark = pytest.mark.integration

NODES = {"nodes": [{"id": f"n{i}", "total": {"CPU": 8.0, "GPU": 2.0}, "free": {"CPU": 8.0, "GPU": 2.0}}
                   for i in range(2)]}


def _spec(name: str, project: str, *, workers: int = 1, gpus: float = 0) -> dict:
    res = {"workers": workers, "cpus_per_worker": 1, "cluster": "fleet"}
    if gpus:
        res["gpus_per_worker"] = gpus
    return {"name": name, "workload": "cnn", "project": project, "resources": res, "training": {"max_steps": 1}}


def _reason(http: httpx.Client, job_id: str, *, until, timeout: float = 45.0) -> dict:
    """The job's why-pending reason once `until(reason)` holds (the controller ticks every second)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        job = _ok(http.get(f"/v1/jobs/{job_id}"))
        seen = (job.get("pending") or {}).get("reason")
        if seen and until(seen):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"job {job_id}: reason {seen!r} after {timeout}s")


def run_quotas(srv: MatrixServer) -> None:
    from trainyard.store import Database
    from trainyard.store import clusters as clusters_repo
    from trainyard.store.models import UsageRow

    http = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=30)
    with http:
        for name in ("capped", "spent", "free"):
            _ok(http.post("/v1/projects", json={"name": name}), 201)
        _ok(http.post("/v1/clusters", json={"name": "fleet", "address": DEAD.replace(":1", ":4"), "check": False}),
            201)
        now = datetime.now(timezone.utc)
        db = Database(srv.db_url)
        try:
            with db.session() as s:
                clusters_repo.record_resources(s, "fleet", NODES)
                # 2 CPU-hours that a job of `spent` held an hour ago: over its 1 CPU-hour budget
                s.add(UsageRow(job_id="spent-old", attempt=1, project="spent", started_at=now - timedelta(hours=2),
                               ended_at=now - timedelta(hours=1), resources={"CPU": 2.0}))
        finally:
            db.dispose()
        _ok(http.put("/v1/projects/capped/quota", json={"nominal": {"GPU": 1}, "borrowing_limit": {"GPU": 0}}))
        shown = _ok(http.put("/v1/projects/spent/quota", json={"budget": {"cpu_hours": 1, "window_days": 1}}))
        assert shown["usage"]["cpu"]["used_hours"] == pytest.approx(2.0, abs=0.01)
        assert shown["usage"]["cpu"]["remaining_hours"] == 0
        assert shown["usage"]["cpu"]["burn_per_day"] == pytest.approx(2.0, abs=0.01)
        # refused, and nothing changes
        bad = http.put("/v1/projects/capped/quota", json={"nominal": {"TPU": 1}})
        assert bad.status_code == 422 and bad.json()["field"] == "nominal.TPU"
        assert _ok(http.get("/v1/projects/capped"))["quota"]["nominal"] == {"GPU": 1.0}

        big = _ok(http.post("/v1/jobs", json={"spec": _spec("big", "capped", workers=2, gpus=1)}), 201)["id"]
        small = _ok(http.post("/v1/jobs", json={"spec": _spec("small", "spent")}), 201)["id"]
        other = _ok(http.post("/v1/jobs", json={"spec": _spec("other", "free", workers=2, gpus=1)}), 201)["id"]
        quota = _reason(http, big, until=lambda r: r["code"] == "quota")
        assert quota["resource"] == "GPU" and "capped" in quota["message"]
        budget = _reason(http, small, until=lambda r: r["code"] == "budget")
        assert budget["resource"] == "CPU" and "1 CPU-hours" in budget["message"]
        # the other project's job, as large as the capped one, waits only for the unreachable cluster
        assert _reason(http, other, until=lambda r: True)["code"] not in ("quota", "budget")
        assert _reason(http, other, until=lambda r: r["code"] == "cluster_unhealthy")

        # raising the quota is seen at once (the controller reads projects again when one changes)
        _ok(http.put("/v1/projects/capped/quota", json={"nominal": {"GPU": 2}}))
        assert _reason(http, big, until=lambda r: r["code"] != "quota")["code"] == "cluster_unhealthy"
        shown = _ok(http.get("/v1/projects/capped"))["quota"]
        assert shown["borrowing_limit"] is None and shown["budget"] is None
    assert "Traceback" not in srv.log()


def test_quotas_and_budgets_on_sqlite(test_root):
    with MatrixServer(test_root / "quotas-sqlite", None) as srv:
        run_quotas(srv)


def test_quotas_and_budgets_on_postgres(test_root, request):
    pg_url = request.getfixturevalue("pg_url")
    with MatrixServer(test_root / "quotas-postgres", pg_url) as srv:
        run_quotas(srv)


from test_server_postgres import pg_url  # noqa: E402,F401

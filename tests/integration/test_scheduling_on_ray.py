"""The scheduler's rules through a real server on a real Ray head (2 CPUs): quota waits, budget
exhaustion from time really held, backfill by declared max_runtime_s, an elastic job granted its
quota's room and counted at its live size, and an unreachable cluster drained. The runner is test_server.py's stand-in (it sleeps `sleep_s`); Ray, the Jobs API, the
controller and the store are real. Jobs hold what they ask for in the scheduler's accounting,
so 1-CPU jobs fill the 2-CPU head two at a time.
"""
from __future__ import annotations

import os

import httpx
import pytest

from test_server import Server, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sched(test_root, ray_head):
    srv = Server(test_root / "scheduling", ray_head)
    os.environ["FAKE_RUNS_LOG"] = str(srv.runs_log)
    srv.start()
    http = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}, timeout=30)
    try:
        wait_for(lambda: (_ok(http.get("/v1/status"))["clusters"] or [{}])[0].get("nodes"), what="cluster resources")
        yield http
    finally:
        for job in _ok(http.get("/v1/jobs", params={"limit": 100}))["jobs"]:
            if job["state"] in ("PENDING", "RUNNING"):
                http.post(f"/v1/jobs/{job['id']}/cancel")
        http.close()
        srv.stop()
        os.environ.pop("FAKE_RUNS_LOG", None)


def _ok(resp: httpx.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json()


def _submit(http: httpx.Client, name: str, *, project: str = "default", sleep_s: float = 0.0,
            workers: int | dict = 1, **top) -> str:
    training = {"max_steps": 3, **({"elastic_batch": "scale"} if isinstance(workers, dict) else {})}
    spec = {"name": name, "workload": "cnn", "project": project, "resources": {"workers": workers},
            "training": training, "hyperparameters": {"sleep_s": sleep_s},
            "env": {"FAKE_RUNS_LOG": os.environ["FAKE_RUNS_LOG"]}, **top}
    return _ok(http.post("/v1/jobs", json={"spec": spec}), 201)["id"]


def _job(http: httpx.Client, job_id: str) -> dict:
    return _ok(http.get(f"/v1/jobs/{job_id}"))


def _state(http, job_id, state, timeout=90.0) -> dict:
    return wait_for(lambda: (j := _job(http, job_id))["state"] == state and j, timeout=timeout,
                    what=f"{job_id} to be {state}")


def _reason(http, job_id) -> str | None:
    return ((_job(http, job_id).get("pending") or {}).get("reason") or {}).get("code")


def test_quota_and_budget_hold_a_project_back_and_no_one_else(sched):
    http = sched
    for name in ("capped", "spent", "free"):
        _ok(http.post("/v1/projects", json={"name": name}), 201)
    _ok(http.put("/v1/projects/capped/quota", json={"nominal": {"CPU": 1}, "borrowing_limit": {"CPU": 0}}))
    # 0.0005 CPU-hours = 1.8 CPU-seconds: one short job spends it
    _ok(http.put("/v1/projects/spent/quota", json={"budget": {"cpu_hours": 0.0005, "window_days": 1}}))

    holder = _submit(http, "holder", project="capped", sleep_s=30)
    _state(http, holder, "RUNNING")
    over = _submit(http, "over", project="capped")
    wait_for(lambda: _reason(http, over) == "quota", what="the quota reason")
    # the free CPU serves the other projects while `over` waits
    free = _submit(http, "free-1", project="free")
    assert _state(http, free, "SUCCEEDED")["state"] == "SUCCEEDED"
    first = _submit(http, "spend", project="spent", sleep_s=3)
    _state(http, first, "SUCCEEDED")
    usage = _ok(http.get("/v1/projects/spent"))["quota"]["usage"]["cpu"]
    assert usage["used_hours"] > 0.0005 and usage["remaining_hours"] == 0, usage
    broke = _submit(http, "broke", project="spent")
    wait_for(lambda: _reason(http, broke) == "budget", what="the budget reason")
    assert _reason(http, over) == "quota" and _job(http, holder)["state"] == "RUNNING"

    # a raised quota lets `over` start at once, beside the holder
    _ok(http.put("/v1/projects/capped/quota", json={"nominal": {"CPU": 2}, "borrowing_limit": {"CPU": 0}}))
    _state(http, over, "SUCCEEDED")
    assert _job(http, broke)["state"] == "PENDING" and _reason(http, broke) == "budget"
    for job_id in (holder, broke):
        _ok(http.post(f"/v1/jobs/{job_id}/cancel"))


def test_backfill_starts_only_what_ends_before_the_head_and_overruns_are_stopped(sched):
    http = sched
    wait_for(lambda: not [j for j in _ok(http.get("/v1/jobs", params={"limit": 100}))["jobs"]
                          if j["state"] in ("PENDING", "RUNNING")], what="an idle cluster")
    long = _submit(http, "long", sleep_s=60, max_runtime_s=120)
    _state(http, long, "RUNNING")
    head = _submit(http, "head", workers=2)  # needs both CPUs: starts when `long` ends
    short = _submit(http, "short", max_runtime_s=30)
    unknown = _submit(http, "unknown")
    assert _state(http, short, "SUCCEEDED")["state"] == "SUCCEEDED"
    assert _job(http, head)["state"] == "PENDING" and _job(http, unknown)["state"] == "PENDING"
    assert _reason(http, head) == "capacity"

    # a job that outlives its max_runtime_s is stopped: the promise backfill trusted
    for job_id in (head, unknown, long):
        _ok(http.post(f"/v1/jobs/{job_id}/cancel"))
    liar = _submit(http, "liar", sleep_s=60, max_runtime_s=2)
    ended = _state(http, liar, "CANCELLED", timeout=60)
    assert ended["message"].startswith("cancelled: ran past its max_runtime_s (2 s"), ended["message"]


def test_an_elastic_job_grows_to_its_grant_and_is_counted_at_its_live_size(sched):
    http = sched
    wait_for(lambda: not [j for j in _ok(http.get("/v1/jobs", params={"limit": 100}))["jobs"]
                          if j["state"] in ("PENDING", "RUNNING")], what="an idle cluster")
    _ok(http.post("/v1/projects", json={"name": "stretchy"}), 201)
    _ok(http.put("/v1/projects/stretchy/quota", json={"nominal": {"CPU": 2}, "borrowing_limit": {"CPU": 0}}))
    # the stand-in runner reports the group at TRAINYARD_WORKERS_MAX, which the dispatcher set to
    # the quota's room (2 of max 4); a stall timeout of 30 s reads progress every 3 s
    grow = _submit(http, "grow", project="stretchy", sleep_s=9, workers={"min": 1, "max": 4},
                   failure={"stall_timeout_s": 30})
    job = wait_for(lambda: (j := _job(http, grow))["workers"] == 2 and j, what="the live size")
    assert job["workers_range"] == {"min": 1, "max": 4, "granted": 2}
    assert "resized: 1 -> 2 workers" in [e["reason"] for e in job["events"]]
    # it counts at its grant of 2 against the quota (the room it may grow into is its share): none is left
    more = _submit(http, "more", project="stretchy")
    wait_for(lambda: _reason(http, more) == "quota", what="the quota reason")
    _state(http, grow, "SUCCEEDED")
    _state(http, more, "SUCCEEDED")


def test_an_unreachable_cluster_is_drained_and_pinned_jobs_say_why(sched, test_root):
    from trainyard.store import Database
    from trainyard.store import clusters as clusters_repo

    http, sched_home = sched, test_root / "scheduling" / "home"
    _ok(http.post("/v1/clusters", json={"name": "gone", "address": "http://127.0.0.1:1", "check": False}), 201)
    # what it had when it last answered: room for everything, so only its health keeps jobs off it
    db = Database(f"sqlite:///{sched_home / 'trainyard.db'}")
    try:
        with db.session() as s:
            clusters_repo.record_resources(s, "gone", {"nodes": [{"id": "g1", "total": {"CPU": 16.0},
                                                                  "free": {"CPU": 16.0}}]})
    finally:
        db.dispose()
    spec = {"name": "pinned", "workload": "cnn", "resources": {"workers": 1, "cluster": "gone"},
            "training": {"max_steps": 3}, "env": {"FAKE_RUNS_LOG": os.environ["FAKE_RUNS_LOG"]}}
    pinned = _ok(http.post("/v1/jobs", json={"spec": spec}), 201)["id"]
    roaming = _submit(http, "roaming")
    done = _state(http, roaming, "SUCCEEDED")
    assert done["cluster"] == "local"
    wait_for(lambda: _reason(http, pinned) == "cluster_unhealthy", what="the unhealthy reason")
    assert "gone" in _job(http, pinned)["pending"]["reason"]["message"]
    _ok(http.post(f"/v1/jobs/{pinned}/cancel"))
    assert http.delete("/v1/clusters/gone").status_code == 204

"""Elastic jobs in the scheduler's accounting: the grant at admission (pure), what a running
elastic job counts as (its live size, within its grant), the resize event, and the same through
the controller with a real SQLite store and API (the Ray dashboard a stand-in: test_api's FakeRay)."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from test_api import TOKEN, FakeRay  # noqa: E402  (tests/unit is on sys.path under pytest)
from trainyard.api.app import create_app
from trainyard.config import Settings
from trainyard.controller import quotas, runtime, views
from trainyard.controller.costs import segment_workers
from trainyard.protocol import PROGRESS, RESULT, format_line
from trainyard.runner import launch
from trainyard.scheduler import ClusterView, Project, Quota, RunningJob, grant_workers, held_workers, plan_tick
from trainyard.scheduler.quotas import QuotaLedger
from trainyard.specs import JobSpec
from trainyard.specs.models import worker_bounds
from trainyard.store import jobs as jobs_repo
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st
from trainyard.store import teams as teams_repo
from trainyard.store.models import JobRow, UsageRow

ELASTIC = {"workers": {"min": 1, "max": 4}, "cpus_per_worker": 1.0}


def _job(workers=ELASTIC["workers"], project="p", **kw):
    return views.queued_job(kw.pop("id", "e"), {"resources": {**ELASTIC, "workers": workers}}, project=project, **kw)


def _ledger(quota: Quota | None, *, capacity=16.0, running=()):
    return QuotaLedger({"p": quota}, {"CPU": capacity}, running)


def _running(workers, project="p", job_id="r"):
    return RunningJob(id=job_id, project=project, cluster="c", workers=workers, per_worker={"CPU": 1.0})


# ----------------------------------------------------------------------------- the grant (pure)


@pytest.mark.parametrize("quota, running, granted", [
    (None, (), 4),  # no quota: max
    (Quota(nominal={"CPU": 3.0}, borrowing_limit={"CPU": 0.0}), (), 3),  # nominal only
    (Quota(nominal={"CPU": 3.0}, borrowing_limit={"CPU": 0.0}), (1,), 2),  # given what the project holds
    (Quota(nominal={"CPU": 2.0}, borrowing_limit={"CPU": 1.0}), (), 3),  # nominal + borrowing limit
    (Quota(nominal={"CPU": 2.0}), (), 4),  # borrowing unlimited, the pool idle
    (Quota(nominal={"GPU": 1.0}), (), 4),  # a quota on what the job does not use
    (Quota(nominal={"CPU": 3.0}, borrowing_limit={"CPU": 0.0}), (3,), None),  # not even min fits
])
def test_the_grant_is_the_most_workers_the_quota_lets_the_job_hold(quota, running, granted):
    ledger = _ledger(quota, running=[_running(w, job_id=f"r{i}") for i, w in enumerate(running)])
    assert grant_workers(_job(), ledger=ledger) == granted


def test_borrowing_stops_at_what_other_projects_guard():
    # 6 CPUs in all; project q guards its nominal 4 (lends none): p may borrow up to the 2 idle
    ledger = QuotaLedger({"p": Quota(nominal={"CPU": 1.0}), "q": Quota(nominal={"CPU": 4.0},
                                                                        lending_limit={"CPU": 0.0})},
                         {"CPU": 6.0})
    assert grant_workers(_job(), ledger=ledger) == 2


def test_a_large_range_is_bisected_to_the_exact_edge():
    ledger = _ledger(Quota(nominal={"CPU": 777.0}, borrowing_limit={"CPU": 0.0}), capacity=1e6)
    assert grant_workers(_job(workers={"min": 1, "max": 100_000}), ledger=ledger) == 777


def test_plan_tick_grants_elastic_jobs_and_does_not_admit_one_whose_min_does_not_fit():
    cluster = ClusterView(name="c", nodes_free=[{"CPU": 16.0}], nodes_total=[{"CPU": 16.0}])
    projects = {"p": Project("p", quota=Quota(nominal={"CPU": 3.0}, borrowing_limit={"CPU": 0.0}))}
    fixed = views.queued_job("f", {"resources": {"workers": 1}}, project="p", seq=0.0)
    elastic = _job(id="e", seq=1.0)
    plan = plan_tick([fixed, elastic], clusters=[cluster], projects=projects, now=0.0)
    grants = {d.job_id: d.workers_max for d in plan.dispatch}
    assert grants == {"f": None, "e": 2}  # the fixed job's 1 CPU is on the ledger first
    # the project holds its 3 already (a running elastic job at its live size 3): the next waits
    held = _running(3)
    plan = plan_tick([_job(id="e2")], running=[held], clusters=[cluster], projects=projects, now=0.0)
    assert plan.dispatch == [] and plan.wait[0].reason.code == "quota"


def test_a_running_elastic_job_holds_its_grant_of_the_quota_but_only_its_live_size_of_the_cluster():
    # 4 CPUs; project p (quota 3, no borrowing) runs an elastic job at live 1, granted 3
    cluster = ClusterView(name="c", nodes_free=[{"CPU": 3.0}], nodes_total=[{"CPU": 4.0}])
    projects = {"p": Project("p", quota=Quota(nominal={"CPU": 3.0}, borrowing_limit={"CPU": 0.0})),
                "q": Project("q")}
    small = RunningJob(id="e", project="p", cluster="c", workers=1, quota_workers=3, per_worker={"CPU": 1.0})
    mine = views.queued_job("p1", {"resources": {"workers": 1}}, project="p", seq=0.0)
    theirs = views.queued_job("q1", {"resources": {"workers": 3}}, project="q", seq=1.0)
    plan = plan_tick([mine, theirs], running=[small], clusters=[cluster], projects=projects, now=0.0)
    # p's own next job would take the room its elastic job may grow into; q's uses the free nodes
    assert [d.job_id for d in plan.dispatch] == ["q1"]
    assert {w.job_id: w.reason.code for w in plan.wait} == {"p1": "quota"}
    # without the grant on record (a fixed job of 1) the same job of p fits
    fixed = RunningJob(id="e", project="p", cluster="c", workers=1, per_worker={"CPU": 1.0})
    plan = plan_tick([mine], running=[fixed], clusters=[cluster], projects=projects, now=0.0)
    assert [d.job_id for d in plan.dispatch] == ["p1"]


# ----------------------------------------------------------------------------- what a running job counts as


def test_held_workers_is_the_live_size_within_min_and_the_grant():
    assert held_workers(low=1, high=4) == 1  # no report yet: its min
    assert held_workers(low=1, high=4, live=3) == 3
    assert held_workers(low=1, high=4, live=3, granted=2) == 2  # never above its grant
    assert held_workers(low=2, high=4, live=1, granted=3) == 2  # never below its min
    assert held_workers(low=1, high=4, live=9) == 4


def _row(phase=st.RUNNING, live=None, granted=None, workers=ELASTIC["workers"]):
    return JobRow(id="j", kind="job", name="j", project="p", owner="o", priority=0, phase=phase, cluster="c",
                  spec={"name": "j", "resources": {**ELASTIC, "workers": workers}}, attempt=1,
                  workers_live=live, workers_granted=granted)


def test_a_running_elastic_job_at_live_2_reserves_2_workers_and_counts_2_against_its_quota():
    row = _row(live=2, granted=3)
    assert views.reserved_by_cluster([row]) == {"c": {"CPU": 2.0}}
    assert views.job_demand(row) == {"CPU": 2.0}
    assert views.row_job(row).max_workers == 3  # it may still grow to its grant (autoscaling asks for that)
    assert views.job_demand(_row(live=4, granted=3)) == {"CPU": 3.0}  # a report above the grant: the grant
    assert views.job_demand(_row(live=None, granted=3)) == {"CPU": 1.0}  # before the first report: min
    assert views.job_demand(_row(phase=st.PENDING, live=2, granted=3)) == {"CPU": 1.0}  # queued again: min
    assert views.job_demand(_row(live=5, workers=2)) == {"CPU": 2.0}  # a fixed job is its size
    # against its project's quota (and in the queue page's quota bar) it counts at its grant
    assert views.quota_demand(_row(live=1, granted=3)) == {"CPU": 3.0}
    assert views.quota_demand(_row(live=5, workers=2)) == {"CPU": 2.0}


def test_the_ledger_charges_the_segments_time_weighted_size_else_the_live_size():
    two_then_one = {"usage": {"segments": [{"workers": 2, "start_unix": 0, "last_unix": 90},
                                           {"workers": 1, "start_unix": 100, "last_unix": 200}]}}
    assert segment_workers(two_then_one) == 1.5
    assert segment_workers({"usage": {"segments": [{"workers": True, "start_unix": 0, "last_unix": 1}]}}) is None
    assert segment_workers({"usage": {}}) is None and segment_workers(None) is None
    row = _row(phase=st.SUCCEEDED, live=1, granted=3)
    row.result = two_then_one
    assert views.ledger_demand(row) == {"CPU": 1.5}
    row.result = None
    assert views.ledger_demand(row) == {"CPU": 1.0}  # the live size, whatever the phase now
    row.workers_live = 3
    assert views.ledger_demand(row) == {"CPU": 3.0}


def test_job_dict_shows_the_live_size_while_running_and_the_range_with_its_grant():
    shown = views.job_dict(_row(live=2, granted=3))
    assert shown["workers"] == 2 and shown["workers_range"] == {"min": 1, "max": 4, "granted": 3}
    queued = views.job_dict(_row(phase=st.PREEMPTED, live=2, granted=3))  # queued again: the next grant is new
    assert queued["workers"] == 1 and queued["workers_range"]["granted"] is None
    assert views.job_dict(_row(workers=2))["workers_range"] is None


def test_one_worker_range_rule_for_specs_and_stored_dicts():
    assert worker_bounds({"min": 2, "max": 4}) == (2, 4) == views.worker_range({"workers": {"min": 2, "max": 4}})
    assert worker_bounds({"min": 2}) == (2, 2) and worker_bounds(3) == (3, 3) and worker_bounds(None) == (1, 1)
    res = JobSpec.model_validate({"name": "e", "workload": "cnn", "resources": {"workers": {"min": 1, "max": 3}},
                                  "training": {"elastic_batch": "scale"}}).resources
    assert (res.min_workers, res.max_workers) == worker_bounds(res.workers) == (1, 3)


def test_the_runner_never_grows_past_the_grant(monkeypatch):
    res = JobSpec.model_validate({"name": "e", "workload": "cnn", "resources": {"workers": {"min": 1, "max": 4}},
                                  "training": {"elastic_batch": "scale"}}).resources
    monkeypatch.delenv(launch.WORKERS_MAX_ENV, raising=False)
    assert launch.scaling_for(res) == (1, 4)
    monkeypatch.setenv(launch.WORKERS_MAX_ENV, "2")
    assert launch.scaling_for(res) == (1, 2)
    monkeypatch.setenv(launch.WORKERS_MAX_ENV, "1")
    assert launch.scaling_for(res) == 1  # a grant of its min: a fixed group
    monkeypatch.setenv(launch.WORKERS_MAX_ENV, "9")
    assert launch.scaling_for(res) == (1, 4)
    settings = Settings(db_url="sqlite://", storage="file:///tmp/x")
    spec = {"env": {runtime.WORKERS_MAX_ENV: "99"}}  # a spec cannot lift the scheduler's cap
    assert runtime.runtime_env_for("j", spec, settings, owner="o", project="p",
                                   workers_max=2)["env_vars"][runtime.WORKERS_MAX_ENV] == "2"
    assert runtime.WORKERS_MAX_ENV not in runtime.runtime_env_for("j", spec, settings, owner="o",
                                                                  project="p")["env_vars"]


# ----------------------------------------------------------------------------- through the controller


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://ray.example:8265", ray_token_file=str(tmp_path / "ray.token"),
                        storage=f"file://{tmp_path / 'storage'}", extra={"packages_dir": str(tmp_path / "packages")})
    fakes: dict[str, FakeRay] = {}
    app = create_app(settings, client_factory=lambda n, u, t: fakes.setdefault(n, FakeRay(n, u, t, cpus=8.0)),
                     run_controller=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        ctx = app.state.ctx
        ctx.controller.refresh_clusters()
        with ctx.db.session() as s:
            quotas_repo.set_quota(s, teams_repo.get_project(s, "default"),
                                  quotas.check_settings("default", nominal={"CPU": 3}, borrowing_limit={"CPU": 0}))
        ctx.controller.projects_changed()
        yield client, ctx, fakes["local"]


def _submit(client, name, workers):
    body = {"name": name, "workload": "cnn", "resources": {"workers": workers}, "training": {"max_steps": 5}}
    if isinstance(workers, dict):
        body["training"]["elastic_batch"] = "scale"
    resp = client.post("/v1/jobs", json={"spec": body})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _progress(step, workers):
    return format_line(PROGRESS, {"step": step, "total_steps": 5, "workers": workers})


def test_grant_live_size_resize_events_and_the_ledger_through_the_controller(server):
    client, ctx, ray = server
    clock = [0.0]
    ctx.controller.reconciler.clock = lambda: clock[0]
    job_id = _submit(client, "grow", {"min": 1, "max": 4})
    ctx.controller.tick()
    env = ray.submissions[0]["runtime_env"]["env_vars"]
    assert env["TRAINYARD_WORKERS_MAX"] == "3"  # the quota's 3 CPUs, not the spec's max of 4
    sub = ray.submissions[0]["submission_id"]
    ray.jobs[sub].update(status="RUNNING", logs=_progress(1, 2) + "\n")
    ctx.controller.tick()  # SUBMITTED -> RUNNING
    ctx.controller.tick()  # the progress read: 2 workers
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["workers"] == 2 and job["workers_range"] == {"min": 1, "max": 4, "granted": 3}
    assert [e["reason"] for e in job["events"] if e["reason"].startswith("resized")] == ["resized: 1 -> 2 workers"]

    # at its min it would leave room for 2 more; at its live 2, a 2-worker job is over the quota
    other = _submit(client, "other", 2)
    ctx.controller.tick()
    assert client.get(f"/v1/jobs/{other}").json()["pending"]["reason"]["code"] == "quota"
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["jobs"]}
    assert listed[job_id]["workers"] == 2 and listed[other]["workers"] == 2

    # a node is lost: the group restarts on 1 worker. Its grant of 3 is still its share of
    # the quota (it may grow back without asking), so the other job of its project still waits
    ray.jobs[sub]["logs"] += _progress(2, 1) + "\n"
    clock[0] += 60.0
    ctx.controller.tick()
    ctx.controller.tick()
    events = [e for e in client.get(f"/v1/jobs/{job_id}").json()["events"] if e["reason"].startswith("resized")]
    assert [e["reason"] for e in events] == ["resized: 1 -> 2 workers", "resized: 2 -> 1 workers"]
    assert all(e["from"] == e["to"] == "RUNNING" for e in events)
    assert client.get(f"/v1/jobs/{job_id}").json()["workers"] == 1
    assert client.get(f"/v1/jobs/{other}").json()["pending"]["reason"]["code"] == "quota"

    # the ledger charges the segments the result carries: 2 workers, then 1, as long each
    segments = [{"workers": 2, "start_unix": 0, "last_unix": 100}, {"workers": 1, "start_unix": 100,
                                                                     "last_unix": 200}]
    ray.jobs[sub].update(status="SUCCEEDED", end_time=1_700_000_100_000,
                         logs=ray.jobs[sub]["logs"] + format_line(RESULT, {"metrics": {}, "usage": {
                             "segments": segments}}) + "\n")
    ctx.controller.tick()
    with ctx.db.session() as s:
        assert s.get(UsageRow, (job_id, 1)).resources == {"CPU": 1.5}
        assert jobs_repo.get_job(s, job_id).phase == st.SUCCEEDED
    assert client.get(f"/v1/jobs/{job_id}").json()["workers"] == 1  # ended: the count it is admitted at
    ctx.controller.tick()  # its share is free: the other job goes
    assert client.get(f"/v1/jobs/{other}").json()["phase"] in (st.DISPATCHING, st.SUBMITTED)


def test_a_run_that_was_one_group_all_along_is_costed_at_that_groups_size():
    from trainyard.controller.costs import allocations_for

    one = {"usage": {"steps": 3, "step_seconds": 3.0, "segments": [
        {"workers": 3, "start_unix": 0, "ready_unix": 1, "last_unix": 90, "resumed_step": 0, "steps": 3,
         "step_seconds": 3.0, "ckpt_steps": 3, "ckpt_step_seconds": 3.0}]}}
    spec = {"resources": ELASTIC}
    assert [a["workers"] for a in allocations_for(spec, [(0.0, 100.0)], result=one)] == [3]
    one["usage"]["segments"][0]["workers"] = "3"
    assert [a["workers"] for a in allocations_for(spec, [(0.0, 100.0)], result=one)] == [1]  # malformed: min


def test_jobs_list_shows_live_over_granted_for_an_elastic_job():
    from trainyard.apitypes import Job
    from trainyard.cli.main import _workers_cell

    def job(row):
        return Job.model_validate(views.job_dict(row))

    assert _workers_cell(job(_row(live=1, granted=2))) == "1/2"
    assert _workers_cell(job(_row(phase=st.PENDING))) == "1/4"  # queued: its min over its max
    assert _workers_cell(job(_row(workers=2))) == "2"

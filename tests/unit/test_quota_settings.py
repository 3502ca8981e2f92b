"""Quotas, budgets and the usage ledger: checks, rows -> scheduler data, the controller's use
of them (with a stand-in cluster client: no Ray), and `trainyard projects quota` through the
SDK against the real app in process (SQLite)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from trainyard import errors as E
from trainyard import redact
from trainyard.clusters.registry import ClusterRegistry
from trainyard.config import Settings
from trainyard.controller.loop import Controller
from trainyard.scheduler.model import DAY, Budget, Project, Quota, UsageRecord
from trainyard.store import Database
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.controller import quotas
from trainyard.store import quotas as quotas_repo
from trainyard.store import state as st
from trainyard.store import teams as teams_repo
from trainyard.store.models import UsageRow

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- checks
def test_check_settings_stores_plain_values():
    out = quotas.check_settings("vision", weight=2, nominal={"CPU": 32, "GPU": 8, "accelerator_type:A100": 8},
                                     borrowing_limit={"GPU": 4}, lending_limit={"GPU": 2},
                                     budget={"gpu_hours": 500, "window_days": 30})
    assert out == {"weight": 2.0,
                   "quota": {"nominal": {"CPU": 32.0, "GPU": 8.0, "accelerator_type:A100": 8.0},
                             "borrowing_limit": {"GPU": 4.0}, "lending_limit": {"GPU": 2.0}},
                   "budget": {"gpu_hours": 500.0, "cpu_hours": None, "window_days": 30.0}}
    assert quotas.check_settings("vision") == {"weight": 1.0, "quota": None, "budget": None}
    # a budget with no hours is no budget
    assert quotas.check_settings("vision", budget={"window_days": 7})["budget"] is None


@pytest.mark.parametrize("kwargs, field", [
    ({"weight": 0}, "weight"),
    ({"weight": True}, "weight"),
    ({"weight": math.inf}, "weight"),
    ({"weight": "2"}, "weight"),
    ({"nominal": {"TPU": 1}}, "nominal.TPU"),
    ({"nominal": {"cpu": 1}}, "nominal.cpu"),
    ({"nominal": {"accelerator_type:": 1}}, "nominal.accelerator_type:"),
    ({"nominal": {"CPU": -1}}, "nominal.CPU"),
    ({"nominal": {"GPU": math.nan}}, "nominal.GPU"),
    ({"nominal": {"memory": 1e16}}, "nominal.memory"),
    ({"nominal": [1]}, "nominal"),
    ({"nominal": {f"accelerator_type:T{i}": 1 for i in range(17)}}, "nominal"),
    ({"borrowing_limit": {"GPU": "4"}}, "borrowing_limit.GPU"),
    ({"nominal": {"GPU": 2}, "lending_limit": {"GPU": 3}}, "lending_limit.GPU"),
    ({"budget": {"gpu_hours": -5}}, "budget.gpu_hours"),
    ({"budget": {"cpu_hours": 1, "window_days": 0}}, "budget.window_days"),
    ({"budget": {"cpu_hours": 1, "window_days": 400}}, "budget.window_days"),
    ({"budget": {"gpu_hour": 1}}, "budget.gpu_hour"),
    ({"budget": 5}, "budget"),
])
def test_check_settings_refuses_naming_the_field(kwargs, field):
    with pytest.raises(E.SpecError) as err:
        quotas.check_settings("vision", **kwargs)
    assert err.value.field == field and err.value.fix


def test_rows_become_scheduler_data():
    stored = quotas.check_settings("vision", weight=3, nominal={"GPU": 8}, borrowing_limit={"GPU": 0},
                                        budget={"cpu_hours": 10, "window_days": 7})
    project = quotas.project_of("vision", **stored)
    assert project == Project("vision", weight=3.0, quota=Quota(nominal={"GPU": 8.0}, borrowing_limit={"GPU": 0.0}),
                              budget=Budget(gpu_hours=None, cpu_hours=10.0, window_s=7 * DAY))
    assert quotas.project_of("p", weight=None, quota=None, budget=None) == Project("p")
    rec = quotas.usage_of("vision", started_at=NOW - timedelta(hours=1), ended_at=None, resources={"CPU": 2})
    assert rec == UsageRecord("vision", (NOW - timedelta(hours=1)).timestamp(), None, {"CPU": 2.0})


# ----------------------------------------------------------------------------- store and controller
class StandInCluster:
    """The calls a tick makes of a cluster: node resources, submit, status."""

    def __init__(self, name: str):
        self.name = name
        self.submitted: list[str] = []

    def resources(self):
        return {"nodes": [{"id": "n0", "total": {"CPU": 8.0, "GPU": 4.0}, "free": {"CPU": 8.0, "GPU": 4.0}}]}

    def submit(self, *, submission_id, **kwargs):
        self.submitted.append(submission_id)
        return "submitted"

    def status(self, submission_id):
        return {"status": "PENDING", "message": ""}

    def close(self):
        pass


@pytest.fixture()
def world(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    db.upgrade()
    stand_in = StandInCluster("fleet")
    settings = Settings(db_url=db.url, storage=f"file://{tmp_path / 'storage'}", ray_dashboard_url="",
                        extra={"packages_dir": str(tmp_path / "packages")})
    with db.session() as s:
        clusters_repo.add_cluster(s, name="fleet", dashboard_url="http://fleet.example:8265")
        for name in ("capped", "spent", "free"):
            teams_repo.create_project(s, name)
    registry = ClusterRegistry(db, settings, client_factory=lambda name, url, token: stand_in)
    ctrl = Controller(db, registry, settings, resources_interval_s=3600.0)
    ctrl.refresh_clusters()
    yield db, ctrl, stand_in
    db.dispose()


def _job(s, name, project, *, workers=1, gpus=0):
    res = {"workers": workers, "cpus_per_worker": 1}
    if gpus:
        res["gpus_per_worker"] = gpus
    return jobs_repo.create_job(s, spec={"name": name, "workload": "cnn", "project": project, "resources": res,
                                         "training": {"max_steps": 1}}, name=name, project=project, priority=0).id


def _set(db, name, **kwargs):
    with db.session() as s:
        quotas_repo.set_quota(s, teams_repo.get_project(s, name), quotas.check_settings(name, **kwargs))


def _reason(db, job_id):
    with db.session() as s:
        job = jobs_repo.find_job(s, job_id)
        return job.phase, ((job.result or {}).get("pending") or {}).get("reason", {}).get("code")


def test_controller_holds_back_jobs_over_quota_or_budget_and_lets_others_run(world):
    db, ctrl, stand_in = world
    _set(db, "capped", nominal={"GPU": 1}, borrowing_limit={"GPU": 0})
    _set(db, "spent", budget={"gpu_hours": 1, "window_days": 1})
    now = datetime.now(timezone.utc)
    with db.session() as s:
        s.add(UsageRow(job_id="old", attempt=1, project="spent", started_at=now - timedelta(hours=3),
                       ended_at=now - timedelta(hours=2), resources={"GPU": 1.0, "CPU": 1.0}))
        big = _job(s, "big", "capped", workers=2, gpus=1)
        spent_gpu = _job(s, "gpu", "spent", gpus=1)
        spent_cpu = _job(s, "cpu", "spent")  # the GPU budget is spent, not the CPU one
        other = _job(s, "other", "free", workers=2, gpus=1)
    ctrl.tick()
    assert _reason(db, big) == (st.PENDING, "quota")
    assert _reason(db, spent_gpu) == (st.PENDING, "budget")
    assert _reason(db, spent_cpu)[0] == st.DISPATCHING or _reason(db, spent_cpu)[0] == st.SUBMITTED
    assert _reason(db, other)[0] in (st.DISPATCHING, st.SUBMITTED)
    # the settings are cached: a change behind the controller's back waits for the re-read ...
    _set(db, "capped", nominal={"GPU": 4})
    ctrl.tick()
    assert _reason(db, big) == (st.PENDING, "quota")
    # ... and projects_changed() (what the API calls) makes the next tick read them again
    ctrl.projects_changed()
    ctrl.tick()
    assert _reason(db, big)[0] in (st.DISPATCHING, st.SUBMITTED)


def test_an_attempt_leaving_running_is_written_to_the_ledger_once(world):
    db, ctrl, _ = world
    with db.session() as s:
        job_id = _job(s, "j", "free", workers=2, gpus=1)
        job = jobs_repo.find_job(s, job_id)
        for phase in (st.DISPATCHING, st.SUBMITTED):
            jobs_repo.transition(s, job, phase, reason="test", cluster="fleet", attempt=1,
                                 submission_id=jobs_repo.submission_id_for(job_id, 1))
        jobs_repo.transition(s, job, st.RUNNING, reason="test", at=NOW - timedelta(hours=2))
        assert [j.id for j in quotas_repo.running_jobs(s)] == [job_id]
        [rec] = quotas.usage_for(s, "free", window_s=DAY, now=NOW)
        assert rec.end is None and rec.resources == {"CPU": 2.0, "GPU": 2.0}
    assert ctrl.moves.move(job_id, st.RUNNING, st.SUCCEEDED, reason="done", at=NOW, message="succeeded")
    with db.session() as s:
        assert quotas_repo.record_usage(s, jobs_repo.find_job(s, job_id), resources={"GPU": 2.0}) is None  # once
        rows = quotas.closed_usage(s, since=NOW - timedelta(days=1))
        assert rows == [UsageRecord("free", (NOW - timedelta(hours=2)).timestamp(), NOW.timestamp(),
                                    {"CPU": 2.0, "GPU": 2.0})]
        assert quotas.closed_usage(s, since=NOW) == []
        assert quotas.closed_usage(s, since=NOW - timedelta(days=1), projects=["capped"]) == []
        assert quotas_repo.running_jobs(s) == []


def test_a_job_finished_before_it_was_seen_running_still_counts(world):
    db, ctrl, _ = world
    with db.session() as s:
        job_id = _job(s, "quick", "free")
        job = jobs_repo.find_job(s, job_id)
        for phase in (st.DISPATCHING, st.SUBMITTED):
            jobs_repo.transition(s, job, phase, reason="test", cluster="fleet", attempt=1,
                                 submission_id=jobs_repo.submission_id_for(job_id, 1))
    assert ctrl.moves.move(job_id, st.SUBMITTED, st.SUCCEEDED, reason="done", at=NOW, started=NOW - timedelta(hours=1))
    with db.session() as s:
        [rec] = quotas.closed_usage(s, since=NOW - timedelta(days=1))
        assert rec.end - rec.start == 3600.0 and rec.resources == {"CPU": 1.0}


# ----------------------------------------------------------------------------- CLI + SDK + API in process
@pytest.fixture()
def cli_app(tmp_path, trainyard_home, monkeypatch):
    from fastapi.testclient import TestClient

    from trainyard.api.app import create_app
    from trainyard.cli import main as cli
    from trainyard.sdk import Client

    for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    redact.clear()
    (tmp_path / "admin.token").write_text("quota-admin-token\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'api.db'}", admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://127.0.0.1:1")
    with TestClient(create_app(settings, run_controller=False)) as api:
        client = Client(url="http://testserver", token="quota-admin-token", retries=0)
        client._http._transport = api._transport
        monkeypatch.setattr(cli, "_client", lambda args: client)
        api.headers["Authorization"] = "Bearer quota-admin-token"
        api.post("/v1/projects", json={"name": "vision"})
        yield cli, client


def _run(cli, argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv, flag", [
    (["--nominal", "cpu=4,tpu=2"], "--nominal"),
    (["--nominal", "cpu"], "--nominal"),
    (["--nominal", "cpu=-1"], "--nominal CPU"),
    (["--nominal", "gpu=nan"], "--nominal GPU"),
    (["--nominal", "cpu=1,CPU=2"], "--nominal"),
    (["--borrowing-limit", "gpu=x"], "--borrowing-limit GPU"),
    (["--weight", "0"], "--weight"),
    (["--gpu-hours", "-3"], "--gpu-hours"),
    (["--window-days", "1000"], "--window-days"),
    ([], "--weight"),
])
def test_quota_set_refuses_bad_flags_with_exit_2(cli_app, capsys, argv, flag):
    cli, client = cli_app
    code, out, err = _run(cli, ["projects", "quota", "set", "vision", *argv], capsys)
    assert code == 2 and flag in err and "Traceback" not in err
    assert client.get_quota("vision").nominal is None  # nothing changed


def test_quota_set_changes_only_what_the_flags_name_and_show_prints_it(cli_app, capsys):
    cli, client = cli_app
    code, out, _ = _run(cli, ["projects", "quota", "set", "vision", "--nominal", "cpu=4,gpu=2,accelerator_type:A100=2",
                              "--borrowing-limit", "gpu=1", "--gpu-hours", "100", "--window-days", "7"], capsys)
    assert code == 0 and "accelerator_type:A100" in out
    code, out, _ = _run(cli, ["projects", "quota", "set", "vision", "--weight", "3", "--json"], capsys)
    import json

    shown = json.loads(out)
    assert shown["weight"] == 3 and shown["nominal"] == {"CPU": 4, "GPU": 2, "accelerator_type:A100": 2}
    assert shown["borrowing_limit"] == {"GPU": 1} and shown["budget"]["gpu_hours"] == 100
    assert shown["budget"]["window_days"] == 7 and shown["usage"]["gpu"]["remaining_hours"] == 100
    code, out, _ = _run(cli, ["projects", "quota", "set", "vision", "--borrowing-limit", "", "--gpu-hours", "none"],
                        capsys)
    assert code == 0
    quota = client.get_quota("vision")
    assert quota.borrowing_limit is None and quota.budget is None and quota.nominal["GPU"] == 2
    code, out, _ = _run(cli, ["projects", "quota", "show", "vision"], capsys)
    assert code == 0 and "nominal" in out and "burn (h/day)" in out and "GPU-hours" in out
    code, out, _ = _run(cli, ["projects", "show", "vision"], capsys)
    assert code == 0 and "fair-share weight 3" in out


def test_set_quota_in_the_sdk_replaces_the_settings(cli_app):
    _, client = cli_app
    client.set_quota("vision", weight=2, nominal={"GPU": 4}, cpu_hours=50, window_days=3)
    quota = client.set_quota("vision", nominal={"CPU": 1})
    assert quota.weight == 1 and quota.nominal == {"CPU": 1} and quota.budget is None
    with pytest.raises(E.TrainyardError) as err:
        client.set_quota("vision", nominal={"CPU": -1})
    assert "nominal.CPU" in str(err.value)


def test_migration_0004_keeps_projects_and_goes_both_ways(tmp_path):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from trainyard.store.db import MIGRATIONS_DIR

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")

    def to(revision, verb=command.upgrade):
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", db.url)
        with db.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            verb(cfg, revision)

    try:
        to("0003")
        with db.engine.begin() as conn:
            conn.execute(text("INSERT INTO projects (name, description, created_at) "
                              "VALUES ('vision', '', '2026-01-01 00:00:00')"))
        to("0004")
        with db.session() as s:
            row = teams_repo.get_project(s, "vision")
            assert (row.weight, row.quota, row.budget) == (1.0, None, None)
            assert quotas_repo.projects_with_settings(s) == []
        to("0003", command.downgrade)
        to("head")
        from trainyard.store.db import HEAD_REVISION

        assert db.current_revision() == HEAD_REVISION
    finally:
        db.dispose()


def test_jobs_show_says_why_a_job_waits(trainyard_home, monkeypatch, capsys):
    from trainyard.cli import main as cli

    class Jobs:
        def get_job(self, job_id):
            from api_views import job_view

            return job_view(job_id, name="big", project="capped",
                            message="waiting: project 'capped' would hold 2 GPU but its quota allows 1 plus 0 borrowed",
                            pending={"reason": {"code": "quota", "message": "...", "resource": "GPU"},
                                     "position_in_queue": 3, "position_in_project": 1, "position_in_cluster": None,
                                     "estimated_start": None})

    monkeypatch.setattr(cli, "_client", lambda args: Jobs())
    code, out, _ = _run(cli, ["jobs", "show", "big-1"], capsys)
    assert code == 0 and "quota (resource GPU)" in out and "3 in the queue, 1 in its project" in out

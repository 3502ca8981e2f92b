"""The controller applying preemption: a real SQLite store and API, the Ray dashboard a stand-in
(test_api.py's FakeRay) whose stop() leaves the job running, as a driver that is busy
checkpointing does, until the test says how it ended."""
from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from test_api import TOKEN, FakeRay, spec  # noqa: E402  (tests/unit is on sys.path under pytest)
from trainyard.api.app import create_app
from trainyard.config import Settings
from trainyard.protocol import PREEMPTED, RESULT, format_line
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st
from trainyard.store.models import UsageRow


class SlowStopRay(FakeRay):
    """stop() is recorded; the job keeps running until the test ends it."""

    def stop(self, submission_id):
        self._check()
        self.stops.append(submission_id)
        return submission_id in self.jobs


def make_server(tmp_path, monkeypatch, **settings_over):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(token_file),
                        mlflow_uri="http://mlflow.example:5000", ray_dashboard_url="http://ray.example:8265",
                        ray_token_file=str(tmp_path / "ray.token"), storage=f"file://{tmp_path / 'storage'}",
                        extra={"packages_dir": str(tmp_path / "packages")},
                        **{"preemption_min_runtime_s": 0, **settings_over})
    fakes: dict[str, FakeRay] = {}

    def factory(name, url, token):
        return fakes.setdefault(name, SlowStopRay(name, url, token))

    return create_app(settings, client_factory=factory, run_controller=False), fakes


@pytest.fixture()
def server(tmp_path, monkeypatch):
    app, fakes = make_server(tmp_path, monkeypatch)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        app.state.ctx.controller.refresh_clusters()
        yield client, app.state.ctx, fakes


def submit(client, **over):
    resp = client.post("/v1/jobs", json={"spec": spec(**over)})
    assert resp.status_code == 201, resp.text
    return resp.json()


def get(client, job_id):
    resp = client.get(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def phase(ctx, job_id):
    with ctx.db.session() as s:
        return jobs_repo.get_job(s, job_id).phase


def running_low_job(client, ctx, fakes):
    """A priority-0 job holding both CPUs of the cluster, RUNNING."""
    low = submit(client, name="low", resources={"workers": 2, "cpus_per_worker": 1})
    ctx.controller.tick()
    sub = get(client, low["id"])["submission_id"]
    fakes["local"].set(sub, "RUNNING")
    ctx.controller.tick()
    assert phase(ctx, low["id"]) == st.RUNNING
    return low, sub


def test_a_higher_priority_job_preempts_checkpoint_requeue_and_resume(server):
    client, ctx, fakes = server
    ray = fakes["local"]
    low, sub = running_low_job(client, ctx, fakes)
    env = ray.submissions[0]["runtime_env"]["env_vars"]
    assert env["RAY_JOB_STOP_WAIT_TIME_S"] == "120"  # Ray waits the grace period before it kills
    with ctx.db.session() as s:
        created = jobs_repo.get_job(s, low["id"]).created_at

    high = submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
    ctx.controller.tick()
    assert phase(ctx, low["id"]) == st.PREEMPTING and ray.stops == [sub]
    shown = get(client, low["id"])
    assert shown["state"] == "RUNNING" and shown["phase"] == "PREEMPTING"
    assert shown["message"].startswith("preempting: preempted for job")
    waiting = get(client, high["id"])
    assert waiting["state"] == "PENDING" and waiting["pending"]["reason"]["code"] == "preempting"

    # the driver is still saving: nothing else is taken, Ray is asked again
    for _ in range(2):
        ctx.controller.tick()
    assert phase(ctx, low["id"]) == st.PREEMPTING and phase(ctx, high["id"]) == st.PENDING
    assert set(ray.stops) == {sub} and len(ray.submissions) == 1

    line = format_line(PREEMPTED, {"step": 40, "total_steps": 100, "checkpoint": "file:///c/checkpoint_000002",
                                   "mlflow_run_id": "r1"})
    ray.set(sub, "STOPPED", logs=f"hello\n{line}\n")
    ctx.controller.tick()
    job = get(client, low["id"])
    assert (job["state"], job["phase"]) == ("PENDING", "PREEMPTED")
    assert job["preemptions"] == 1 and job["preempted_s"] >= 0
    # the message soon says why it waits; the event keeps what happened
    assert job["events"][-1]["reason"] == "preempted: checkpointed at step 40 (file:///c/checkpoint_000002)"
    assert job["started_at"] is None  # the next attempt's start is its own
    with ctx.db.session() as s:
        usage = s.get(UsageRow, (low["id"], 1))
        assert usage is not None and usage.reason == "preemption"
        assert jobs_repo.get_job(s, low["id"]).created_at == created  # its place in the queue
    # the high-priority job takes the room; the preempted one waits with a reason
    ctx.controller.tick()
    assert phase(ctx, high["id"]) in (st.DISPATCHING, st.SUBMITTED)
    assert get(client, low["id"])["pending"]["reason"]["code"] in ("capacity", "behind_job")
    high_sub = get(client, high["id"])["submission_id"]
    ray.set(high_sub, "RUNNING")
    ctx.controller.tick()
    ray.set(high_sub, "SUCCEEDED", logs=format_line(RESULT, {"metrics": {}}) + "\n")
    ctx.controller.tick()
    ctx.controller.tick()
    again = get(client, low["id"])
    assert again["attempt"] == 2 and again["submission_id"] == f"trainyard-{low['id']}-2"
    assert again["preemptions"] == 1
    events = [(e["from"], e["to"]) for e in again["events"]]
    assert ("RUNNING", "PREEMPTING") in events and ("PREEMPTING", "PREEMPTED") in events
    assert ("PREEMPTED", "DISPATCHING") in events


def test_no_checkpoint_within_the_grace_period_requeues_and_says_steps_were_lost(server):
    client, ctx, fakes = server
    ray = fakes["local"]
    low, sub = running_low_job(client, ctx, fakes)
    submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
    ctx.controller.tick()
    assert phase(ctx, low["id"]) == st.PREEMPTING
    # past the grace period, Ray still running it: the controller says so and asks again
    with ctx.db.session() as s:
        job = jobs_repo.get_job(s, low["id"])
        job.preempt_requested_at = job.preempt_requested_at - timedelta(seconds=500)
    ctx.controller.tick()
    assert "no checkpoint within the grace period (120s)" in get(client, low["id"])["message"]
    ray.set(sub, "STOPPED", logs="killed\n")  # Ray's SIGKILL: no line
    ray.jobs[sub]["end_time"] = int(time.time() * 1000)
    ctx.controller.tick()
    job = get(client, low["id"])
    assert job["phase"] == "PREEMPTED" and job["preemptions"] == 1 and job["preempted_s"] >= 500
    assert "steps since the last one lost" in job["events"][-1]["reason"]


def test_a_job_that_finished_before_the_stop_reached_it_succeeds(server):
    client, ctx, fakes = server
    ray = fakes["local"]
    low, sub = running_low_job(client, ctx, fakes)
    submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
    ctx.controller.tick()
    ray.set(sub, "STOPPED", logs=format_line(RESULT, {"metrics": {"accuracy": 0.9}}) + "\n")
    ctx.controller.tick()
    job = get(client, low["id"])
    assert job["state"] == "SUCCEEDED" and job["metrics"] == {"accuracy": 0.9} and job["preemptions"] == 0


def test_a_stop_notice_nobody_here_sent_requeues_a_running_job(server):
    """A node going away SIGTERMs the driver; it checkpoints and exits 75 (Ray: FAILED)."""
    client, ctx, fakes = server
    ray = fakes["local"]
    low, sub = running_low_job(client, ctx, fakes)
    line = format_line(PREEMPTED, {"step": 3, "checkpoint": "file:///c/checkpoint_000001"})
    ray.set(sub, "FAILED", logs=line + "\n", message="exit code 75")
    ctx.controller.tick()
    job = get(client, low["id"])
    # queued again and, the cluster being free, already on its next attempt
    assert job["preemptions"] == 1 and job["preempted_s"] == 0 and job["attempt"] == 2
    assert ("RUNNING", "PREEMPTED") in [(e["from"], e["to"]) for e in job["events"]]


def test_a_ray_job_stop_behind_the_controllers_back_stays_a_cancellation(server):
    client, ctx, fakes = server
    low, sub = running_low_job(client, ctx, fakes)
    line = format_line(PREEMPTED, {"step": 3, "checkpoint": "file:///c/checkpoint_000001"})
    fakes["local"].set(sub, "STOPPED", logs=line + "\n")
    ctx.controller.tick()
    job = get(client, low["id"])
    assert job["state"] == "CANCELLED" and job["preemptions"] == 0


def test_cancelling_a_preempting_or_preempted_job(server):
    client, ctx, fakes = server
    ray = fakes["local"]
    low, sub = running_low_job(client, ctx, fakes)
    submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
    ctx.controller.tick()
    resp = client.post(f"/v1/jobs/{low['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert phase(ctx, low["id"]) == st.CANCELLING
    ray.set(sub, "STOPPED", logs=format_line(PREEMPTED, {"step": 1, "checkpoint": "x"}) + "\n")
    ctx.controller.tick()
    assert phase(ctx, low["id"]) == st.CANCELLED  # cancelled wins over requeue

    other, sub2 = None, None
    with ctx.db.session() as s:  # a job queued again after a preemption
        job = jobs_repo.create_job(s, spec=spec(name="again"), name="again", project="default", priority=0)
        jobs_repo.transition(s, job, st.DISPATCHING, reason="t", attempt=1, cluster="local",
                             submission_id="trainyard-x-1")
        jobs_repo.transition(s, job, st.RUNNING, reason="t")
        jobs_repo.transition(s, job, st.PREEMPTED, reason="t")
        other = job.id
    resp = client.post(f"/v1/jobs/{other}/cancel")
    assert resp.status_code == 200 and resp.json()["state"] == "CANCELLED"
    assert "after a preemption" in resp.json()["message"]


def test_min_runtime_and_the_switch_keep_running_jobs_running(tmp_path, monkeypatch):
    app, fakes = make_server(tmp_path, monkeypatch, preemption_min_runtime_s=300)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        ctx = app.state.ctx
        ctx.controller.refresh_clusters()
        low, _ = running_low_job(client, ctx, fakes)
        high = submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
        ctx.controller.tick()
        assert phase(ctx, low["id"]) == st.RUNNING and fakes["local"].stops == []
        assert get(client, high["id"])["pending"]["reason"]["code"] == "capacity"
        assert ctx.controller.dispatcher.tick_config.min_runtime_s == 300


def test_preemption_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_PREEMPTION", "false")
    assert Settings.from_env().preemption is False
    app, fakes = make_server(tmp_path, monkeypatch, preemption=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        ctx = app.state.ctx
        ctx.controller.refresh_clusters()
        low, _ = running_low_job(client, ctx, fakes)
        submit(client, name="high", priority=10, resources={"workers": 2, "cpus_per_worker": 1})
        ctx.controller.tick()
        assert phase(ctx, low["id"]) == st.RUNNING and fakes["local"].stops == []


@pytest.mark.parametrize("field,value", [("preemption_grace_s", 0), ("preemption_min_runtime_s", -1),
                                         ("preemption_grace_s", "soon")])
def test_bad_preemption_settings_are_refused_naming_the_field(field, value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        Settings(**{field: value})
    assert field in str(err.value)


def test_jobs_show_says_how_often_a_job_was_preempted(trainyard_home, monkeypatch, capsys):
    from trainyard.cli import main as cli

    class Jobs:
        def __init__(self, count):
            self.count = count

        def get_job(self, job_id):
            from api_views import job_view

            return job_view(job_id, name="low", state="PENDING", phase="PREEMPTED", preemptions=self.count,
                            preempted_s=95.04)

    monkeypatch.setattr(cli, "_client", lambda args: Jobs(2))
    assert cli.main(["jobs", "show", "low-1"]) == 0
    assert "2 times, 95.0 s stopping" in capsys.readouterr().out
    monkeypatch.setattr(cli, "_client", lambda args: Jobs(0))
    assert cli.main(["jobs", "show", "low-1"]) == 0
    assert "preempted" not in capsys.readouterr().out

"""max_runtime_s: declared in the spec, used by backfill, and enforced on the running job.

Real SQLite store and API; the Ray dashboard is the fake of test_api.py."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from test_api import spec
from test_controller_tick import server, submit  # noqa: F401  (the fixture)
from trainyard.errors import SpecError
from trainyard.specs import parse_job_spec
from trainyard.store import jobs as jobs_repo


@pytest.mark.parametrize("value", [0, -5, "60", 1.5, 10**9, True])
def test_a_bad_max_runtime_names_the_field(value):
    with pytest.raises(SpecError) as exc:
        parse_job_spec(spec(max_runtime_s=value))
    assert "max_runtime_s" in str(exc.value.to_dict())


def test_max_runtime_is_optional_and_kept():
    assert parse_job_spec(spec()).max_runtime_s is None
    assert parse_job_spec(spec(max_runtime_s=3600)).max_runtime_s == 3600


def _running(client, ctx, fakes, job_id, *, ran_s: float = 0.0):
    ctx.controller.tick()
    sub = next(s["submission_id"] for s in fakes["local"].submissions if s["metadata"]["trainyard_job_id"] == job_id)
    fakes["local"].jobs[sub]["status"] = "RUNNING"
    ctx.controller.tick()
    if ran_s:
        with ctx.db.session() as s:
            jobs_repo.find_job(s, job_id).started_at = datetime.now(timezone.utc) - timedelta(seconds=ran_s)
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "RUNNING"
    return sub


def test_a_job_past_its_max_runtime_is_stopped_and_says_why(server):  # noqa: F811
    client, ctx, fakes = server
    job = submit(client, max_runtime_s=60)
    sub = _running(client, ctx, fakes, job["id"], ran_s=120)
    ctx.controller.tick()
    assert sub in fakes["local"].stops
    ctx.controller.tick()  # Ray reports STOPPED
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "CANCELLED"
    assert got["message"].startswith("cancelled: ran past its max_runtime_s (60 s; it ran 12"), got["message"]


def test_a_job_within_its_max_runtime_and_one_without_are_left_alone(server):  # noqa: F811
    client, ctx, fakes = server
    within = submit(client, max_runtime_s=600)
    unbounded = submit(client, name="long")
    _running(client, ctx, fakes, within["id"], ran_s=100)
    _running(client, ctx, fakes, unbounded["id"], ran_s=10**6)
    ctx.controller.tick()
    assert fakes["local"].stops == []


def test_a_declared_max_runtime_lets_a_small_job_backfill_without_delaying_the_head(server):  # noqa: F811
    client, ctx, fakes = server
    first = submit(client, name="first", max_runtime_s=600)  # 1 of the 2 CPUs, for at most 10 min
    _running(client, ctx, fakes, first["id"])
    head = submit(client, name="head", resources={"workers": 2})  # needs both: starts when `first` ends
    short = submit(client, name="short", max_runtime_s=30)  # ends long before that
    unknown = submit(client, name="unknown")  # might run past it
    ctx.controller.tick()
    started = {s["metadata"]["trainyard_job_id"] for s in fakes["local"].submissions}
    assert started == {first["id"], short["id"]}
    assert head["id"] not in started and unknown["id"] not in started
    assert client.get(f"/v1/jobs/{unknown['id']}").json()["pending"]["reason"]["code"] != "quota"

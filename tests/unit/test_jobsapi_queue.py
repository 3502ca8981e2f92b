"""GET /v1/queue and `trainyard queue`: the pending queue per cluster and project, with
positions, reasons, quota use and budget left; only readable projects (fake Ray, no Ray)."""
from __future__ import annotations

import pytest

from test_api import server, spec, submit  # noqa: F401  (the fixture)


def _job(client, name, project, workers=2):
    return submit(client, name=name, project=project, resources={"workers": workers})["id"]


def test_queue_groups_orders_and_filters_by_role(server):  # noqa: F811
    client, ctx, _ = server
    for project in ("vision", "audio"):
        assert client.post("/v1/projects", json={"name": project}).status_code == 201
    quota = {"nominal": {"CPU": 2}, "budget": {"cpu_hours": 100, "window_days": 7}}
    assert client.put("/v1/projects/vision/quota", json=quota).status_code == 200
    running = _job(client, "holder", "vision")  # takes both CPUs of the fake cluster
    ctx.controller.tick()
    waiting = [_job(client, "v1", "vision"), _job(client, "a1", "audio"), _job(client, "v2", "vision")]
    ctx.controller.tick()
    queue = client.get("/v1/queue").json()
    assert queue["total"] == 3 and not queue["truncated"]
    jobs = [j for group in queue["clusters"] for j in group["jobs"]]
    assert {j["id"] for j in jobs} == set(waiting) and running not in {j["id"] for j in jobs}
    for job in jobs:
        assert job["reason"]["code"] and job["position_in_queue"] and job["position_in_project"]
    assert sorted(j["position_in_queue"] for j in jobs) == [j["position_in_queue"] for j in jobs]
    vision = next(p for p in queue["projects"] if p["project"] == "vision")
    assert vision["queued"] == 2 and vision["running"] == 1
    assert vision["quota"]["nominal"] == {"CPU": 2.0} and vision["quota"]["used"] == {"CPU": 2.0}
    assert vision["budget"]["cpu"]["budget_hours"] == 100 and vision["budget"]["cpu"]["remaining_hours"] <= 100
    audio = next(p for p in queue["projects"] if p["project"] == "audio")
    assert audio["quota"] is None and audio["budget"] is None

    only = client.get("/v1/queue", params={"project": "audio"}).json()
    assert only["total"] == 1 and only["projects"][0]["project"] == "audio"
    clusters = {g["cluster"] for g in queue["clusters"]}
    for name in clusters - {None}:
        assert client.get("/v1/queue", params={"cluster": name}).json()["total"] >= 1
    assert client.get("/v1/queue", params={"cluster": "elsewhere"}).json()["total"] == 0
    short = client.get("/v1/queue", params={"limit": 1}).json()
    assert short["truncated"] and sum(len(g["jobs"]) for g in short["clusters"]) == 1 and short["total"] == 3

    # a viewer of `audio` sees its job and nothing of vision's
    assert client.post("/v1/users", json={"name": "ann"}).status_code == 201
    assert client.put("/v1/projects/audio/members/ann", json={"role": "viewer"}).status_code == 200
    token = client.post("/v1/tokens", json={"name": "t", "user": "ann"}).json()["token"]
    mine = client.get("/v1/queue", headers={"Authorization": f"Bearer {token}"}).json()
    assert mine["total"] == 1 and [p["project"] for p in mine["projects"]] == ["audio"]
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).json()["total"] == 1


@pytest.mark.parametrize("params, field", [({"limit": 0}, "limit"), ({"limit": 5001}, "limit"),
                                           ({"project": "A B"}, "project"), ({"cluster": "x" * 64}, "cluster")])
def test_bad_queue_parameters_are_422(server, params, field):  # noqa: F811
    client, _, _ = server
    resp = client.get("/v1/queue", params=params)
    assert resp.status_code == 422 and field in resp.text


class _QueueClient:
    def __init__(self):
        self.calls = []

    def get_queue(self, **filters):
        self.calls.append(filters)
        from trainyard.apitypes import Queue

        def entry(job_id, project, **over):
            base = {"id": job_id, "name": job_id.split("-")[0], "project": project, "owner": "ann", "priority": 0,
                    "kind": "job", "created_at": "2026-12-05T14:00:00Z", "cluster": None, "position_in_queue": None,
                    "position_in_project": None, "position_in_cluster": None, "reason": None,
                    "estimated_start": None}
            return {**base, **over}

        return Queue.model_validate({"total": 2, "truncated": False,
                "clusters": [{"cluster": "local", "count": 1, "jobs": [
                    entry("v1-x", "vision", cluster="local", position_in_queue=1, position_in_project=1,
                          position_in_cluster=1, reason={"code": "capacity", "message": "waits for 2 CPU"},
                          estimated_start="2026-12-05T15:00:00Z")]},
                    {"cluster": None, "count": 1, "jobs": [entry("a1-y", "audio")]}],
                "projects": [{"project": "vision", "queued": 1, "running": 1, "weight": 1.0,
                              "quota": {"nominal": {"CPU": 2.0}, "borrowing_limit": None, "used": {"CPU": 2.0}},
                              "budget": {"cpu": {"used_hours": 1.0, "budget_hours": 100, "remaining_hours": 99.0}}}]})


def test_cli_queue_tables(monkeypatch, capsys, trainyard_home):
    from trainyard.cli import main as cli

    fake = _QueueClient()
    monkeypatch.setattr(cli, "_client", lambda args: fake)
    assert cli.main(["queue", "--project", "vision", "--cluster", "local"]) == 0
    out = capsys.readouterr().out
    assert fake.calls[-1] == {"project": "vision", "cluster": "local"}
    for text in ("cluster local: 1 waiting", "cluster unplaced", "v1-x", "capacity", "waits for 2 CPU",
                 "not scheduled yet", "CPU 2/2", "CPU 99 of 100 h"):
        assert text in out, text
    assert cli.main(["queue", "--project", "Bad Name"]) == 2
    assert "--project" in capsys.readouterr().err

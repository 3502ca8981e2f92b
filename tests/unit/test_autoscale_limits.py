"""An autoscaling cluster's maximum, through the API and the controller (fake Ray clients).

- `trainyard clusters add --config YAML | --max-resources JSON` registers the maximum.
- A gang job bigger than the maximum is rejected at submit, and a queued one is rejected
  when the cluster's maximum shrinks, instead of waiting forever.
- The controller asks the cluster's autoscaler for a waiting job's bundles (a demand job on
  the cluster), does not repeat itself, and withdraws the request once the job is over.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from trainyard import errors, redact
from trainyard.cli import _ui
from trainyard.cli import main as cli
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo

from test_api import FakeRay, server  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
GPU_NODE = {"CPU": 1.0, "gpu_node": 1.0}
MAX = {"nodes": [{"CPU": 2.0}, GPU_NODE, GPU_NODE]}


# ----------------------------------------------------------------------------- CLI


class RecordingClient:
    def __init__(self):
        self.added = []

    def add_cluster(self, name, **kwargs):
        self.added.append((name, kwargs))
        return {"name": name}


@pytest.fixture()
def recording(monkeypatch, trainyard_home):
    redact.clear()
    client = RecordingClient()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return client


def test_clusters_add_reads_the_maximum_from_a_launcher_config(recording):
    assert cli.main(["clusters", "add", "aws-gpu", "--address", "http://10.0.0.5:8265",
                     "--config", str(REPO / "cluster" / "aws.yaml")]) == 0
    (name, kwargs), = recording.added
    nodes = kwargs["max_resources"]["nodes"]
    assert name == "aws-gpu" and nodes[0] == {"CPU": 0.0}  # the head takes no workers
    assert any(n.get("accelerator_type:A100") == 1.0 and n.get("GPU") == 8.0 for n in nodes)


def test_clusters_add_takes_the_maximum_as_json(recording):
    assert cli.main(["clusters", "add", "big", "--address", "http://h:8265",
                     "--max-resources", json.dumps(MAX)]) == 0
    assert recording.added[0][1]["max_resources"] == MAX


@pytest.mark.parametrize("flags, words", [
    (["--max-resources", "{nodes"], "not valid JSON"),
    (["--max-resources", '{"nodes": [{"CPU": -1}]}'], "must be a number >= 0"),
    (["--config", "/nope/cluster.yaml"], "file not found"),
])
def test_bad_maximum_is_a_usage_error(recording, capsys, flags, words):
    assert cli.main(["clusters", "add", "x", "--address", "http://h:8265", *flags]) == errors.EXIT_USAGE
    assert words in capsys.readouterr().err and recording.added == []


# ----------------------------------------------------------------------------- API + controller


def gpu_spec(name, workers):
    return {"name": name, "workload": "cnn", "training": {"max_steps": 2},
            "resources": {"workers": workers, "custom_resources": {"gpu_node": 1}, "cluster": "auto"}}


def add_auto(client, ctx):
    resp = client.post("/v1/clusters", json={"name": "auto", "address": "http://auto.example:8265",
                                             "token": "t0k3n", "max_resources": MAX, "check": False})
    assert resp.status_code == 201, resp.text


def demand_jobs(fake):
    return [s for s in fake.submissions if s["submission_id"].startswith("trainyard-demand-")]


def requested(sub):
    return json.loads(shlex.split(sub["entrypoint"])[-1])


def test_a_job_bigger_than_the_maximum_is_rejected_at_submit(server):  # noqa: F811
    client, ctx, fakes = server
    add_auto(client, ctx)
    resp = client.post("/v1/jobs", json={"spec": gpu_spec("huge", 3)})
    assert resp.status_code == 422, resp.text
    body = resp.text
    assert "custom_resources" in body and "gpu_node" in body and "auto" in body


def test_a_queued_job_is_rejected_when_the_maximum_shrinks(server):  # noqa: F811
    client, ctx, fakes = server
    add_auto(client, ctx)
    fakes["auto"].down = True  # keeps the job in the queue
    ctx.controller.refresh_clusters()
    job = client.post("/v1/jobs", json={"spec": gpu_spec("two", 2)}).json()
    ctx.controller.tick(refresh=True)
    assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "PENDING"
    with ctx.db.session() as s:  # re-registered smaller (e.g. `trainyard up --autoscaling` on a new config)
        clusters_repo.get_cluster(s, "auto").max_resources = {"nodes": [{"CPU": 2.0}, GPU_NODE]}
    ctx.controller.tick(refresh=True)
    shown = client.get(f"/v1/jobs/{job['id']}").json()
    assert shown["state"] == "FAILED"
    assert "custom_resources" in shown["message"] and "gpu_node" in shown["message"]


def test_the_controller_requests_nodes_for_a_waiting_job_and_withdraws_after(server):  # noqa: F811
    client, ctx, fakes = server
    add_auto(client, ctx)
    fake = fakes["auto"]
    job = client.post("/v1/jobs", json={"spec": gpu_spec("gpu", 2)}).json()
    ctx.controller.tick(refresh=True)
    sent = demand_jobs(fake)
    assert len(sent) == 1 and requested(sent[0]) == [GPU_NODE, GPU_NODE]
    assert "trainyard.clusters.demand_agent" in sent[0]["entrypoint"]
    fake.set(sent[0]["submission_id"], "SUCCEEDED")
    # the autoscaler adds the nodes; nothing new is sent while the demand holds
    fake.resources = lambda: {"nodes": [
        {"id": "h", "total": {"CPU": 2.0}, "free": {"CPU": 2.0}},
        *({"id": f"g{i}", "total": dict(GPU_NODE), "free": dict(GPU_NODE)} for i in range(2))]}
    for _ in range(3):
        ctx.controller.tick(refresh=True)
    assert len(demand_jobs(fake)) == 1
    with ctx.db.session() as s:
        submission = jobs_repo.get_job(s, job["id"]).submission_id
    assert submission in fake.jobs  # dispatched
    fake.set(submission, "SUCCEEDED", logs="")
    ctx.controller.tick(refresh=True)
    assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "SUCCEEDED"
    sent = demand_jobs(fake)
    assert len(sent) == 2 and requested(sent[1]) == []  # withdrawn: the idle nodes may go
    fake.set(sent[1]["submission_id"], "SUCCEEDED")
    for _ in range(3):
        ctx.controller.tick(refresh=True)
    assert len(demand_jobs(fake)) == 2
    status = client.get("/v1/status").json()
    assert "auto" in json.dumps(status)

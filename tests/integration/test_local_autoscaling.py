"""Demand-driven autoscaling on the local fake cluster (cluster/local.yaml).

A job that needs `gpu_node`, a resource the head lacks, makes the autoscaler add a
`gpu-fake` node; the job succeeds on it; the node goes after the idle timeout. The head is
started the way `trainyard up --autoscaling` starts it (render_local_config +
start_ray_head(autoscaling_config=...), which sets RAY_FAKE_CLUSTER=1), never with
ray.cluster_utils.AutoscalingCluster (its start() runs `ray stop --force`).

Times (submit -> node up, job end -> node down) are recorded, not asserted: they depend on
the machine's load. They land in <test_root>/autoscaling-times.json and in the JUnit
properties.
"""
from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
import urllib.request

import pytest

from trainyard.local.autoscaling import render_local_config
from trainyard.local.processes import free_port, start_ray_head, stop_ray_head

pytestmark = pytest.mark.integration

# generous: the head alone takes ~10 s on an idle 2-core machine and ~60 s on a loaded one
UP_TIMEOUT_S = 300
DOWN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def ray_head_fake_autoscaling(test_root):
    """A 1-CPU head with the fake multi-node autoscaler of cluster/local.yaml."""
    temp_dir = tempfile.mkdtemp(prefix="tyas-", dir="/tmp")  # short: unix socket paths
    gcs_port = free_port()
    config = render_local_config(f"127.0.0.1:{gcs_port}", out_dir=temp_dir, head_cpus=1)
    head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=1,
                          gcs_port=gcs_port, autoscaling_config=str(config),
                          log_file=test_root / "ray-autoscaling-start.log", timeout=180)
    try:
        yield head
    finally:
        stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _get(head, path: str) -> dict:
    req = urllib.request.Request(head.dashboard_url + path, headers=head.headers())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _alive_nodes(head) -> list[dict]:
    rows = _get(head, "/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]
    return [n for n in rows if n["state"] == "ALIVE"]


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")


@pytest.mark.slow  # nightly tier: the controller test covers the same path in every run
def test_a_job_needing_a_missing_resource_brings_a_node_up_and_down(ray_head_fake_autoscaling, test_root,
                                                                   record_property):
    from ray.job_submission import JobStatus, JobSubmissionClient

    head = ray_head_fake_autoscaling
    nodes = _alive_nodes(head)
    assert len(nodes) == 1 and "gpu_node" not in nodes[0]["resources_total"], nodes

    client = JobSubmissionClient(head.dashboard_url, headers=head.headers())
    t_submit = time.monotonic()
    job = client.submit_job(entrypoint="python -c \"print('ran on a gpu_node')\"",
                            entrypoint_resources={"gpu_node": 1})

    def gpu_node_up():
        return [n for n in _alive_nodes(head) if n["resources_total"].get("gpu_node")]

    added = _wait(gpu_node_up, UP_TIMEOUT_S, "the autoscaler adding a gpu_node node")
    t_up = time.monotonic()
    assert len(added) == 1

    status = _wait(lambda: (s := client.get_job_status(job)).is_terminal() and s,
                   UP_TIMEOUT_S, "the job finishing")
    t_end = time.monotonic()
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)
    assert "ran on a gpu_node" in client.get_job_logs(job)

    _wait(lambda: not gpu_node_up(), DOWN_TIMEOUT_S, "the idle gpu_node node going away")
    t_down = time.monotonic()
    assert len(_alive_nodes(head)) == 1

    times = {"submit_to_node_up_s": round(t_up - t_submit, 1),
             "submit_to_job_end_s": round(t_end - t_submit, 1),
             "job_end_to_node_down_s": round(t_down - t_end, 1)}
    for key, value in times.items():
        record_property(key, value)
    (test_root / "autoscaling-times.json").write_text(json.dumps(times))
    print("fake autoscaling:", json.dumps(times))

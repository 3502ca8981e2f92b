"""Several Ray clusters on one machine: each cluster's own processes know which one is theirs.

Ray's State API (and Train's placement-group cleaner, which asks it whether a trial's
controller is alive) refuses to guess the cluster where several run on one machine. The
heads that trainyard starts (`trainyard up`, the test fixtures) give every process they spawn
RAY_ADDRESS, so a worker of the second cluster finds its own.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.integration

_PROBE = """
import json, os, ray
ray.init()

@ray.remote(num_cpus=0)
def probe():
    from ray.util.state import list_nodes
    try:
        nodes = [n.node_id for n in list_nodes()]
        return {"address": os.environ.get("RAY_ADDRESS"), "nodes": nodes, "error": None}
    except Exception as exc:
        return {"address": os.environ.get("RAY_ADDRESS"), "nodes": None, "error": str(exc)}

print("PROBE " + json.dumps({**ray.get(probe.remote()), "driver_node": ray.get_runtime_context().get_node_id()}))
"""


def test_a_worker_of_a_second_cluster_on_the_machine_reaches_its_own(ray_head, test_root):
    from trainyard.local.processes import start_ray_head, stop_ray_head

    temp_dir = tempfile.mkdtemp(prefix="tyr2-", dir="/tmp")  # short: unix socket paths
    second = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=1,
                            log_file=test_root / "ray-second-start.log", timeout=180)
    try:
        # the first cluster (the session's) is up as well: two on this machine
        env = {**os.environ, **second.env()}
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        probe = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("PROBE "))[6:])
        assert probe["address"] == second.gcs_address, probe
        assert probe["error"] is None and probe["nodes"] == [probe["driver_node"]], probe
    finally:
        stop_ray_head(second)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_stopping_a_head_leaves_none_of_its_processes(test_root):
    """The dashboard and runtime-env agents retitle themselves (ray::DashboardAgent) and outlive
    a killed raylet as init's children: stop_ray_head must take them as well."""
    import psutil

    from trainyard.local.processes import ray_head_processes, start_ray_head, stop_ray_head

    temp_dir = tempfile.mkdtemp(prefix="tyr3-", dir="/tmp")
    head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=1,
                          log_file=test_root / "ray-stop-start.log", timeout=180)
    try:
        # a driver that used the head (a task with its own runtime env: the agents did work)
        env = {**os.environ, **head.env()}
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        procs = ray_head_processes(head)
        titles = {p.pid: p.name() for p in procs}
        assert len(procs) >= 3, titles  # GCS, raylet and the agents at least
    finally:
        left = stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)

    def alive(p):
        try:
            return p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    survivors = {p.pid: titles[p.pid] for p in procs if alive(p)}
    assert left == 0 and survivors == {}, survivors

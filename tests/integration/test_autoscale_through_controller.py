"""Demand-driven autoscaling through the Trainyard controller, on cluster/local.yaml.

1. A job needing the `gpu_node` resource (the head has none) is submitted to the server.
2. The controller asks the local cluster's autoscaler for it (a zero-CPU demand job running
   `python -m trainyard.clusters.demand_agent`); the fake autoscaler adds a gpu-fake node.
   The job's stand-in driver asks Ray for nothing until the node exists (a real trainer
   asks once it starts; the stand-in stays in the controller's request while it runs,
   TRAINYARD_DEMAND_RUNNING_GRACE_S), so that only the controller's request can have
   brought it up, and the demand job had ended by then: the request outlived its driver.
3. The job runs on that node and succeeds.
4. The controller withdraws the request; after the idle timeout the node is removed.
5. The times (submit -> node up, -> first step, job end -> node down) are recorded, not
   asserted: <test_root>/autoscale-demand-times.json and the JUnit properties.

The stack is the harness of benchmarks/autoscale.py: one fake-autoscaling head started the
way `trainyard up --autoscaling` starts it (never AutoscalingCluster, never `ray stop`), and
the real server process with TRAINYARD_RAY_AUTOSCALING_CONFIG pointing at the rendered config.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GPU_BUNDLE = {"CPU": 1.0, "gpu_node": 1.0}


def _harness():
    spec = importlib.util.spec_from_file_location("autoscale_bench", REPO / "benchmarks" / "autoscale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def autoscaling_stack(test_root):
    bench = _harness()
    stack = bench.Stack(test_root / "autoscale-demand", runner="standin")
    try:
        yield bench, stack.start()
    finally:
        stack.stop()


def test_a_queued_job_brings_a_node_up_through_the_controller_and_idle_takes_it_down(
        autoscaling_stack, test_root, record_property):
    bench, stack = autoscaling_stack
    local = next(c for c in stack.client().list_clusters() if c["name"] == "local")
    # the local cluster knows its maximum from cluster/local.yaml: head + cpu + 2 gpu-fake
    assert sorted(map(json.dumps, local["max_resources"]["nodes"])).count(json.dumps(GPU_BUNDLE)) == 2

    result = bench.measure(stack)

    job = result["job"]
    assert job["state"] == "SUCCEEDED", (job.get("message"), result["logs"])
    asks = [d for d in result["demands"] if d["bundles"]]
    withdrawals = [d for d in result["demands"] if not d["bundles"]]
    # asked once for the job's one worker, not again on every tick; then withdrawn once
    assert [d["bundles"] for d in asks] == [[GPU_BUNDLE]], result["demands"]
    assert asks[0]["status"] == "SUCCEEDED"
    # the demand job's driver was gone before the node came up: the request outlived it
    assert asks[0]["end_after_submit_s"] is not None
    assert asks[0]["end_after_submit_s"] <= result["node_up_after_submit_wall_s"]
    assert len(withdrawals) == 1 and withdrawals[0]["status"] == "SUCCEEDED"
    assert "STANDIN_NODES" in (result["logs"] or "")

    times = result["times"]
    for key, value in times.items():
        record_property(key, value)
    (test_root / "autoscale-demand-times.json").write_text(json.dumps(times))
    print("demand-driven autoscaling:", json.dumps(times))

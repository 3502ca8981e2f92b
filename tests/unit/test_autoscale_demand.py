"""Demand-driven autoscaling: which bundles the controller asks a cluster's autoscaler for.

Pure logic (trainyard.clusters.demand): no Ray, no store. The sender is driven with a fake
Jobs client that records submissions.
"""
from __future__ import annotations

import json
import shlex

import pytest

from trainyard.clusters.demand import (DemandSender, DemandTracker, agent_entrypoint, canonical,
                                       plan_demand)
from trainyard.clusters.demand_agent import parse
from trainyard.errors import ClusterError
from trainyard.scheduler import ClusterView, QueuedJob, schedule, subtract_reserved

HEAD = {"CPU": 1.0}
GPU_NODE = {"CPU": 1.0, "gpu_node": 1.0}
LOCAL_MAX = [{"CPU": 2.0}, {"CPU": 1.0}, GPU_NODE, GPU_NODE]  # cluster/local.yaml at its largest


def gpu_job(job_id="g", workers=1, cluster=None, seq=0.0):
    return QueuedJob(id=job_id, workers=workers, per_worker=dict(GPU_NODE), cluster=cluster, seq=seq)


def cpu_job(job_id="c", workers=1, cpus=1.0, seq=0.0):
    return QueuedJob(id=job_id, workers=workers, per_worker={"CPU": cpus}, seq=seq)


def view(name="local", nodes=(HEAD,), free=None, max_nodes=LOCAL_MAX, healthy=True):
    """What the scheduler sees while the cluster has only `nodes` (it waits for the rest)."""
    nodes = [dict(n) for n in nodes]
    return ClusterView(name=name, nodes_free=[dict(n) for n in (free or nodes)], nodes_total=nodes,
                       max_nodes=[dict(n) for n in max_nodes] if max_nodes is not None else None,
                       healthy=healthy)


def plan(queue, clusters, *, active=None, live=None):
    decisions = schedule(queue, clusters)
    live = live if live is not None else {c.name: c.nodes_total for c in clusters}
    return plan_demand(queue, decisions, clusters, active=active or {}, live_nodes=live)


# ----------------------------------------------------------------------------- plan_demand


def test_a_job_waiting_for_a_node_the_cluster_can_add_is_requested():
    demand = plan([gpu_job(workers=2)], [view()])["local"]
    assert demand.waiting == ("g",)
    assert demand.as_lists() == [GPU_NODE, GPU_NODE]  # one bundle per worker: gang
    assert not demand.fits_now


def test_jobs_already_on_the_cluster_are_part_of_the_request():
    # request_resources is a floor on the cluster's size, usage ignored: without the running
    # job's bundle, the waiting job would "fit" on the busy head and nothing would be added
    running = cpu_job("running", cpus=1.0)
    busy = view(nodes=[{"CPU": 1.0}], free=[{"CPU": 0.0}])
    demand = plan([cpu_job("next", seq=1.0)], [busy], active={"local": [running]})["local"]
    assert demand.waiting == ("next",) and demand.active == ("running",)
    assert demand.as_lists() == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert not demand.fits_now


def test_dispatched_jobs_whose_nodes_do_not_exist_yet_are_requested():
    # a scheduler that admits against the maximum dispatches at once; the job still needs a node
    demand = plan([], [view()], active={"local": [gpu_job()]})["local"]
    assert demand.as_lists() == [GPU_NODE] and not demand.fits_now


def test_running_jobs_ask_for_themselves_but_count_for_the_fit():
    # a trainer registers its own bundles with Ray's AutoscalingCoordinator; ours would double
    # them in the merged request. They still decide whether the cluster must grow.
    busy = view(nodes=[{"CPU": 1.0}], free=[{"CPU": 0.0}])
    decisions = schedule([cpu_job("next", seq=1.0)], [busy])
    demand = plan_demand([cpu_job("next", seq=1.0)], decisions, [busy], active={},
                         running={"local": [cpu_job("running")]}, live_nodes={"local": [{"CPU": 1.0}]})["local"]
    assert demand.as_lists() == [{"CPU": 1.0}] and demand.active == () and not demand.fits_now


def test_clusters_without_autoscaler_limits_get_no_demand():
    fixed = view(name="fixed", nodes=[{"CPU": 1.0}], free=[{"CPU": 0.0}], max_nodes=None)
    assert plan([cpu_job()], [fixed], active={"fixed": [cpu_job("r")]}) == {}


def test_a_waiting_job_counts_against_one_cluster_only():
    a = view(name="a", free=[{"CPU": 0.5}])
    b = view(name="b", free=[{"CPU": 0.9}])
    demands = plan([gpu_job()], [a, b])
    assert demands["b"].waiting == ("g",) and demands["a"].waiting == ()
    assert demands["a"].bundles == ()


def test_a_pinned_job_counts_against_its_cluster():
    demands = plan([gpu_job(cluster="a")], [view(name="a"), view(name="b")])
    assert demands["a"].waiting == ("g",) and demands["b"].bundles == ()


def test_rejected_and_unreachable_are_not_requested():
    too_big = gpu_job("huge", workers=3)  # local.yaml has 2 gpu-fake nodes at most
    demands = plan([too_big], [view()])
    assert demands["local"].bundles == ()
    demands = plan([gpu_job()], [view(healthy=False)])
    assert demands["local"].waiting == ()


def test_canonical_ignores_order_and_zero_amounts():
    assert canonical([{"CPU": 1, "gpu_node": 1}, {"CPU": 2}]) == canonical([{"CPU": 2.0}, {"gpu_node": 1.0, "CPU": 1.0, "GPU": 0}])


# ----------------------------------------------------------------------------- tracker


def demand_for(queue, active=None, nodes=(HEAD,)):
    reserved: dict[str, float] = {}
    for job in (active or {}).get("local", []):
        for key, value in job.total().items():
            reserved[key] = reserved.get(key, 0.0) + value
    free = subtract_reserved([dict(n) for n in nodes], [dict(n) for n in nodes], reserved)
    return plan(queue, [view(nodes=nodes, free=free)], active=active)


def test_tracker_sends_once_and_not_again_while_unchanged():
    tracker = DemandTracker()
    demands = demand_for([gpu_job()])
    first = tracker.to_send(demands, now=0)
    assert first == {"local": canonical([GPU_NODE])}
    tracker.started("local", first["local"])
    assert tracker.to_send(demands, now=1) == {}  # in flight: wait for it
    tracker.confirmed("local")
    for t in range(2, 10):
        assert tracker.to_send(demand_for([gpu_job()]), now=t) == {}


def test_tracker_follows_changes_and_withdraws_on_drain():
    tracker = DemandTracker()

    def step(demands, now):
        out = tracker.to_send(demands, now=now)
        for cluster, bundles in out.items():
            tracker.started(cluster, bundles)
            tracker.confirmed(cluster)
        return out

    assert step(demand_for([gpu_job()]), 0) == {"local": canonical([GPU_NODE])}
    # the node came up and the job was dispatched: the set is the same, nothing is sent, and
    # the request is kept (the job's workers may not be placed yet; an idle node goes fast)
    up = (HEAD, GPU_NODE)
    assert step(demand_for([], active={"local": [gpu_job()]}, nodes=up), 1) == {}
    # a second job joins while the first runs: the request grows to both
    both = demand_for([gpu_job("g2", seq=1.0)], active={"local": [gpu_job()]}, nodes=up)
    assert step(both, 2) == {"local": canonical([GPU_NODE, GPU_NODE])}
    # the first ends
    assert step(demand_for([], active={"local": [gpu_job("g2")]}, nodes=up), 3) == {"local": canonical([GPU_NODE])}
    # queue drained: withdraw, once
    assert step(demand_for([], nodes=up), 4) == {"local": ()}
    assert step(demand_for([], nodes=up), 5) == {}


def test_tracker_leaves_clusters_alone_when_everything_fits():
    tracker = DemandTracker()
    tracker.started("local", ())
    tracker.confirmed("local")  # nothing requested
    fits = demand_for([], active={"local": [cpu_job()]}, nodes=[{"CPU": 2.0}])
    assert fits["local"].fits_now
    assert tracker.to_send(fits, now=0) == {}


def test_tracker_withdraws_a_leftover_request_at_start():
    # a new server does not know what the previous one asked for: clear it once
    tracker = DemandTracker()
    assert tracker.to_send(demand_for([]), now=0) == {"local": ()}


def test_tracker_retries_a_failed_send_with_backoff():
    tracker = DemandTracker(retry_after_s=10)
    demands = demand_for([gpu_job()])
    tracker.started("local", tracker.to_send(demands, now=0)["local"])
    tracker.failed("local", now=1)
    assert tracker.to_send(demands, now=5) == {}
    assert tracker.to_send(demands, now=11) == {"local": canonical([GPU_NODE])}
    tracker.started("local", canonical([GPU_NODE]))
    tracker.failed("local", now=12)
    assert tracker.to_send(demands, now=25) == {}  # 20 s the second time
    assert tracker.to_send(demands, now=33) != {}


# ----------------------------------------------------------------------------- sender


class FakeJobs:
    def __init__(self):
        self.submitted: list[dict] = []
        self.statuses: dict[str, dict | None] = {}
        self.fail_submit = False

    def submit(self, **kwargs):
        if self.fail_submit:
            raise ClusterError("cluster 'local' is unreachable")
        self.submitted.append(kwargs)
        self.statuses[kwargs["submission_id"]] = {"status": "RUNNING"}
        return "submitted"

    def status(self, submission_id):
        return self.statuses.get(submission_id)

    def finish(self, status="SUCCEEDED"):
        for key in self.statuses:
            if self.statuses[key] and self.statuses[key]["status"] == "RUNNING":
                self.statuses[key] = {"status": status, "message": "boom" if status == "FAILED" else ""}

    def requested(self, index=-1):
        entry = self.submitted[index]["entrypoint"]
        return json.loads(shlex.split(entry)[-1])


def test_sender_submits_a_zero_cpu_demand_job_and_waits_for_it_before_the_next():
    jobs = FakeJobs()
    now = [0.0]
    sender = DemandSender(lambda name: jobs, clock=lambda: now[0])
    sender.update(demand_for([gpu_job(workers=2)]))
    assert len(jobs.submitted) == 1
    sub = jobs.submitted[0]
    assert sub["entrypoint_num_cpus"] == 0 and sub["submission_id"].startswith("trainyard-demand-local-")
    assert sub["entrypoint"].startswith("python -m trainyard.clusters.demand_agent ")
    assert jobs.requested() == [GPU_NODE, GPU_NODE]
    # the queue changes while the first demand job still runs: nothing is sent yet
    sender.update(demand_for([gpu_job(workers=1)]))
    assert len(jobs.submitted) == 1
    jobs.finish()
    sender.update(demand_for([gpu_job(workers=1)]))
    assert len(jobs.submitted) == 2 and jobs.requested() == [GPU_NODE]
    jobs.finish()
    for _ in range(5):
        sender.update(demand_for([gpu_job(workers=1)]))
    assert len(jobs.submitted) == 2  # unchanged: no churn
    sender.update(demand_for([]))
    assert len(jobs.submitted) == 3 and jobs.requested() == []  # drained: withdrawn
    jobs.finish()
    sender.update(demand_for([]))
    assert len(jobs.submitted) == 3


def test_sender_resends_after_a_failed_demand_job():
    jobs = FakeJobs()
    now = [0.0]
    sender = DemandSender(lambda name: jobs, clock=lambda: now[0], tracker=DemandTracker(retry_after_s=10))
    sender.update(demand_for([gpu_job()]))
    jobs.finish("FAILED")
    sender.update(demand_for([gpu_job()]))
    assert len(jobs.submitted) == 1
    now[0] = 11
    sender.update(demand_for([gpu_job()]))
    assert len(jobs.submitted) == 2 and jobs.requested() == [GPU_NODE]


def test_sender_survives_an_unreachable_cluster():
    jobs = FakeJobs()
    jobs.fail_submit = True
    sender = DemandSender(lambda name: jobs)
    assert sender.update(demand_for([gpu_job()])) == []


def test_agent_entrypoint_round_trips_through_the_shell():
    bundles = [{"CPU": 1.0, "accelerator_type:A100": 0.001, "GPU": 1.0}, {"it's": 1.0}]
    command = agent_entrypoint(bundles, python="/opt/venv/bin/python")
    argv = shlex.split(command)
    assert argv[:3] == ["/opt/venv/bin/python", "-m", "trainyard.clusters.demand_agent"]
    assert parse(argv[3:]) == bundles


def test_agent_refuses_malformed_input():
    with pytest.raises(SystemExit):
        parse(['{"CPU": 1}'])
    with pytest.raises(SystemExit):
        parse([])

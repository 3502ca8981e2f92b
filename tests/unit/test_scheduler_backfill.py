"""Backfill that cannot delay the head of the line; runtime estimates. Pure data."""
import pytest

from trainyard.scheduler import QueuedJob, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.backfill import commit, expected_end, may_backfill, reserve, runtime_estimate

from test_scheduler_quotas import gpu_cluster, gpu_job

NOW = 1000.0


def cpu_job(id, cpus, seq=0.0, **kw):
    return QueuedJob(id, 1, {"CPU": float(cpus)}, seq=seq, **kw)


def cpu_run(id, cpus, end_in=None, node=None, width=1, **kw):
    nodes = None
    if node is not None:
        nodes = tuple({"CPU": float(cpus)} if i == node else {} for i in range(width))
    return RunningJob(id, "p", "c", 1, {"CPU": float(cpus)}, started_at=NOW - 100,
                      max_runtime=None if end_in is None else 100 + end_in, nodes=nodes, **kw)


def test_expected_end_prefers_progress_over_declared_runtime():
    base = dict(id="r", project="p", cluster="c", workers=1, per_worker={"CPU": 1.0}, started_at=0.0)
    assert expected_end(RunningJob(**base, max_runtime=500), now=100) == 500
    assert expected_end(RunningJob(**base, max_runtime=500, progress=0.25), now=100) == 400  # 100 s for 25%
    assert expected_end(RunningJob(**base, progress=0.5, progress_rate=0.01), now=100) == 150
    assert expected_end(RunningJob(**base, max_runtime=50), now=100) == 100  # overdue: any moment now
    assert expected_end(RunningJob(**base, progress=1.0), now=100) == 100
    assert expected_end(RunningJob(**base), now=100) is None


def test_runtime_estimate_of_a_queued_job():
    assert runtime_estimate(cpu_job("j", 1, max_runtime=300)) == 300
    assert runtime_estimate(cpu_job("j", 1, max_runtime=300, progress=0.6, progress_rate=0.002)) == pytest.approx(200)
    assert runtime_estimate(cpu_job("j", 1)) is None


def test_reservation_is_the_earliest_time_the_head_fits():
    run = [cpu_run("r1", 2, end_in=50), cpu_run("r2", 2, end_in=10), cpu_run("r3", 4, end_in=500)]
    res = reserve(cpu_job("head", 4), "c", [{"CPU": 1.0}], run, now=NOW)
    assert res.start == NOW + 50  # 1 free + 2 (r2) < 4; + 2 (r1) = 5 >= 4
    # a running job without any estimate stops the search
    res = reserve(cpu_job("head", 4), "c", [{"CPU": 1.0}], [cpu_run("r", 8)], now=NOW)
    assert res.start is None


def test_backfill_a_job_that_ends_before_the_reservation():
    run = [cpu_run("r1", 3, end_in=100, node=0)]
    free = [{"CPU": 1.0}]
    res = reserve(cpu_job("head", 4), "c", free, run, now=NOW)
    left, at_start, why = may_backfill(cpu_job("short", 1, max_runtime=60), res, free, now=NOW)
    assert left == [{"CPU": 0.0}] and at_start is None and why == ""
    left, _, why = may_backfill(cpu_job("long", 1, max_runtime=600), res, free, now=NOW)
    assert left is None and "would delay" not in why and "behind job 'head'" in why
    left, _, why = may_backfill(cpu_job("unknown", 1), res, free, now=NOW)
    assert left is None and "no runtime estimate" in why


def test_backfill_a_job_that_fits_beside_the_head():
    # two nodes: the head needs node 0 whole (4 CPUs) when r1 ends; node 1 has room for others
    run = [cpu_run("r1", 4, end_in=100, node=0, width=2)]
    free = [{"CPU": 0.0}, {"CPU": 2.0}]
    res = reserve(cpu_job("head", 4), "c", free, run, now=NOW)
    assert res.start == NOW + 100
    left, at_start, _ = may_backfill(cpu_job("beside", 2), res, free, now=NOW)  # no estimate needed
    assert left is not None and at_start == [{"CPU": 4.0}, {"CPU": 0.0}]
    commit(res, "beside", at_start)
    assert res.backfilled == ["beside"]
    # with node 1 taken at the head's start, the head would not fit if node 0 were also used
    left, _, _ = may_backfill(cpu_job("more", 1), res, [{"CPU": 0.0}, {"CPU": 0.0}], now=NOW)
    assert left is None


def test_plan_tick_backfills_without_delaying_the_head():
    run = [RunningJob("r", "p", "c", 1, {"CPU": 1.0, "GPU": 6.0}, started_at=0, max_runtime=NOW + 3600)]
    queue = [gpu_job("head", gpus=4, seq=1, project="p"),
             gpu_job("short", gpus=2, seq=2, project="p", max_runtime=600),
             gpu_job("long", gpus=2, seq=3, project="p", max_runtime=7200)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=NOW)
    assert [d.job_id for d in plan.dispatch] == ["short"]
    assert "backfilled: ends before job 'head'" in plan.dispatch[0].reason
    head = plan.pending("head")
    assert head.reason.code == "capacity" and head.estimated_start == pytest.approx(NOW + 3600)
    assert plan.pending("long").reason.blocking_job == "head"


def test_plan_tick_without_backfill_holds_the_cluster_like_schedule():
    run = [RunningJob("r", "p", "c", 1, {"CPU": 1.0, "GPU": 6.0}, started_at=0, max_runtime=NOW + 3600)]
    queue = [gpu_job("head", gpus=4, seq=1, project="p"), gpu_job("short", gpus=2, seq=2, project="p", max_runtime=60)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=NOW,
                     config=TickConfig(backfill=False))
    assert plan.dispatch == [] and plan.pending("short").reason.code == "behind_job"


def test_no_backfill_when_the_head_start_is_unknown():
    run = [RunningJob("r", "p", "c", 1, {"CPU": 1.0, "GPU": 6.0}, started_at=0)]  # no estimate at all
    queue = [gpu_job("head", gpus=4, seq=1, project="p"), gpu_job("short", gpus=2, seq=2, project="p", max_runtime=60)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=NOW)
    assert plan.dispatch == []
    assert plan.pending("head").estimated_start is None
    assert "start cannot be estimated" in plan.pending("short").reason.message


def test_backfill_uses_a_resumed_jobs_progress_rate():
    run = [RunningJob("r", "p", "c", 1, {"CPU": 1.0, "GPU": 6.0}, started_at=0, progress=0.5, progress_rate=1 / 2000)]
    # r ends in 1000 s; the resumed job has 10% left at 1% per 60 s: 600 s
    queue = [gpu_job("head", gpus=4, seq=1, project="p"),
             gpu_job("resumed", gpus=2, seq=2, project="p", progress=0.9, progress_rate=1 / 6000)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=NOW)
    assert [d.job_id for d in plan.dispatch] == ["resumed"]


def test_without_placement_the_start_is_hopeful_and_beside_is_sure():
    # r's two 2-CPU workers may free 4 CPUs on one node (hopeful) or 2 on each of two (sure)
    run = [RunningJob("r", "p", "c", 2, {"CPU": 2.0}, started_at=NOW - 100, max_runtime=200)]
    free = [{"CPU": 1.0}]
    res = reserve(cpu_job("head", 4), "c", free, run, now=NOW)
    assert res.start == NOW + 100
    assert res.nodes_at_start == [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 2.0}]
    left, _, why = may_backfill(cpu_job("beside", 1), res, free, now=NOW)
    assert left is None  # not sure to leave the head room
    left, _, _ = may_backfill(cpu_job("short", 1, max_runtime=50), res, free, now=NOW)
    assert left is not None


def test_estimates_are_capped_by_max_runtime_and_ignore_nonsense():
    base = dict(id="r", project="p", cluster="c", workers=1, per_worker={"CPU": 1.0}, started_at=0.0)
    # progress says 1000 s more, but the job is stopped at its max_runtime of 300
    assert expected_end(RunningJob(**base, max_runtime=300, progress=0.1), now=100) == 300
    assert expected_end(RunningJob(**base, progress=float("nan"), max_runtime=300), now=100) == 300
    assert expected_end(RunningJob(**base, progress=0.5, progress_rate=-1.0), now=100) == 200
    assert runtime_estimate(cpu_job("j", 1, max_runtime=-5)) is None
    assert runtime_estimate(cpu_job("j", 1, progress=3.0, progress_rate=0.01)) == 0.0
    assert runtime_estimate(cpu_job("j", 1, max_runtime=60, progress_rate=0.0001)) == 60

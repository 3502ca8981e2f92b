"""Why pending: a structured reason, positions and an estimated start for every queued job."""
from trainyard.scheduler import (ClusterView, Project, Quota, QueuedJob, RunningJob, SchedulerHooks, TickConfig,
                                 plan_tick, schedule)
from trainyard.scheduler.reasons import (BEHIND_JOB, CAPACITY, CODES, FAIR_SHARE, QUOTA, Pending, Reason)

from test_scheduler_quotas import gpu_cluster, gpu_job

NOW = 5000.0


def full_cluster(name="c", end_at=NOW + 1800):
    run = RunningJob(f"{name}-run", "x", name, 1, {"CPU": 1.0, "GPU": 8.0}, started_at=0, max_runtime=end_at)
    return gpu_cluster(name, free_gpus=[0]), run


def test_every_queued_job_gets_exactly_one_outcome_with_a_known_code():
    c, run = full_cluster()
    queue = [gpu_job(f"{p}{i}", project=p, seq=i * 3 + k) for k, p in enumerate("abc") for i in range(5)]
    queue.append(gpu_job("over", project="q", gpus=4))
    plan = plan_tick(queue, running=[run], clusters=[c], now=NOW,
                     projects=[Project("q", quota=Quota(nominal={"GPU": 1}, borrowing_limit={"GPU": 0}))])
    seen = [d.job_id for d in plan.dispatch] + [p.job_id for p in plan.wait] + [r.job_id for r in plan.reject]
    assert sorted(seen) == sorted(j.id for j in queue) and len(seen) == len(set(seen))
    assert all(p.reason.code in CODES for p in plan.wait)
    assert plan.pending("over").reason.code == QUOTA
    assert [d.job_id for d in plan.decisions()] == plan.order


def test_positions_in_queue_project_and_cluster():
    c, run = full_cluster()
    queue = [gpu_job("a1", project="a", seq=1), gpu_job("a2", project="a", seq=2), gpu_job("b1", project="b", seq=3)]
    plan = plan_tick(queue, running=[run], clusters=[c], now=NOW, config=TickConfig(fair_share=False))
    got = {p.job_id: (p.position_in_queue, p.position_in_project, p.position_in_cluster) for p in plan.wait}
    assert got == {"a1": (1, 1, 1), "a2": (2, 2, 2), "b1": (3, 1, 3)}


def test_cluster_position_counts_only_jobs_that_may_use_that_cluster():
    a, run_a = full_cluster("a")
    b, run_b = full_cluster("b")
    queue = [gpu_job("on-a", cluster="a", seq=1), gpu_job("on-b", cluster="b", seq=2),
             gpu_job("on-b-2", cluster="b", seq=3)]
    plan = plan_tick(queue, running=[run_a, run_b], clusters=[a, b], now=NOW, config=TickConfig(fair_share=False))
    assert plan.pending("on-b-2").position_in_cluster == 2 and plan.pending("on-b-2").position_in_queue == 3


def test_head_gets_an_estimated_start_from_running_jobs_ends():
    c, run = full_cluster(end_at=NOW + 1800)
    plan = plan_tick([gpu_job("head", gpus=4)], running=[run], clusters=[c], now=NOW)
    pending = plan.pending("head")
    assert pending.reason.code == CAPACITY and pending.reason.cluster == "c"
    assert pending.estimated_start == NOW + 1800
    assert "first in line on cluster 'c'" in pending.reason.message and "4 GPUs" in pending.reason.message


def test_behind_job_names_the_job_ahead():
    c, run = full_cluster()
    plan = plan_tick([gpu_job("first", seq=1, project="a"), gpu_job("second", seq=2, project="a")],
                     running=[run], clusters=[c], now=NOW)
    reason = plan.pending("second").reason
    assert reason.code == BEHIND_JOB and reason.blocking_job == "first" and reason.cluster == "c"


def test_higher_priority_goes_ahead_across_projects_before_fair_share():
    c, run = full_cluster()
    queue = [gpu_job("routine", project="under", seq=1), gpu_job("urgent", project="over", seq=2, priority=9)]
    held = [RunningJob("o", "over", "elsewhere", 1, {"GPU": 8.0})]
    plan = plan_tick(queue, running=[run, *held], clusters=[c], now=NOW, config=TickConfig(preemption=False))
    assert plan.order == ["urgent", "routine"]
    assert plan.pending("routine").reason.code == BEHIND_JOB  # priority, not fair share, put it behind


def test_reasons_and_pendings_serialize_for_the_api():
    reason = Reason(FAIR_SHARE, "behind", cluster="c", blocking_job="x")
    assert reason.to_dict() == {"code": "fair_share", "message": "behind", "cluster": "c", "blocking_job": "x"}
    body = Pending("j", Reason("preempting", "m", victims=("v",)), 1, 1).to_dict()
    assert body["reason"]["victims"] == ["v"] and body["estimated_start"] is None


def test_schedule_admit_hook_holds_a_job_without_blocking_the_line():
    c = ClusterView("local", nodes_free=[{"CPU": 2.0}], nodes_total=[{"CPU": 2.0}])
    hooks = SchedulerHooks(admit=lambda job, cluster: "project 'x' is over its quota" if job.project == "x" else None)
    queue = [QueuedJob("held", 1, {"CPU": 1.0}, seq=1, project="x"), QueuedJob("next", 1, {"CPU": 1.0}, seq=2)]
    decisions = {d.job_id: d for d in schedule(queue, [c], hooks=hooks)}
    assert decisions["held"].action == "wait" and "over its quota" in decisions["held"].reason
    assert decisions["next"].action == "dispatch"


def test_forecast_finds_the_first_lasting_slot():
    from trainyard.scheduler.eta import Forecast
    f = Forecast([{"GPU": 2.0}], now=0.0)
    f.release(100.0, {"GPU": 2.0})
    f.release(None, {"GPU": 8.0})  # no expected end: never counted on
    assert f.earliest({"GPU": 2.0}, not_before=0.0) == 0.0
    assert f.earliest({"GPU": 4.0}, not_before=0.0) == 100.0
    assert f.earliest({"GPU": 5.0}, not_before=0.0) is None
    f.claim(100.0, 50.0, {"GPU": 4.0})  # someone ahead takes all 4 from 100 to 150
    assert f.earliest({"GPU": 4.0}, not_before=0.0) == 150.0
    assert f.earliest({"GPU": 2.0}, not_before=0.0) == 150.0  # 2 free now, but not for good
    assert f.earliest({"GPU": 1.0}, not_before=200.0) == 200.0


def test_jobs_behind_the_head_get_estimates_in_line_order():
    c = gpu_cluster("c", free_gpus=[0])
    run = [RunningJob("r1", "x", "c", 1, {"CPU": 1.0, "GPU": 4.0}, started_at=0, max_runtime=NOW + 600),
           RunningJob("r2", "x", "c", 1, {"CPU": 1.0, "GPU": 4.0}, started_at=0, max_runtime=NOW + 1200)]
    queue = [gpu_job("head", gpus=4, seq=1, max_runtime=3600), gpu_job("second", gpus=4, seq=2, max_runtime=600),
             gpu_job("third", gpus=8, seq=3)]
    config = TickConfig(fair_share=False, backfill=False)
    plan = plan_tick(queue, running=run, clusters=[c], now=NOW, config=config)
    starts = {p.job_id: p.estimated_start for p in plan.wait}
    assert starts == {"head": NOW + 600, "second": NOW + 1200, "third": NOW + 600 + 3600}
    plan = plan_tick(queue, running=run, clusters=[c], now=NOW,
                     config=TickConfig(fair_share=False, backfill=False, eta_depth=1))
    assert {p.job_id: p.estimated_start for p in plan.wait} == {"head": NOW + 600, "second": None, "third": None}


def test_no_estimate_behind_a_job_that_has_none():
    c = gpu_cluster("c", free_gpus=[0])
    run = [RunningJob("forever", "x", "c", 1, {"CPU": 1.0, "GPU": 8.0}, started_at=0)]
    plan = plan_tick([gpu_job("head", seq=1), gpu_job("next", seq=2)], running=run, clusters=[c], now=NOW,
                     config=TickConfig(preemption=False))
    assert [p.estimated_start for p in plan.wait] == [None, None]


def test_a_preempting_job_is_estimated_to_start_once_its_victims_leave():
    c = gpu_cluster("c", free_gpus=[0])
    run = [RunningJob("low", "x", "c", 1, {"CPU": 1.0, "GPU": 8.0}, started_at=0)]
    plan = plan_tick([gpu_job("urgent", priority=5)], running=run, clusters=[c], now=NOW)
    assert plan.pending("urgent").reason.code == "preempting" and plan.pending("urgent").estimated_start == NOW


def test_capacity_reason_names_what_is_short_or_the_fragmentation():
    c, run = full_cluster()
    plan = plan_tick([gpu_job("head", gpus=4, workers=2)], running=[run], clusters=[c], now=NOW)
    assert plan.pending("head").reason.message == "first in line on cluster 'c': the job needs 8 GPUs, 0 free"
    split = ClusterView("s", nodes_free=[{"CPU": 2.0}, {"CPU": 2.0}], nodes_total=[{"CPU": 4.0}, {"CPU": 4.0}])
    run = [RunningJob("r", "x", "s", 2, {"CPU": 2.0}, max_runtime=60)]
    plan = plan_tick([QueuedJob("wide", 1, {"CPU": 3.0})], running=run, clusters=[split], now=NOW)
    assert "no set of nodes has room for its 1 worker(s) of 3 CPUs each" in plan.pending("wide").reason.message

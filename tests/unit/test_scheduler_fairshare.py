"""Weighted dominant-resource fairness across projects, and the day-long simulation. Pure data."""
import pytest

from trainyard.scheduler import Project, QueuedJob, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.fairshare import FairQueue, dominant_share, fair_order
from trainyard.scheduler.reasons import FAIR_SHARE
from trainyard.scheduler.simulate import simulate_fair_share

from test_scheduler_quotas import gpu_cluster, gpu_job, running


def ids(jobs):
    return [j.id for j in jobs]


def test_dominant_share_is_the_largest_fraction_over_the_weight():
    cap = {"CPU": 100.0, "GPU": 10.0}
    assert dominant_share({"CPU": 10.0, "GPU": 5.0}, cap) == 0.5
    assert dominant_share({"CPU": 60.0, "GPU": 1.0}, cap, weight=2.0) == 0.3
    assert dominant_share({"custom": 5.0}, cap) == 0.0  # no capacity of it: no share


def test_within_a_project_priority_then_fifo():
    jobs = [gpu_job("a1", seq=3), gpu_job("a2", seq=1), gpu_job("a3", seq=2, priority=5), gpu_job("a4", seq=0)]
    assert ids(fair_order(jobs, held={}, capacity={"GPU": 8}, weights={})) == ["a3", "a4", "a2", "a1"]


def test_a_project_under_its_share_goes_ahead():
    jobs = [gpu_job("heavy-1", project="heavy", seq=1), gpu_job("light-1", project="light", seq=2)]
    held = {"heavy": {"GPU": 4.0}}
    assert ids(fair_order(jobs, held=held, capacity={"GPU": 8}, weights={})) == ["light-1", "heavy-1"]
    # a weight of 4 puts 'heavy' (4 GPUs = 0.5 / 4) under 'light' holding 2 (0.25)
    held = {"heavy": {"GPU": 4.0}, "light": {"GPU": 2.0}}
    assert ids(fair_order(jobs, held=held, capacity={"GPU": 8}, weights={"heavy": 4})) == ["heavy-1", "light-1"]


def test_dominant_resource_decides():
    # cpu-heavy holds 50% of CPUs and no GPU; gpu-light holds 25% of GPUs: gpu-light is further under
    jobs = [gpu_job("cpu-1", project="cpu-heavy", seq=1), gpu_job("gpu-1", project="gpu-light", seq=2)]
    held = {"cpu-heavy": {"CPU": 16.0}, "gpu-light": {"GPU": 2.0}}
    assert ids(fair_order(jobs, held=held, capacity={"CPU": 32, "GPU": 8}, weights={}))[0] == "gpu-1"


def test_order_interleaves_by_weight():
    jobs = [QueuedJob(f"{p}{i}", 1, {"GPU": 1.0}, seq=float(i), project=p) for p in "abc" for i in range(6)]
    order = ids(fair_order(jobs, held={}, capacity={"GPU": 12}, weights={"a": 1, "b": 1, "c": 2}))
    first8 = order[:8]
    assert sum(j.startswith("c") for j in first8) == 4 and sum(j.startswith("a") for j in first8) == 2


def test_a_waiting_job_does_not_raise_its_projects_share():
    jobs = [gpu_job("a1", project="a", seq=1), gpu_job("a2", project="a", seq=3), gpu_job("b1", project="b", seq=2)]
    held = {"b": {"GPU": 1.0}}
    fq = FairQueue(jobs, held=held, capacity={"GPU": 8}, weights={})
    seen = []
    for job in fq:  # nothing admitted: 'a' stays lowest and its jobs come back to back
        seen.append(job.id)
    assert seen == ["a1", "a2", "b1"]
    fq = FairQueue(jobs, held=held, capacity={"GPU": 8}, weights={})
    seen = []
    for job in fq:  # a1 admitted: 'a' and 'b' now tie, and b1 was submitted first
        seen.append(job.id)
        fq.admitted(job)
    assert seen == ["a1", "b1", "a2"]


def test_ordering_ten_thousand_jobs_is_n_log_n(monkeypatch):
    import trainyard.scheduler.fairshare as fs
    calls = {"n": 0}
    real = fs.dominant_share

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "dominant_share", counting)
    jobs = [QueuedJob(f"j{i}", 1, {"GPU": 1.0}, seq=float(i), project=f"p{i % 10}") for i in range(10_000)]
    order = fair_order(jobs, held={}, capacity={"GPU": 64}, weights={"p0": 3})
    assert len(order) == 10_000 and len({j.id for j in order}) == 10_000
    assert calls["n"] <= 10_000 + 10  # one share per job taken: linear in the queue, not quadratic


def test_plan_tick_explains_a_fair_share_wait():
    # 'b' holds 6 of 8 GPUs; 'a' holds none, so a's 4-GPU job is first and reserves the cluster
    run = [running("b-run", "b", gpus=6, max_runtime=3600)]
    queue = [gpu_job("b-next", gpus=2, project="b", seq=1), gpu_job("a-big", gpus=4, project="a", seq=2)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=0.0,
                     config=TickConfig(backfill=False))
    assert plan.order == ["a-big", "b-next"]
    assert plan.pending("a-big").reason.code == "capacity"
    reason = plan.pending("b-next").reason
    assert reason.code == FAIR_SHARE and reason.blocking_job == "a-big"
    assert "project 'a' is further under its fair share" in reason.message


def test_fair_share_off_keeps_priority_then_fifo():
    run = [running("b-run", "b", gpus=6)]
    queue = [gpu_job("b-next", gpus=2, project="b", seq=1), gpu_job("a-big", gpus=4, project="a", seq=2)]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[2])], now=0.0,
                     config=TickConfig(fair_share=False))
    assert plan.order == ["b-next", "a-big"] and [d.job_id for d in plan.dispatch] == ["b-next"]


def test_simulated_day_converges_to_the_weights():
    result = simulate_fair_share({"a": 1, "b": 1, "c": 2}, hours=24, seed=7)
    assert result.utilization > 0.9  # the cluster stays busy
    assert result.jobs_started > 300
    for project, target in {"a": 0.25, "b": 0.25, "c": 0.5}.items():
        assert result.shares[project] == pytest.approx(target, rel=0.05), result.shares


def test_simulation_is_deterministic_and_weights_matter():
    one = simulate_fair_share({"a": 1, "b": 3}, hours=6, seed=1)
    assert one == simulate_fair_share({"a": 1, "b": 3}, hours=6, seed=1)
    assert one.shares["b"] > 2 * one.shares["a"]


def test_projects_accept_a_list_or_a_mapping():
    queue = [gpu_job("a1", project="a")]
    plan_list = plan_tick(queue, clusters=[gpu_cluster()], projects=[Project("a", weight=2)], now=0.0)
    plan_map = plan_tick(queue, clusters=[gpu_cluster()], projects={"a": Project("a", weight=2)}, now=0.0)
    assert plan_list.dispatch == plan_map.dispatch


def test_running_job_in_a_project_counts_toward_its_share():
    run = [RunningJob("r", "a", "c", 1, {"GPU": 4.0})]
    queue = [gpu_job("a1", project="a", seq=1), gpu_job("b1", project="b", seq=2)]
    assert plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[4])], now=0.0).order == ["b1", "a1"]

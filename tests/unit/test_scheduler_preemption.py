"""Preemption: priority and reclaim, min_runtime, fewest/cheapest victims. Pure data."""
import pytest

from trainyard.errors import SpecError
from trainyard.scheduler import Project, QueuedJob, Quota, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.model import capacity_of
from trainyard.scheduler.preemption import PRIORITY, RECLAIM, choose_victims
from trainyard.scheduler.quotas import QuotaLedger
from trainyard.scheduler.reasons import PREEMPTING

from test_scheduler_quotas import gpu_cluster, gpu_job, running

NOW = 10_000.0
CFG = TickConfig(min_runtime_s=600)


def victims(job, run, free_gpus, ledger=None, config=CFG, taken=frozenset()):
    free = [{"CPU": 32.0, "GPU": float(g)} for g in free_gpus]
    return choose_victims(job, cluster="c", free=free, running=run, now=NOW, config=config, ledger=ledger, taken=taken)


def test_higher_priority_preempts_lower_priority():
    run = [running("low", "b", gpus=4, started_at=0, priority=0),
           running("same", "b", gpus=4, started_at=0, priority=5)]
    found = victims(gpu_job("urgent", gpus=4, priority=5), run, [0])
    assert [(v.job_id, v.kind, v.for_job) for v in found] == [("low", PRIORITY, "urgent")]
    assert "priority 5 > 0" in found[0].reason


def test_no_victim_below_min_runtime():
    run = [running("young", "b", gpus=8, started_at=NOW - 599, priority=0)]
    assert victims(gpu_job("urgent", gpus=4, priority=5), run, [0]) == []
    run = [running("old", "b", gpus=8, started_at=NOW - 600, priority=0)]
    assert [v.job_id for v in victims(gpu_job("urgent", gpus=4, priority=5), run, [0])] == ["old"]
    # min_runtime is configurable
    assert victims(gpu_job("urgent", gpus=4, priority=5), run, [0], config=TickConfig(min_runtime_s=3600)) == []


def test_equal_or_higher_priority_and_non_preemptible_jobs_are_safe():
    run = [running("peer", "b", gpus=4, started_at=0, priority=5),
           running("pinned", "b", gpus=4, started_at=0, priority=0, preemptible=False)]
    assert victims(gpu_job("j", gpus=4, priority=5), run, [0]) == []


def test_fewest_victims_a_single_big_one_beats_many_small():
    run = [running("s1", "b", gpus=1, started_at=100), running("s2", "b", gpus=1, started_at=200),
           running("s3", "b", gpus=1, started_at=300), running("s4", "b", gpus=1, started_at=400),
           running("big", "b", gpus=4, started_at=50)]
    found = victims(gpu_job("urgent", gpus=4, priority=1), run, [0])
    assert [v.job_id for v in found] == ["big"]


def test_cheapest_victims_lowest_priority_then_most_recent():
    run = [running("p1-old", "b", gpus=2, started_at=100, priority=1),
           running("p0-old", "b", gpus=2, started_at=100, priority=0),
           running("p0-new", "b", gpus=2, started_at=5000, priority=0),
           running("p1-new", "b", gpus=2, started_at=5000, priority=1)]
    found = victims(gpu_job("urgent", gpus=4, priority=9), run, [0])
    assert sorted(v.job_id for v in found) == ["p0-new", "p0-old"]
    found = victims(gpu_job("urgent", gpus=2, priority=9), run, [0])
    assert [v.job_id for v in found] == ["p0-new"]


def test_unneeded_victims_are_dropped():
    # greedy takes the 1-GPU job first, then the 3-GPU one; together they free 4 but the 3 alone
    # plus the 1 free GPU suffice, so the first is dropped
    run = [running("one", "b", gpus=1, started_at=5000), running("three", "b", gpus=3, started_at=100)]
    found = victims(gpu_job("urgent", gpus=4, priority=1), run, [1])
    assert [v.job_id for v in found] == ["three"]


def test_nothing_is_preempted_when_even_all_victims_do_not_make_it_fit():
    run = [running("low", "b", gpus=2, started_at=0)]
    assert victims(gpu_job("urgent", gpus=8, priority=1), run, [0]) == []


def test_victims_already_taken_this_tick_are_skipped():
    run = [running("low", "b", gpus=4, started_at=0)]
    assert victims(gpu_job("urgent", gpus=4, priority=1), run, [0], taken={"low"}) == []


def test_gang_must_fit_per_node():
    # two victims free 2 GPUs on each of two nodes: a 4-GPU worker still does not fit
    run = [running("v1", "b", gpus=2, started_at=0, nodes=({"CPU": 1.0, "GPU": 2.0}, {})),
           running("v2", "b", gpus=2, started_at=0, nodes=({}, {"CPU": 1.0, "GPU": 2.0}))]
    assert victims(gpu_job("urgent", gpus=4, priority=1), run, [0, 0]) == []
    # but two 2-GPU workers do
    assert len(victims(gpu_job("urgent", gpus=2, workers=2, priority=1), run, [0, 0])) == 2


def _ledger(run):
    quotas = {"a": Quota(nominal={"GPU": 4}), "b": Quota(nominal={"GPU": 4})}
    return QuotaLedger(quotas, capacity_of([[{"CPU": 32.0, "GPU": 8.0}]]), run)


def test_a_project_reclaims_its_guaranteed_share_from_a_borrower():
    run = [running("b1", "b", gpus=4, started_at=0), running("b2", "b", gpus=4, started_at=100)]
    ledger = _ledger(run)  # b holds 8 against a nominal of 4: it borrows a's 4
    found = victims(gpu_job("a1", gpus=4, project="a"), run, [0], ledger=ledger)
    assert [(v.job_id, v.kind) for v in found] == [("b2", RECLAIM)]
    assert "reclaims its guaranteed share" in found[0].reason


def test_no_reclaim_beyond_nominal_or_from_a_project_within_its_own():
    run = [running("b1", "b", gpus=4, started_at=0), running("a0", "a", gpus=4, started_at=0)]
    ledger = _ledger(run)
    # a already holds its nominal: another 4 GPUs would be borrowing, not reclaiming
    assert victims(gpu_job("a1", gpus=4, project="a"), run, [0], ledger=ledger) == []


def test_reclaim_stops_once_the_borrower_is_back_within_nominal():
    run = [running("b1", "b", gpus=2, started_at=0), running("b2", "b", gpus=2, started_at=10),
           running("b3", "b", gpus=2, started_at=20)]
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 4}), "b": Quota(nominal={"GPU": 4})},
                         {"GPU": 8.0, "CPU": 32.0}, run)
    # b borrows 2; freeing 4 for a would take b below its own nominal: only one job may go
    assert victims(gpu_job("a1", gpus=4, project="a"), run, [2], ledger=ledger)[0].job_id == "b3"
    assert victims(gpu_job("a1", gpus=4, project="a"), run, [0], ledger=ledger) == []


def test_plan_tick_preempts_and_holds_the_cluster_for_the_preemptor():
    run = [running("low", "b", gpus=8, started_at=0, max_runtime=10**6)]
    queue = [gpu_job("urgent", gpus=4, priority=5, seq=1, project="a"), gpu_job("small", gpus=1, seq=2, project="c")]
    plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[0])], now=NOW)
    assert [(p.job_id, p.for_job) for p in plan.preempt] == [("low", "urgent")]
    pending = plan.pending("urgent")
    assert pending.reason.code == PREEMPTING and pending.reason.victims == ("low",)
    assert plan.pending("small").reason.blocking_job == "urgent"
    assert plan.dispatch == []


def test_plan_tick_caps_victims_per_tick_and_can_turn_preemption_off():
    run = [running("low", "b", gpus=8, started_at=0)]
    queue = [gpu_job("urgent", gpus=4, priority=5)]
    for config in (TickConfig(preemption=False), TickConfig(max_victims_per_tick=0)):
        plan = plan_tick(queue, running=run, clusters=[gpu_cluster(free_gpus=[0])], now=NOW, config=config)
        assert plan.preempt == [] and plan.pending("urgent").reason.code == "capacity"


def test_plan_tick_reclaims_for_a_project_within_its_quota():
    projects = [Project("a", quota=Quota(nominal={"GPU": 4})), Project("b", quota=Quota(nominal={"GPU": 4}))]
    run = [running("b1", "b", gpus=4, started_at=0), running("b2", "b", gpus=4, started_at=100)]
    plan = plan_tick([gpu_job("a1", gpus=4, project="a")], running=run, clusters=[gpu_cluster(free_gpus=[0])],
                     projects=projects, now=NOW)
    assert [(p.job_id, p.kind) for p in plan.preempt] == [("b2", RECLAIM)]


def test_bad_config_is_refused():
    with pytest.raises(SpecError) as err:
        plan_tick([], now=0.0, config=TickConfig(min_runtime_s=-1))
    assert err.value.field == "scheduler.min_runtime_s"
    with pytest.raises(SpecError) as err:
        plan_tick([], now=0.0, config=TickConfig(max_victims_per_tick=True))
    assert err.value.field == "scheduler.max_victims_per_tick"


def test_jobs_may_start_beside_a_preempting_job_but_not_in_its_way():
    low = running("low", "b", gpus=8, started_at=0, nodes=({"CPU": 1.0, "GPU": 8.0}, {}))
    c = gpu_cluster(nodes=2, free_gpus=[0, 2])
    queue = [gpu_job("urgent", gpus=8, priority=5, seq=1, project="a"), gpu_job("beside", gpus=2, seq=2, project="c")]
    plan = plan_tick(queue, running=[low], clusters=[c], now=NOW)
    assert [p.job_id for p in plan.preempt] == ["low"]
    assert [d.job_id for d in plan.dispatch] == ["beside"] and "fits beside job 'urgent'" in plan.dispatch[0].reason


def test_a_job_reclaims_only_what_its_project_is_guaranteed():
    run = [running("b1", "b", gpus=4, started_at=0), running("b2", "b", gpus=4, started_at=100)]
    ledger = _ledger(run)
    cpu_only = QueuedJob("a-cpu", 1, {"CPU": 40.0}, project="a")  # a's quota guarantees GPUs, not CPUs
    assert not ledger.within_nominal("a", {"CPU": 40.0})
    assert victims(cpu_only, run, [0], ledger=ledger) == []


def test_without_placement_victims_are_counted_one_worker_per_node():
    # a 2-worker victim of 2 GPUs each might sit on two nodes: it is not counted on to free 4 on one
    two_workers = RunningJob("v", "b", "c", 2, {"CPU": 1.0, "GPU": 2.0}, started_at=0)
    assert two_workers.freed_nodes(merged=False) == [{"CPU": 1.0, "GPU": 2.0}] * 2
    assert two_workers.freed_nodes() == [{"CPU": 2.0, "GPU": 4.0}]
    assert victims(gpu_job("urgent", gpus=4, priority=1), [two_workers], [0]) == []
    assert victims(gpu_job("urgent", gpus=2, workers=2, priority=1), [two_workers], [0]) != []

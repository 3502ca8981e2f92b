"""Project quotas (Kueue-style nominal, borrowing and lending limits). Pure data."""
import pytest

from trainyard.errors import SpecError
from trainyard.scheduler import ClusterView, Project, Quota, QueuedJob, RunningJob, plan_tick
from trainyard.scheduler.model import demand_of, node_accounting
from trainyard.scheduler.quotas import QuotaLedger
from trainyard.scheduler.reasons import QUOTA


def gpu_job(id, gpus=1, project="a", seq=0.0, priority=0, workers=1, **kw):
    return QueuedJob(id=id, workers=workers, per_worker={"CPU": 1.0, "GPU": float(gpus)}, seq=seq, project=project,
                     priority=priority, **kw)


def running(id, project, gpus=1, cluster="c", started_at=0.0, priority=0, **kw):
    return RunningJob(id=id, project=project, cluster=cluster, workers=1, per_worker={"CPU": 1.0, "GPU": float(gpus)},
                      started_at=started_at, priority=priority, **kw)


def gpu_cluster(name="c", nodes=1, gpus=8, free_gpus=None, **kw):
    total = [{"CPU": 32.0, "GPU": float(gpus)} for _ in range(nodes)]
    free = [dict(n) for n in total]
    if free_gpus is not None:
        free = [{"CPU": 32.0, "GPU": float(g)} for g in free_gpus]
    return ClusterView(name, nodes_free=free, nodes_total=total, **kw)


CAP = {"GPU": 8.0, "CPU": 32.0}


def test_within_nominal_is_always_allowed():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 4})}, CAP)
    assert ledger.check("a", {"GPU": 4.0}) is None
    assert ledger.within_nominal("a", {"GPU": 4.0})
    assert not ledger.within_nominal("a", {"GPU": 5.0})


def test_borrowing_limit_caps_use_beyond_nominal():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 2}, borrowing_limit={"GPU": 2})}, CAP)
    assert ledger.check("a", {"GPU": 4.0}) is None  # 2 nominal + 2 borrowed of idle capacity
    reason = ledger.check("a", {"GPU": 5.0})
    assert reason.code == QUOTA and reason.resource == "GPU"
    assert "quota allows 2 plus 2 borrowed" in reason.message


def test_borrowing_is_limited_to_what_others_do_not_guard():
    quotas = {"a": Quota(nominal={"GPU": 2}), "b": Quota(nominal={"GPU": 6}, lending_limit={"GPU": 2})}
    ledger = QuotaLedger(quotas, CAP)
    # b lends at most 2 of its 6 idle GPUs: a may reach 4, not 5
    assert ledger.check("a", {"GPU": 4.0}) is None
    reason = ledger.check("a", {"GPU": 5.0})
    assert reason.code == QUOTA and "only 2 GPU is idle to borrow" in reason.message


def test_without_lending_limit_all_idle_nominal_may_be_borrowed():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 2}), "b": Quota(nominal={"GPU": 6})}, CAP)
    assert ledger.check("a", {"GPU": 8.0}) is None
    # once b uses its own, a cannot borrow it
    ledger.add("b", {"GPU": 5.0})
    assert ledger.check("a", {"GPU": 3.0}) is None
    assert ledger.check("a", {"GPU": 4.0}).code == QUOTA


def test_unassigned_capacity_is_idle_and_borrowable():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 2})}, CAP)  # 6 GPUs belong to nobody
    assert ledger.check("a", {"GPU": 8.0}) is None
    ledger.add("free-rider", {"GPU": 3.0})  # a project without quota uses some
    assert ledger.check("a", {"GPU": 6.0}).code == QUOTA


def test_ledger_is_incremental_and_reversible():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 2}), "b": Quota(nominal={"GPU": 6}, lending_limit={"GPU": 1})},
                         CAP, [running("r1", "b", gpus=3)])
    assert ledger.used["b"]["GPU"] == 3.0
    assert ledger.check("a", {"GPU": 4.0}).code == QUOTA  # b guards 5 (3 used + 2 of the 3 idle it will not lend)
    assert ledger.check("a", {"GPU": 3.0}) is None
    ledger.add("b", {"GPU": 3.0}, sign=-1.0)
    assert ledger.used["b"]["GPU"] == 0.0
    assert ledger.check("a", {"GPU": 3.0}) is None and ledger.check("a", {"GPU": 4.0}).code == QUOTA


def test_borrowing_state():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 2})}, CAP, [running("r", "a", gpus=3)])
    assert ledger.is_borrowing("a")
    assert not ledger.is_borrowing("nobody")  # no quota: never counted as borrowing


def test_resources_a_quota_does_not_name_are_not_limited():
    ledger = QuotaLedger({"a": Quota(nominal={"GPU": 1})}, CAP)
    assert ledger.check("a", {"CPU": 30.0}) is None


def test_named_accelerator_types_are_counted_as_gpus_of_that_type():
    per_worker = {"CPU": 1.0, "GPU": 2.0, "accelerator_type:A100": 0.001}
    assert demand_of(per_worker, 3)["accelerator_type:A100"] == 6.0
    assert node_accounting({"GPU": 8.0, "accelerator_type:A100": 1.0})["accelerator_type:A100"] == 8.0
    a100 = "accelerator_type:A100"
    ledger = QuotaLedger({"a": Quota(nominal={a100: 4}, borrowing_limit={a100: 0})},
                         {"GPU": 16.0, "accelerator_type:A100": 16.0})
    assert ledger.check("a", demand_of(per_worker, 2)) is None
    assert ledger.check("a", demand_of(per_worker, 3)).resource == "accelerator_type:A100"


def test_over_quota_job_waits_with_reason_and_does_not_block_other_projects():
    projects = [Project("a", quota=Quota(nominal={"GPU": 2}, borrowing_limit={"GPU": 0}))]
    queue = [gpu_job("a-big", gpus=4, project="a", seq=1), gpu_job("b-1", gpus=2, project="b", seq=2)]
    plan = plan_tick(queue, clusters=[gpu_cluster()], projects=projects, now=0.0)
    assert [d.job_id for d in plan.dispatch] == ["b-1"]
    pending = plan.pending("a-big")
    assert pending.reason.code == QUOTA and pending.reason.resource == "GPU"
    assert "project 'a'" in pending.reason.message


def test_quota_counts_jobs_admitted_earlier_in_the_same_tick():
    projects = [Project("a", quota=Quota(nominal={"GPU": 2}, borrowing_limit={"GPU": 0}))]
    queue = [gpu_job(f"a{i}", project="a", seq=i) for i in range(4)]
    plan = plan_tick(queue, clusters=[gpu_cluster()], projects=projects, now=0.0)
    assert sorted(d.job_id for d in plan.dispatch) == ["a0", "a1"]
    assert {p.job_id for p in plan.wait if p.reason.code == QUOTA} == {"a2", "a3"}


@pytest.mark.parametrize("quota, field", [
    (Quota(nominal={"GPU": -1}), "projects.a.quota.nominal.GPU"),
    (Quota(nominal={"GPU": float("nan")}), "projects.a.quota.nominal.GPU"),
    (Quota(nominal={"GPU": 2}, borrowing_limit={"GPU": "lots"}), "projects.a.quota.borrowing_limit.GPU"),
    (Quota(nominal={"GPU": 2}, lending_limit={"GPU": 3}), "projects.a.quota.lending_limit.GPU"),
])
def test_bad_quotas_are_refused_with_the_field(quota, field):
    with pytest.raises(SpecError) as err:
        plan_tick([], projects=[Project("a", quota=quota)], now=0.0)
    assert err.value.field == field

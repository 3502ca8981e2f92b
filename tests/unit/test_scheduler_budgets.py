"""GPU-/CPU-hour budgets over a rolling window, from usage records. Pure data."""
import pytest

from trainyard.errors import SpecError
from trainyard.scheduler import Budget, Project, UsageRecord, plan_tick
from trainyard.scheduler.budgets import budget_reason, budget_status, budget_statuses, resource_hours
from trainyard.scheduler.model import DAY
from trainyard.scheduler.reasons import BUDGET

from test_scheduler_quotas import gpu_cluster, gpu_job

H = 3600.0
NOW = 100 * DAY


def rec(start_h, end_h, gpus=0.0, cpus=0.0, project="a"):
    return UsageRecord(project, NOW + start_h * H, None if end_h is None else NOW + end_h * H,
                       {k: v for k, v in (("GPU", gpus), ("CPU", cpus)) if v})


def test_resource_hours_clip_records_to_the_window():
    records = [rec(-10, -8, gpus=4), rec(-1, None, gpus=2, cpus=8)]
    assert resource_hours(records, start=NOW - 9 * H, end=NOW) == {"GPU": 4 * 1 + 2 * 1, "CPU": 8.0}


def test_used_remaining_and_burn_rate():
    budget = Budget(gpu_hours=100, cpu_hours=None, window_s=30 * DAY)
    records = [rec(-40 * 24, -39 * 24, gpus=8),  # outside the 30-day window: not counted
               rec(-10 * 24, -10 * 24 + 5, gpus=4),  # 20 GPU-hours ten days ago
               rec(-12, None, gpus=2, cpus=4),  # still running: 24 GPU-hours, 48 CPU-hours so far
               rec(-5, -1, gpus=1, project="other")]
    status = budget_status("a", records, budget, now=NOW)
    assert status.gpu_hours_used == pytest.approx(44.0)
    assert status.gpu_hours_remaining == pytest.approx(56.0)
    assert status.cpu_hours_used == pytest.approx(48.0) and status.cpu_hours_remaining is None
    assert status.gpu_burn_per_hour == pytest.approx(24.0 / 24.0)  # last day: 24 GPU-hours
    assert status.gpu_exhausted_at == pytest.approx(NOW + 56 * H)
    assert status.exhausted() == set()
    body = status.to_dict()
    assert body["gpu"]["remaining_hours"] == pytest.approx(56.0) and body["cpu"]["budget_hours"] is None


def test_the_window_rolls():
    budget = Budget(gpu_hours=10, window_s=DAY)
    records = [rec(-30, -20, gpus=1)]  # 10 GPU-hours, 20 to 30 hours ago
    assert budget_status("a", records, budget, now=NOW - 6 * H).exhausted() == {"GPU"}
    later = budget_status("a", records, budget, now=NOW)  # 6 of those hours have left the window
    assert later.gpu_hours_used == pytest.approx(4.0) and later.exhausted() == set()


def test_exhausted_budget_holds_only_jobs_that_need_that_resource():
    status = budget_status("a", [rec(-2, -1, gpus=10)], Budget(gpu_hours=10, cpu_hours=1000), now=NOW)
    assert status.exhausted() == {"GPU"} and status.gpu_exhausted_at == NOW
    reason = budget_reason(status, {"CPU": 1.0, "GPU": 1.0})
    assert reason.code == BUDGET and reason.resource == "GPU"
    assert reason.message == "project 'a' has used 10.0 of its 10 GPU-hours over the last 30 days"
    assert budget_reason(status, {"CPU": 4.0}) is None
    assert budget_reason(None, {"GPU": 1.0}) is None


def test_statuses_only_for_projects_with_a_budget():
    projects = {"a": Project("a", budget=Budget(cpu_hours=5)), "b": Project("b")}
    statuses = budget_statuses(projects, [rec(-3, -1, cpus=2), rec(-3, -1, cpus=2, project="b")], now=NOW)
    assert set(statuses) == {"a"} and statuses["a"].cpu_hours_used == pytest.approx(4.0)


def test_spent_budget_makes_new_jobs_wait_without_blocking_others():
    projects = [Project("a", budget=Budget(gpu_hours=8))]
    usage = [rec(-3, -1, gpus=4)]
    queue = [gpu_job("a1", project="a", seq=1), gpu_job("b1", project="b", seq=2)]
    plan = plan_tick(queue, clusters=[gpu_cluster()], projects=projects, usage=usage, now=NOW)
    assert [d.job_id for d in plan.dispatch] == ["b1"]
    assert plan.pending("a1").reason.code == BUDGET
    assert plan.budgets["a"].gpu_hours_remaining == 0.0
    # within budget: it runs
    plan = plan_tick(queue, clusters=[gpu_cluster()], projects=projects, usage=usage[:0], now=NOW)
    assert {d.job_id for d in plan.dispatch} == {"a1", "b1"}


def test_bad_budget_is_refused():
    with pytest.raises(SpecError) as err:
        plan_tick([], projects=[Project("a", budget=Budget(gpu_hours=-5))], now=NOW)
    assert err.value.field == "projects.a.budget.gpu_hours"
    with pytest.raises(SpecError) as err:
        plan_tick([], projects=[Project("a", budget=Budget(gpu_hours=5, window_s=0))], now=NOW)
    assert err.value.field == "projects.a.budget.window_s"

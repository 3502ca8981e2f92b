"""plan_tick as a whole: agreement with schedule(), and scale by operation count (no timings)."""
import random

from trainyard.scheduler import (ClusterView, Project, Quota, QueuedJob, RunningJob, TickConfig, plan_tick,
                                 schedule)
from trainyard.scheduler.model import Budget, UsageRecord


def test_single_project_plan_agrees_with_schedule():
    c = ClusterView("local", nodes_free=[{"CPU": 4.0}], nodes_total=[{"CPU": 4.0}])
    queue = [QueuedJob("a", 2, {"CPU": 1.0}, seq=1), QueuedJob("b", 1, {"CPU": 1.0}, seq=2, priority=3),
             QueuedJob("c", 4, {"CPU": 1.0}, seq=3), QueuedJob("d", 1, {"CPU": 1.0}, seq=4),
             QueuedJob("huge", 9, {"CPU": 1.0}, seq=5)]
    old = {d.job_id: (d.action, d.cluster) for d in schedule(queue, [c])}
    new = {d.job_id: (d.action, d.cluster) for d in plan_tick(queue, clusters=[c], now=0.0).decisions()}
    assert new == old


def _fleet(rng, now):
    clusters, running = [], []
    for ci, name in enumerate(("east", "west", "north")):
        nodes = [{"CPU": 64.0, "GPU": 8.0} for _ in range(8)]
        free = [dict(n) for n in nodes]
        for ni in range(8):  # each node mostly busy with one running job
            gpus = rng.choice((6.0, 7.0, 8.0))
            free[ni]["GPU"] -= gpus
            free[ni]["CPU"] -= 8.0
            held = tuple({"CPU": 8.0, "GPU": gpus} if k == ni else {} for k in range(8))
            running.append(RunningJob(f"{name}-r{ni}", f"p{(ci * 8 + ni) % 10}", name, 1, {"CPU": 8.0, "GPU": gpus},
                                      started_at=now - rng.uniform(0, 7200), max_runtime=rng.uniform(3600, 14400),
                                      nodes=held))
        clusters.append(ClusterView(name, nodes_free=free, nodes_total=nodes, prices={"GPU": 1.0 + ci}))
    return clusters, running


def test_ten_thousand_jobs_ten_projects_three_clusters_in_linear_work(monkeypatch):
    import trainyard.scheduler.backfill as backfill
    import trainyard.scheduler.plan as plan_mod
    import trainyard.scheduler.preemption as preemption
    calls = {"n": 0}
    real_pack = plan_mod.pack

    def counting_pack(*args, **kwargs):
        calls["n"] += 1
        return real_pack(*args, **kwargs)

    for module in (plan_mod, backfill, preemption):
        monkeypatch.setattr(module, "pack", counting_pack)
    rng = random.Random(3)
    now = 1_000_000.0
    clusters, running = _fleet(rng, now)
    projects = [Project(f"p{i}", weight=1 + i % 3,
                        quota=Quota(nominal={"GPU": 20.0}, borrowing_limit={"GPU": 10.0}) if i < 5 else None,
                        budget=Budget(gpu_hours=50.0) if i == 9 else None) for i in range(10)]
    usage = [UsageRecord("p9", now - 7200, now - 3600, {"GPU": 64.0})]
    queue = [QueuedJob(f"j{i}", rng.choice((1, 1, 2)), {"CPU": 4.0, "GPU": float(rng.choice((1, 2, 4)))},
                       priority=rng.choice((0, 0, 0, 5)), seq=float(i), project=f"p{i % 10}",
                       cluster=rng.choice((None, None, None, "east")), max_runtime=rng.choice((None, 600.0, 36000.0)))
             for i in range(10_000)]
    plan = plan_tick(queue, running=running, clusters=clusters, projects=projects, usage=usage, now=now)
    n = len(queue)
    assert len(plan.dispatch) + len(plan.wait) + len(plan.reject) == n
    assert len(plan.order) == n
    assert plan.dispatch  # free GPUs were used
    assert any(p.reason.code == "budget" for p in plan.wait)
    # jobs share a few gang shapes, and a shape that found no room is not packed again
    assert calls["n"] <= n // 10, calls["n"]
    # nothing dispatched beyond what is free
    used = {c.name: 0.0 for c in clusters}
    sizes = {j.id: j.workers * j.per_worker["GPU"] for j in queue}
    for d in plan.dispatch:
        used[d.cluster] += sizes[d.job_id]
    for c in clusters:
        assert used[c.name] <= sum(node["GPU"] for node in c.nodes_free) + len(
            [p for p in plan.preempt if p.cluster == c.name]) * 8


def test_empty_inputs():
    plan = plan_tick([], now=0.0)
    assert plan.dispatch == [] and plan.wait == [] and plan.order == []
    plan = plan_tick([QueuedJob("j", 1, {"CPU": 1.0})], now=0.0)
    assert plan.reject[0].field == "resources.cluster" and "no cluster is registered" in plan.reject[0].reason


def test_inputs_are_not_mutated():
    c = ClusterView("c", nodes_free=[{"CPU": 4.0}], nodes_total=[{"CPU": 4.0}])
    run = [RunningJob("r", "p", "c", 1, {"CPU": 1.0}, max_runtime=10.0)]
    plan_tick([QueuedJob("a", 4, {"CPU": 1.0}), QueuedJob("b", 1, {"CPU": 1.0}, seq=1, max_runtime=1)],
              running=run, clusters=[c], now=0.0, config=TickConfig())
    assert c.nodes_free == [{"CPU": 4.0}]


def test_every_job_a_different_shape_stays_linear(monkeypatch):
    import trainyard.scheduler.backfill as backfill
    import trainyard.scheduler.plan as plan_mod
    calls = {"n": 0}
    real_pack = plan_mod.pack

    def counting_pack(*args, **kwargs):
        calls["n"] += 1
        return real_pack(*args, **kwargs)

    monkeypatch.setattr(plan_mod, "pack", counting_pack)
    monkeypatch.setattr(backfill, "pack", counting_pack)
    rng = random.Random(5)
    now = 1_000_000.0
    clusters, running = _fleet(rng, now)
    queue = [QueuedJob(f"j{i}", 1, {"CPU": 1.0 + i / 10_000, "GPU": 1.0}, seq=float(i), project=f"p{i % 10}",
                       max_runtime=rng.choice((60.0, 36000.0)))
             for i in range(10_000)]
    plan = plan_tick(queue, running=running, clusters=clusters, now=now)
    assert len(plan.dispatch) + len(plan.wait) == len(queue)
    # per job and cluster: one pack, plus one for the head's view when it might fit beside
    assert calls["n"] <= 2 * len(queue) * len(clusters), calls["n"]
    assert set(plan.reservations) == {"east", "west", "north"}  # every cluster got a head job

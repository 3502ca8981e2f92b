"""The fast plan_tick decides exactly as the plain one did (plan_reference.py, a frozen copy).

Randomized 2,000-job queues over several projects (weights, quotas, budgets), shapes (CPU,
GPU, accelerator types, memory; many jobs sharing a shape), pinned and unknown clusters,
an unhealthy cluster, running jobs with progress, prices and checkpoint locality, with
preemption, backfill and fair share on and off. Every output is compared: dispatches with
their scores, every Pending (reason, positions, estimated start), rejects, preemptions,
the order, budgets and reservations.
"""
import random

import pytest

from plan_reference import reference_plan_tick
from trainyard.scheduler import ClusterView, Project, Quota, QueuedJob, RunningJob, TickConfig, plan_tick
from trainyard.scheduler.model import Budget, UsageRecord

NOW = 2_000_000.0
SHAPES = [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 2.0},
          {"CPU": 4.0, "GPU": 1.0, "accelerator_type:A100": 0.001}, {"CPU": 2.0, "memory": 4e9},
          {"CPU": 16.0, "GPU": 8.0}, {"CPU": 100.0}]  # the last never fits


def _world(seed: int, n: int):
    rng = random.Random(seed)
    clusters, running = [], []
    for ci, name in enumerate(("east", "west", "north")):
        gpu = ci != 2
        node = {"CPU": 32.0, "memory": 64e9} | ({"GPU": 8.0, "accelerator_type:A100": 1.0} if ci == 0 else
                                                {"GPU": 8.0} if gpu else {})
        nodes = [dict(node) for _ in range(4)]
        free = [dict(n) for n in nodes]
        for ni in range(4):
            if rng.random() < 0.7:  # a running job on most nodes
                per = {"CPU": float(rng.choice((8, 16, 24, 32)))} | ({"GPU": float(rng.choice((2, 4, 8)))} if gpu else {})
                for k, v in per.items():
                    free[ni][k] -= v
                running.append(RunningJob(f"{name}-r{ni}", f"p{rng.randrange(6)}", name, 1, per,
                                          priority=rng.choice((0, 0, 1)), started_at=NOW - rng.uniform(0, 7200),
                                          max_runtime=rng.choice((None, rng.uniform(600, 20000))),
                                          progress=rng.choice((None, rng.uniform(0.1, 0.9))),
                                          nodes=tuple(per if k == ni else {} for k in range(4))))
        clusters.append(ClusterView(name, nodes_free=free, nodes_total=nodes,
                                    healthy=not (seed % 3 == 0 and ci == 1), region=f"r{ci % 2}",
                                    prices={"GPU": 1.0 + ci, "CPU": 0.05} if ci != 1 else None))
    projects = [Project(f"p{i}", weight=float(1 + i % 3),
                        quota=Quota(nominal={"GPU": 8.0, "CPU": 64.0}, borrowing_limit={"GPU": 4.0},
                                    lending_limit={"CPU": 32.0}) if i in (0, 1) else None,
                        budget=Budget(gpu_hours=20.0) if i == 5 else None) for i in range(6)]
    usage = [UsageRecord("p5", NOW - 7200, NOW - 3600, {"GPU": 24.0})]
    queue = []
    for i in range(n):
        queue.append(QueuedJob(
            f"j{i:05d}", rng.choice((1, 1, 2, 3)), dict(rng.choice(SHAPES)), priority=rng.choice((0, 0, 0, 1, 5)),
            seq=float(rng.randrange(n // 2)),  # equal seqs: ties go by id
            cluster=rng.choice((None,) * 8 + ("east", "west", "north", "nowhere")), project=f"p{rng.randrange(7)}",
            max_runtime=rng.choice((None, 300.0, 5000.0)), progress=rng.choice((None, None, 0.5)),
            progress_rate=rng.choice((None, 1e-4)), checkpoint_cluster=rng.choice((None, "west", "north")),
            checkpoint_region=rng.choice((None, "r1"))))
    return queue, running, clusters, projects, usage


def _view(plan):
    return {"dispatch": [(d.job_id, d.cluster, d.reason, d.score) for d in plan.dispatch],
            "wait": list(plan.wait), "reject": list(plan.reject), "preempt": list(plan.preempt),
            "order": list(plan.order), "budgets": dict(plan.budgets),
            "reservations": {k: (r.job.id, r.cluster, r.start, r.nodes_at_start, list(r.backfilled))
                             for k, r in plan.reservations.items()}}


@pytest.mark.parametrize("seed,config", [
    (1, TickConfig()), (2, TickConfig()), (3, TickConfig(fair_share=False)), (4, TickConfig(backfill=False)),
    (5, TickConfig(preemption=False, eta_depth=500)), (6, TickConfig(min_runtime_s=0.0, max_victims_per_tick=3)),
])
def test_fast_plan_tick_decides_exactly_as_the_reference(seed, config):
    queue, running, clusters, projects, usage = _world(seed, 2000)
    kw = dict(running=running, projects=projects, usage=usage, now=NOW, config=config)
    want = _view(reference_plan_tick(queue, clusters=clusters, **kw))
    got = _view(plan_tick(queue, clusters=clusters, **kw))
    assert sum(len(want[k]) for k in ("dispatch", "wait", "reject")) == len(queue)
    assert want["dispatch"] and want["wait"] and want["reject"]  # the world exercises every outcome
    for key in want:
        assert got[key] == want[key], key
    # the same job objects planned again (the controller keeps them between ticks) decide the same
    assert _view(plan_tick(queue, clusters=clusters, **kw)) == want

"""A job already asked to stop (RunningJob.leaving) is counted on first: no extra victim is taken
while it saves its checkpoint. Pure data."""
from trainyard.scheduler import TickConfig, plan_tick
from trainyard.scheduler.preemption import LEAVING, PRIORITY, choose_victims
from trainyard.scheduler.reasons import PREEMPTING

from test_scheduler_quotas import gpu_cluster, gpu_job, running

NOW = 10_000.0
CFG = TickConfig(min_runtime_s=600)


def test_a_leaving_job_is_taken_first_whatever_its_priority_or_age():
    run = [running("leaving", "b", gpus=4, started_at=NOW - 1, priority=9, leaving=True, preemptible=False),
           running("low", "b", gpus=4, started_at=0, priority=0)]
    found = choose_victims(gpu_job("urgent", gpus=4, priority=5), cluster="c", free=[{"CPU": 32.0, "GPU": 0.0}],
                           running=run, now=NOW, config=CFG)
    assert [(v.job_id, v.kind) for v in found] == [("leaving", LEAVING)]
    assert "already stopping" in found[0].reason


def test_a_leaving_job_that_frees_too_little_is_topped_up_by_the_cheapest_other():
    run = [running("leaving", "b", gpus=2, started_at=0, leaving=True),
           running("low", "b", gpus=2, started_at=0, priority=0),
           running("peer", "b", gpus=4, started_at=0, priority=5)]
    found = choose_victims(gpu_job("urgent", gpus=4, priority=5), cluster="c", free=[{"CPU": 32.0, "GPU": 0.0}],
                           running=run, now=NOW, config=CFG)
    assert sorted((v.job_id, v.kind) for v in found) == [("leaving", LEAVING), ("low", PRIORITY)]


def test_the_next_tick_waits_for_the_leaving_job_and_preempts_nobody_else():
    cluster = gpu_cluster(free_gpus=[0])
    before = [running("low-a", "b", gpus=4, started_at=0), running("low-b", "b", gpus=4, started_at=0)]
    first = plan_tick([gpu_job("urgent", gpus=4, priority=5)], running=before, clusters=[cluster], now=NOW,
                      config=CFG)
    [victim] = first.preempt
    assert victim.kind == PRIORITY and first.wait[0].reason.code == PREEMPTING
    # the controller marked it PREEMPTING: next tick it is leaving, and not preemptible again
    after = [running(r.id, "b", gpus=4, started_at=0, leaving=r.id == victim.job_id,
                     preemptible=r.id != victim.job_id) for r in before]
    second = plan_tick([gpu_job("urgent", gpus=4, priority=5)], running=after, clusters=[cluster], now=NOW,
                       config=CFG)
    assert [(p.job_id, p.kind) for p in second.preempt] == [(victim.job_id, LEAVING)]
    assert second.wait[0].reason.code == PREEMPTING and second.wait[0].reason.victims == (victim.job_id,)


def test_a_preempted_job_is_queued_with_its_checkpoints_cluster_for_placement(tmp_path):
    """The mirror hands the scheduler where a PREEMPTED job ran, so placement's locality score
    sends it back to its checkpoint; a fresh job has no such preference."""
    from sqlalchemy import update

    from test_api import spec
    from trainyard.controller.queue import QueueMirror
    from trainyard.store import Database
    from trainyard.store import jobs as jobs_repo
    from trainyard.store import state as st
    from trainyard.store.models import JobRow

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.upgrade()
    with db.session() as s:
        for job_id in ("fresh", "resumed"):
            jobs_repo.create_job(s, spec=spec(name=job_id), name=job_id, project="default", priority=0, job_id=job_id)
        s.execute(update(JobRow).where(JobRow.id == "resumed").values(phase=st.PREEMPTED, cluster="east", attempt=1))
    mirror = QueueMirror(db)
    mirror.sync()
    assert mirror.pending["resumed"].job.checkpoint_cluster == "east"
    assert mirror.pending["fresh"].job.checkpoint_cluster is None
    db.dispose()

"""Elastic jobs (resources.workers {min, max}) outside Ray: how the runner asks Ray Train for them,
how the driver counts worker groups, what the scheduler admits and the autoscaler is asked
for, and how the cost record splits a run at each resize."""
from __future__ import annotations

import pytest

from trainyard.clusters.demand import plan_demand
from trainyard.controller import views
from trainyard.controller.costs import allocations_for, cost_record
from trainyard.errors import SpecError
from trainyard.runner import launch
from trainyard.runner.segments import MAX_SEGMENTS, Segments, segment_figures
from trainyard.scheduler import ClusterView, schedule
from trainyard.specs import JobSpec

GPU_NODE = {"CPU": 1.0, "gpu_node": 1.0}


def spec(workers, **failure) -> JobSpec:
    return JobSpec.model_validate({"name": "e", "workload": "cnn",
                                   "resources": {"workers": workers, "custom_resources": {"gpu_node": 1}},
                                   "failure": failure})


# ----------------------------------------------------------------------------- runner launch


def test_a_range_asks_ray_train_for_min_to_max_and_a_number_stays_a_number():
    assert launch.scaling_for(spec({"min": 1, "max": 2}).resources) == (1, 2)
    assert launch.scaling_for(spec(3).resources) == 3
    assert launch.scaling_for(spec({"min": 2, "max": 2}).resources) == 2  # a range of one size is fixed


@pytest.mark.parametrize("workers, asked, given", [
    ({"min": 1, "max": 2}, 0, launch.ELASTIC_MIN_RESTARTS),  # a lost node must not end the job
    ({"min": 1, "max": 2}, 10, 10),
    ({"min": 1, "max": 2}, -1, -1),
    (2, 0, 0),  # fixed jobs: the spec's, unchanged
])
def test_an_elastic_job_outlives_a_lost_node(workers, asked, given):
    assert launch.max_failures_for(spec(workers, max_failures=asked)) == given


def test_the_resize_interval_comes_from_the_environment_and_a_bad_one_is_refused(monkeypatch):
    monkeypatch.delenv(launch.RESIZE_INTERVAL_ENV, raising=False)
    assert launch.resize_interval_s() == launch.DEFAULT_RESIZE_INTERVAL_S
    monkeypatch.setenv(launch.RESIZE_INTERVAL_ENV, "2.5")
    assert launch.resize_interval_s() == 2.5
    for bad in ("0", "soon", "-3", "99999"):
        monkeypatch.setenv(launch.RESIZE_INTERVAL_ENV, bad)
        with pytest.raises(SpecError) as err:
            launch.resize_interval_s()
        assert err.value.field == launch.RESIZE_INTERVAL_ENV and bad in str(err.value)


# ----------------------------------------------------------------------------- driver: segments


def _item(world, started, steps, seconds, unix, **kw):
    return {"kind": "progress", "segment": segment_figures(world=world, started_unix=started, steps=steps,
                                                           step_seconds=seconds, now=unix, **kw)}


def test_each_restarted_group_is_one_segment_with_its_size_work_and_last_checkpoint():
    segs = Segments()
    assert segs.observe(_item(2, 100.0, 0, 0.0, 105.0, start=True)) is True
    assert segs.observe(_item(2, 100.0, 10, 5.0, 110.0, checkpoint=True)) is False
    assert segs.observe(_item(2, 100.0, 14, 7.0, 112.0)) is False
    assert segs.observe(_item(1, 120.0, 0, 0.0, 130.0, start=True, resumed_step=10)) is True
    assert segs.observe({"kind": "progress"}) is False  # other ranks' or older runners' items
    assert segs.workers == 1
    first, second = segs.to_list()
    assert first == {"workers": 2, "start_unix": 100.0, "ready_unix": 105.0, "last_unix": 112.0,
                     "resumed_step": 0, "steps": 14, "step_seconds": 7.0, "ckpt_steps": 10,
                     "ckpt_step_seconds": 5.0}
    assert second["workers"] == 1 and second["resumed_step"] == 10 and second["steps"] == 0


def test_a_flapping_job_keeps_its_first_and_latest_segments_only():
    segs = Segments()
    for i in range(MAX_SEGMENTS + 5):
        segs.observe(_item(1 + i % 2, float(i), 0, 0.0, float(i), start=True))
    kept = segs.to_list()
    assert len(kept) == MAX_SEGMENTS and kept[0]["start_unix"] == 0.0 and segs.dropped == 5


# ----------------------------------------------------------------------------- scheduler and demand


ELASTIC = {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1.0, "custom_resources": {"gpu_node": 1}}


def test_an_elastic_job_is_admitted_at_min_and_autoscaling_asks_for_max():
    job = views.queued_job("e", {"resources": ELASTIC})
    assert (job.workers, job.max_workers, job.most_workers) == (1, 2, 2)
    assert job.total() == {"CPU": 1.0, "gpu_node": 1.0}  # what admission and quotas count
    fixed = views.queued_job("f", {"resources": {**ELASTIC, "workers": 2}})
    assert (fixed.workers, fixed.max_workers, fixed.most_workers) == (2, None, 2)

    # a cluster whose head has no gpu_node but can add two: the job waits, and the request is for 2
    head = {"CPU": 1.0}
    cluster = ClusterView(name="local", nodes_free=[dict(head)], nodes_total=[dict(head)],
                          max_nodes=[dict(head), dict(GPU_NODE), dict(GPU_NODE)])
    demand = plan_demand([job], schedule([job], [cluster]), [cluster], active={},
                         live_nodes={"local": [head]})["local"]
    assert demand.waiting == ("e",) and demand.as_lists() == [GPU_NODE, GPU_NODE]

    # one gpu node is there: the job starts at 1 (its min) and still asks for the second
    one = ClusterView(name="local", nodes_free=[dict(head), dict(GPU_NODE)], nodes_total=[dict(head), dict(GPU_NODE)],
                      max_nodes=[dict(head), dict(GPU_NODE), dict(GPU_NODE)])
    assert schedule([job], [one])[0].action == "dispatch"
    demand = plan_demand([job], [], [one], active={"local": [job]}, live_nodes={"local": [head, GPU_NODE]})["local"]
    assert demand.as_lists() == [GPU_NODE, GPU_NODE] and not demand.fits_now


def test_the_job_list_shows_the_admitted_count_and_capacity_checks_use_min():
    assert views.worker_range({"workers": {"min": 2, "max": 4}}) == (2, 4)
    assert views.worker_range({"workers": 3}) == (3, 3)
    assert views.worker_range({}) == (1, 1)


# ----------------------------------------------------------------------------- the cost record


SPEC = {"resources": ELASTIC}


def _segment(workers, start, ready, last, steps, seconds, ckpt_steps, ckpt_seconds, resumed=0):
    return {"workers": workers, "start_unix": start, "ready_unix": ready, "last_unix": last, "resumed_step": resumed,
            "steps": steps, "step_seconds": seconds, "ckpt_steps": ckpt_steps, "ckpt_step_seconds": ckpt_seconds}


def test_a_run_that_lost_a_node_and_grew_back_is_three_allocations_two_resizes():
    # 2 workers from 1000 (first step 1010) to 1100, lost 4 steps after its checkpoint; 1 worker
    # (ready at 1120) to 1200; 2 workers again (ready at 1215) to the end at 1300
    usage = {"steps": 20, "step_seconds": 40.0, "segments": [
        _segment(2, 1001, 1010, 1100, 30, 60.0, 26, 52.0),
        _segment(1, 1105, 1120, 1200, 25, 70.0, 25, 70.0, resumed=26),
        _segment(2, 1205, 1215, 1290, 20, 40.0, 20, 40.0, resumed=51),
    ]}
    allocs = allocations_for(SPEC, [(1000.0, 1300.0)], result={"usage": usage})
    assert [(a["start"], a["end"], a["workers"], a["ended_by"]) for a in allocs] == [
        (1000.0, 1100.0, 2, "resize"), (1100.0, 1200.0, 1, "resize"), (1200.0, 1300.0, 2, "finished")]
    assert allocs[0]["lost_steps"] == 4 and allocs[0]["lost_step_seconds"] == pytest.approx(8.0)
    assert allocs[1]["startup_seconds"] == pytest.approx(20.0)  # from the old group's last report to ready
    assert allocs[2]["steps"] == 20 and allocs[2]["step_seconds"] == 40.0

    record = cost_record(SPEC, submitted_at=990.0, finished_at=1300.0, attempts=[(1000.0, 1300.0)],
                         result={"usage": usage})
    assert record.resizes == 2 and record.restarts == 0 and record.allocations == 3
    # worker-seconds per world-size segment: 2x100 + 1x100 + 2x100
    assert record.cpu_hours == pytest.approx(500 / 3600)
    # lost to the first resize: 8 s of steps after the checkpoint + 20 s until the 1-worker group
    # stepped; to the second: 15 s until the grown group stepped
    assert record.lost_seconds["resize"] == pytest.approx(8.0 + 20.0 + 15.0)


def test_a_restart_on_the_same_size_is_a_restart_and_bad_segments_leave_the_attempt_whole():
    usage = {"steps": 5, "step_seconds": 5.0, "segments": [_segment(1, 0, 1, 50, 3, 3.0, 3, 3.0),
                                                           _segment(1, 55, 60, 90, 5, 5.0, 5, 5.0)]}
    allocs = allocations_for(SPEC, [(0.0, 100.0)], result={"usage": usage})
    assert [a["ended_by"] for a in allocs] == ["restart", "finished"]
    for bad in ([{"workers": "2"}, {}], [_segment(1, 0, 1, 50, 3, 3.0, 3, 3.0), _segment(0, 5, 6, 7, 0, 0, 0, 0)],
                "nope", [_segment(1, 0, 1, 50, -3, 3.0, 3, 3.0), _segment(1, 5, 6, 7, 0, 0, 0, 0)]):
        allocs = allocations_for(SPEC, [(0.0, 100.0)], result={"usage": {**usage, "segments": bad}})
        assert len(allocs) == 1 and allocs[0]["workers"] == 1

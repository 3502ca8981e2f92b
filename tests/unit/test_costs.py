"""The cost record of a job and a sweep: hours held, money, MFU, goodput, time lost."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from trainyard.costs import Allocation, JobCost, NodePrice, job_cost, peak_flops, sweep_cost
from trainyard.costs.peaks import PEAKS
from trainyard.errors import SpecError

T0 = 1_700_000_000.0
H = 3600.0
A100 = NodePrice(node_type="gpu-8x-a100", instance_type="p4d.24xlarge", market="on_demand", per_hour=32.77,
                 cpus=96, gpus=8, accelerator_type="A100", as_of="2024-06-01", currency="USD")
A10G_SPOT = NodePrice(node_type="gpu-1x-a10g-spot", instance_type="g5.xlarge", market="spot", per_hour=0.40,
                      cpus=4, gpus=1, accelerator_type="A10G", as_of="2024-06-01", currency="USD")
PRICES = {p.node_type: p for p in (A100, A10G_SPOT)}


def alloc(start, end, workers=2, gpus=4, **kw):
    return {"start": T0 + start, "end": T0 + end, "workers": workers, "cpus_per_worker": 8,
            "gpus_per_worker": gpus, "node_type": "gpu-8x-a100", **kw}


def test_elastic_job_with_a_preemption_and_a_resize():
    # 2x4 A100 for 1 h, preempted (10 min of steps lost), 5 min gap, then 1x4 for 2 h after a
    # resize-down startup of 3 min, then 2x4 again for 30 min.
    allocs = [
        alloc(600, 600 + H, ended_by="preemption", steps=1000, step_seconds=3000, lost_steps=200,
              lost_step_seconds=600, startup_seconds=120, flops_per_step=1e15),
        alloc(600 + H + 300, 600 + 3 * H + 300, workers=1, ended_by="resize", steps=1500,
              step_seconds=6500, startup_seconds=180, flops_per_step=5e14),
        alloc(600 + 3 * H + 360, 600 + 3.5 * H + 360, ended_by="finished", steps=500,
              step_seconds=1700, startup_seconds=60, flops_per_step=1e15),
    ]
    cost = job_cost(allocs, submitted_at=T0, finished_at=T0 + 600 + 3.5 * H + 360, prices=PRICES)
    assert cost.queued_seconds == 600 and cost.wall_seconds == 600 + 3.5 * H + 360
    assert cost.running_seconds == 3.5 * H + 360
    assert cost.held_seconds == pytest.approx(3.5 * H)
    # GPU-hours = workers x GPUs x hours held, interval by interval
    assert cost.gpu_hours == pytest.approx(2 * 4 * 1 + 1 * 4 * 2 + 2 * 4 * 0.5)
    assert cost.cpu_hours == pytest.approx(2 * 8 * 1 + 1 * 8 * 2 + 2 * 8 * 0.5)
    # half a node per worker (4 of 8 GPUs), at the node's price
    assert cost.cost == pytest.approx(cost.gpu_hours / 8 * 32.77)
    assert cost.to_dict()["cost"] == round(cost.gpu_hours / 8 * 32.77, 2)
    assert cost.markets == ("on_demand",) and cost.prices_as_of == "2024-06-01"
    assert cost.accelerator_type == "A100"  # taken from the node type
    # losses: preemption = lost steps + gap + next startup; resize = gap + next startup
    assert cost.lost_seconds == {"restart": 0.0, "resize": 60 + 60, "preemption": 600 + 300 + 180}
    assert (cost.restarts, cost.resizes, cost.preemptions) == (0, 1, 1)
    held_dev = 8 * H + 4 * 2 * H + 8 * 0.5 * H
    assert cost.busy_fraction == pytest.approx((8 * 3000 + 4 * 6500 + 8 * 1700) / held_dev)
    assert cost.goodput == pytest.approx((8 * 2400 + 4 * 6500 + 8 * 1700) / held_dev)
    assert 0 < cost.goodput < cost.busy_fraction < 1
    flops = 1e15 * 1000 + 5e14 * 1500 + 1e15 * 500
    capacity = peak_flops("A100") * (8 * 3000 + 4 * 6500 + 8 * 1700)
    assert cost.mfu == pytest.approx(flops / capacity)
    assert 0 < cost.mfu <= 1
    assert not cost.warnings


def test_gpu_hours_match_workers_times_gpus_times_hours_within_rounding():
    cost = job_cost([alloc(0, 1234.5, workers=3, gpus=2)], submitted_at=T0, finished_at=T0 + 1234.5)
    assert cost.to_dict()["gpu_hours"] == round(3 * 2 * 1234.5 / H, 4)
    assert abs(cost.to_dict()["gpu_hours"] - 3 * 2 * 1234.5 / H) <= 5e-5


def test_realistic_mfu_is_within_zero_and_one():
    # GPT-2 small on 8 H100: 6 x 124M params x 0.5M tokens per step, 1.1 s per step
    flops_per_step = 6 * 124e6 * 524_288
    cost = job_cost([alloc(0, 1000, workers=8, gpus=1, node_type=None, steps=800, step_seconds=880,
                           flops_per_step=flops_per_step)],
                    submitted_at=T0, finished_at=T0 + 1000, accelerator_type="H100")
    assert 0 < cost.mfu <= 1
    assert cost.mfu == pytest.approx(flops_per_step * 800 / (989.4e12 * 8 * 880))
    assert cost.cost is None and cost.currency is None  # no prices: no money figure


def test_mfu_above_one_is_refused_with_a_reason():
    cost = job_cost([alloc(0, 100, steps=10, step_seconds=10, flops_per_step=1e18)],
                    submitted_at=T0, finished_at=T0 + 100, prices=PRICES)
    assert cost.mfu is None
    assert any("mfu: refused" in w and "above 1" in w for w in cost.warnings)
    assert "cost.mfu" not in cost.mlflow_metrics() and cost.to_dict()["mfu"] is None


def test_mfu_without_a_flop_count_or_accelerator_is_left_out_and_said():
    no_flops = job_cost([alloc(0, 100, steps=10, step_seconds=50)], submitted_at=T0, finished_at=T0 + 100)
    assert no_flops.mfu is None and any("flops_per_step" in w for w in no_flops.warnings)
    no_acc = job_cost([alloc(0, 100, node_type=None, steps=10, step_seconds=50, flops_per_step=1e12)],
                      submitted_at=T0, finished_at=T0 + 100)
    assert no_acc.mfu is None and any("accelerator" in w for w in no_acc.warnings)


def test_cpu_job_mfu_is_an_estimate():
    cost = job_cost([{"start": T0, "end": T0 + 100, "workers": 2, "cpus_per_worker": 4, "steps": 10,
                      "step_seconds": 80, "flops_per_step": 1e12}], submitted_at=T0, finished_at=T0 + 100)
    assert cost.gpu_hours == 0 and cost.cpu_hours == pytest.approx(8 * 100 / H)
    assert cost.mfu_is_estimate and PEAKS["CPU"].estimate
    assert cost.mfu == pytest.approx(1e13 / (PEAKS["CPU"].bf16 * 8 * 80))


def test_spot_price_and_datetimes():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    cost = job_cost([{"start": start, "end": start + dt.timedelta(hours=2), "workers": 3, "cpus_per_worker": 4,
                      "gpus_per_worker": 1, "node_type": "gpu-1x-a10g-spot", "ended_by": "finished"}],
                    submitted_at=start, finished_at=start + dt.timedelta(hours=2), prices=PRICES)
    assert cost.cost == pytest.approx(3 * 2 * 0.40) and cost.markets == ("spot",)
    assert cost.accelerator_type == "A10G"


def test_sweep_sums_its_trials():
    a = job_cost([alloc(0, H, steps=100, step_seconds=3000, flops_per_step=1e15)],
                 submitted_at=T0, finished_at=T0 + H, prices=PRICES)
    b = job_cost([alloc(200, 200 + 2 * H, workers=1, ended_by="restart", steps=10, step_seconds=100,
                        lost_step_seconds=50, flops_per_step=5e14),
                  alloc(300 + 2 * H, 300 + 3 * H, workers=1, startup_seconds=20)],
                 submitted_at=T0 + 100, finished_at=T0 + 300 + 3 * H, prices=PRICES)
    s = sweep_cost([a, b])
    assert s.trials == 2 and s.allocations == 3
    for name in ("gpu_hours", "cpu_hours", "cost", "held_seconds", "queued_seconds", "model_flops"):
        assert getattr(s, name) == pytest.approx(getattr(a, name) + getattr(b, name)), name
    assert s.lost_seconds["restart"] == pytest.approx(50 + 100 + 20) and s.restarts == 1
    assert s.wall_seconds == 300 + 3 * H
    assert s.mfu == pytest.approx((a.model_flops + b.model_flops) / (a.peak_flop_capacity + b.peak_flop_capacity))
    assert min(a.goodput, b.goodput) <= s.goodput <= max(a.goodput, b.goodput)
    assert sweep_cost([s, a]).trials == 3  # a sweep of sweeps still counts trials
    unpriced = job_cost([alloc(0, 10)], submitted_at=T0, finished_at=T0 + 10)
    partial = sweep_cost([a, unpriced])
    assert partial.cost is None and any("1 of 2 trials" in w for w in partial.warnings)


def test_records_serialize_flat_for_mlflow_and_as_json_for_the_api():
    cost = job_cost([alloc(0, 100, steps=10, step_seconds=60, flops_per_step=1e15)],
                    submitted_at=T0, finished_at=T0 + 100, prices=PRICES)
    body = cost.to_dict()
    import json
    assert json.loads(json.dumps(body)) == body
    metrics, params = cost.mlflow_metrics(), cost.mlflow_params()
    assert all(isinstance(v, float) for v in metrics.values())
    assert all(isinstance(v, str) for v in params.values())
    assert {"cost.gpu_hours", "cost.money", "cost.mfu", "cost.goodput", "cost.lost_preemption_seconds"} <= set(metrics)
    assert params["cost.prices_as_of"] == "2024-06-01"


@pytest.mark.parametrize("allocs, kw, field", [
    ([alloc(0, 10, workers=0)], {}, "allocations[0].workers"),
    ([alloc(0, 10, workers=True)], {}, "allocations[0].workers"),
    ([alloc(0, 10, gpus=float("nan"))], {}, "allocations[0].gpus_per_worker"),
    ([alloc(10, 5)], {}, "allocations[0].end"),
    ([alloc(0, 10, ended_by="oops")], {}, "allocations[0].ended_by"),
    ([alloc(0, 10, surprise=1)], {}, "allocations[0].surprise"),
    ([alloc(0, 10, steps=1, step_seconds=1, lost_steps=2)], {}, "allocations[0].lost_steps"),
    ([alloc(0, 10, steps=1, step_seconds=1, lost_step_seconds=2)], {}, "allocations[0].lost_step_seconds"),
    ([alloc(0, 10, steps=1, step_seconds=100)], {}, "allocations[0].step_seconds"),
    ([alloc(0, 10, flops_per_step=0)], {}, "allocations[0].flops_per_step"),
    ([alloc(0, 10), alloc(5, 20)], {"finished_at": T0 + 20}, "allocations[1].start"),
    ([alloc(0, 10, ended_by="running"), alloc(10, 20)], {"finished_at": T0 + 20}, "allocations[0].ended_by"),
    ([alloc(0, 10, node_type="gpu-8x-h100")], {"prices": PRICES}, "allocations[0].node_type"),
    ([alloc(-5, 10)], {}, "allocations[0].start"),
    ([alloc(0, 50)], {}, "allocations[0].end"),
    ([alloc(0, 10)], {"submitted_at": dt.datetime(2026, 1, 1)}, "submitted_at"),
    ([alloc(0, 10)], {"dtype": "fp8"}, "dtype"),
    ([alloc(0, 10, gpus=16)], {"prices": PRICES}, "allocations[0].node_type"),
    ("nope", {}, "allocations"),
])
def test_bad_input_names_the_field(allocs, kw, field):
    kwargs = {"submitted_at": T0, "finished_at": T0 + 10, **kw}
    with pytest.raises(SpecError) as info:
        job_cost(allocs, **kwargs)
    assert any(issue.field == field for issue in info.value.issues), str(info.value)


def test_clock_skew_is_clipped_with_a_warning_not_refused():
    cost = job_cost([alloc(0, 100, steps=5, step_seconds=102)], submitted_at=T0, finished_at=T0 + 100)
    assert cost.busy_fraction == 1.0 and any("clock skew" in w for w in cost.warnings)


def test_unknown_accelerator_and_missing_dtype_are_clear_errors():
    with pytest.raises(SpecError, match="H10") as info:
        peak_flops("H10")
    assert "did you mean" in str(info.value) and info.value.field == "accelerator_type"
    with pytest.raises(SpecError, match="no bf16") as info:
        peak_flops("T4", dtype="bf16")
    assert info.value.field == "dtype" and peak_flops("T4", dtype="fp16") == 65e12
    assert peak_flops("H100") == peak_flops("H100-SXM") > peak_flops("H100-PCIE")
    assert peak_flops("a100-40g") == peak_flops("A100-80G") == 312e12


def test_the_peak_table_covers_the_clusters_gpus_and_is_sane():
    for name in ("H100-SXM", "H100-PCIE", "H200", "A100-40G", "A100-80G", "L4", "A10G", "T4", "V100", "CPU"):
        peak = PEAKS[name]
        assert peak.fp32 and (peak.bf16 or peak.fp16)
        if peak.fp16:
            assert peak.fp16 >= peak.fp32
    assert [p.name for p in PEAKS.values() if p.estimate] == ["CPU"]


def test_the_package_never_imports_torch():
    code = "import sys, trainyard.costs, trainyard.costs.flops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_allocation_dataclass_is_accepted():
    cost = job_cost([Allocation(start=T0, end=T0 + H, workers=1, gpus_per_worker=1, node_type="gpu-1x-a10g-spot")],
                    submitted_at=T0, finished_at=T0 + H, prices=PRICES)
    assert isinstance(cost, JobCost) and cost.cost == pytest.approx(0.40)


def test_prices_must_be_node_prices_and_warnings_stay_bounded():
    with pytest.raises(SpecError) as info:
        job_cost([alloc(0, 10)], submitted_at=T0, finished_at=T0 + 10, prices={"gpu-8x-a100": 32.77})
    assert info.value.field == "prices"
    skewed = [alloc(i * 10, i * 10 + 10, steps=1, step_seconds=11) for i in range(30)]
    cost = job_cost(skewed, submitted_at=T0, finished_at=T0 + 300)
    assert len(cost.warnings) == 21 and cost.warnings[-1] == "... and 12 more warnings"  # 30 clipped, no FLOPs, no accelerator
    with pytest.raises(SpecError, match="startup plus step"):
        job_cost([alloc(0, 100, steps=1, step_seconds=90, startup_seconds=90)],
                 submitted_at=T0, finished_at=T0 + 100)


def test_a_job_cancelled_in_the_queue_held_nothing():
    cost = job_cost([], submitted_at=T0, finished_at=T0 + 42, prices=PRICES)
    assert (cost.queued_seconds, cost.running_seconds, cost.held_seconds) == (42, 0, 0)
    assert cost.gpu_hours == cost.cpu_hours == cost.cost == 0
    assert cost.busy_fraction is cost.goodput is cost.mfu is None

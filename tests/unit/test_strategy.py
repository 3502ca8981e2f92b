"""The DeepSpeed planner and config builder: pure logic, no torch, no Ray."""
from __future__ import annotations

import pytest

from trainyard.errors import CapacityError
from trainyard.runner.protocol import PROGRESS, RESULT, find_result, format_line, last_progress, parse_line
from trainyard.runner.strategy import (GiB, Hardware, build_deepspeed_config, bytes_per_worker,
                                       plan_deepspeed)
from trainyard.specs import DeepSpeedSpec

CPU = Hardware(device="cpu", memory_bytes=12 * GiB, name="cpu")
A100 = Hardware(device="cuda", memory_bytes=80 * GiB, bf16_supported=True, name="A100")
V100 = Hardware(device="cuda", memory_bytes=16 * GiB, bf16_supported=False, name="V100")


def ds(**kw) -> DeepSpeedSpec:
    return DeepSpeedSpec(**kw)


def test_formulas_shard_what_each_stage_shards():
    p, n = 1_000_000, 4
    mixed = {s: bytes_per_worker(p, stage=s, world_size=n, precision="bf16") for s in range(4)}
    assert mixed[0] == 16 * p  # 2 + 2 + 12, nothing sharded
    assert mixed[1] == int(p * (2 + 2 + 12 / n))
    assert mixed[2] == int(p * (2 + (2 + 12) / n))
    assert mixed[3] == 16 * p // n
    assert mixed[0] > mixed[1] > mixed[2] > mixed[3]
    assert bytes_per_worker(p, stage=0, world_size=n, precision="fp32") == 16 * p
    # offload moves optimizer states (and ZeRO-3 params) off the device
    assert bytes_per_worker(p, stage=2, world_size=n, precision="bf16", offload="cpu") == int(p * (2 + 2 / n))
    assert bytes_per_worker(p, stage=3, world_size=n, precision="bf16", offload="cpu") == int(p * 2 / n)


def test_auto_prefers_the_lowest_stage_that_fits():
    small = plan_deepspeed(ds(), num_params=60_000, world_size=2, hardware=CPU)
    assert (small.zero_stage, small.precision, small.backend) == (0, "fp32", "gloo")
    assert "lowest stage that fits" in small.reason and "CPU" in small.reason
    # 4B params on 8 x 80 GiB (55 GiB budget): replicated needs 64 GB, stage 1 needs
    # 4e9 * (2 + 2 + 12/8) = 22 GB
    big = plan_deepspeed(ds(), num_params=4_000_000_000, world_size=8, hardware=A100)
    assert big.zero_stage == 1 and big.precision == "bf16" and big.backend == "nccl"
    huge = plan_deepspeed(ds(), num_params=20_000_000_000, world_size=8, hardware=A100)
    assert huge.zero_stage == 3


def test_auto_precision_follows_the_hardware():
    assert plan_deepspeed(ds(), num_params=1000, world_size=1, hardware=A100).precision == "bf16"
    assert plan_deepspeed(ds(), num_params=1000, world_size=1, hardware=V100).precision == "fp16"
    assert plan_deepspeed(ds(), num_params=1000, world_size=1, hardware=CPU).precision == "fp32"
    explicit = plan_deepspeed(ds(precision="fp32"), num_params=1000, world_size=1, hardware=A100)
    assert explicit.precision == "fp32" and "as requested" in explicit.reason


def test_an_explicit_stage_is_kept_and_checked():
    plan = plan_deepspeed(ds(zero_stage=2), num_params=60_000, world_size=2, hardware=CPU)
    assert plan.zero_stage == 2 and "as requested" in plan.reason
    with pytest.raises(CapacityError) as info:
        plan_deepspeed(ds(zero_stage=0), num_params=4_000_000_000, world_size=8, hardware=A100)
    assert info.value.field == "deepspeed.zero_stage" and "zero_stage: 1" in str(info.value)


def test_nothing_fits_names_the_fix():
    with pytest.raises(CapacityError) as info:
        plan_deepspeed(ds(), num_params=200_000_000_000, world_size=2, hardware=A100)
    assert "offload: cpu" in str(info.value)
    offloaded = plan_deepspeed(ds(offload="cpu"), num_params=20_000_000_000, world_size=2, hardware=A100)
    assert offloaded.offload == "cpu" and "offloaded" in offloaded.reason


def test_half_precision_and_offload_need_a_gpu():
    with pytest.raises(CapacityError) as info:
        plan_deepspeed({"precision": "bf16"}, num_params=10, world_size=1, hardware=CPU)
    assert info.value.field == "deepspeed.precision"
    with pytest.raises(CapacityError):
        plan_deepspeed({"offload": "cpu"}, num_params=10, world_size=1, hardware=CPU)


def test_config_for_each_stage():
    for stage in range(4):
        plan = plan_deepspeed(ds(zero_stage=stage), num_params=1000, world_size=2, hardware=A100)
        cfg = build_deepspeed_config(plan, micro_batch_size=16, gradient_accumulation_steps=4,
                                     gradient_clipping=1.0)
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_batch_size"] == 16 * 4 * 2
        assert cfg["train_micro_batch_size_per_gpu"] == 16
        assert cfg["gradient_accumulation_steps"] == 4
        assert cfg["gradient_clipping"] == 1.0
        assert cfg["bf16"] == {"enabled": True} and "fp16" not in cfg
        assert "optimizer" not in cfg  # a torch optimizer is passed in, no C++ op builds
    z3 = build_deepspeed_config(plan_deepspeed(ds(zero_stage=3, offload="cpu"), num_params=1000,
                                               world_size=2, hardware=A100), micro_batch_size=1)
    assert z3["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert z3["zero_optimization"]["offload_param"]["device"] == "cpu"
    cpu = build_deepspeed_config(plan_deepspeed(ds(), num_params=1000, world_size=2, hardware=CPU),
                                 micro_batch_size=8)
    assert "bf16" not in cpu and "fp16" not in cpu
    assert cpu["gradient_clipping"] == 0.0  # DeepSpeed's own default (1.0) would clip
    fp16 = build_deepspeed_config(plan_deepspeed(ds(), num_params=1000, world_size=2, hardware=V100),
                                  micro_batch_size=8)
    assert fp16["fp16"]["enabled"] is True


def test_plan_params_are_flat_short_strings():
    params = plan_deepspeed(ds(), num_params=60_000, world_size=2, hardware=CPU).as_params()
    assert params["deepspeed.zero_stage"] == 0 and params["deepspeed.reason"]
    assert all(len(str(v)) <= 500 for v in params.values())


def test_protocol_lines_round_trip():
    line = format_line(PROGRESS, {"step": 3, "total_steps": 10, "epoch": 0, "metrics": {"loss": float("nan")}})
    assert line.startswith("TRAINYARD_PROGRESS {") and "\n" not in line
    tag, payload = parse_line("(RayTrainWorker pid=1) " + line)
    assert tag == PROGRESS and payload["metrics"]["loss"] is None  # NaN is not JSON
    log = "\n".join([line, "noise", format_line(RESULT, {"metrics": {"accuracy": 0.9}})])
    assert last_progress(log)["step"] == 3
    assert find_result(log)["metrics"]["accuracy"] == 0.9
    assert parse_line("TRAINYARD_RESULT {broken") is None

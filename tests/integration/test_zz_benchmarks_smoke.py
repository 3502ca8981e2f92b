"""Every benchmark runs, at its --smoke size, exactly as a user runs it, and prints its JSON line.

A benchmark that no test runs rots unseen (train_overhead.py once failed to start its own Ray
head). Each one runs here as a subprocess, `python benchmarks/X.py --smoke`; its last line of
stdout must parse as JSON, name the benchmark and hold its ratio fields. Timings are never
asserted: they mean nothing at this size, on a shared CI machine.

train_overhead and autoscale start their own Ray head, as users run them (the environment
is stripped of Ray's address and token); the sweep benchmarks and families connect to the
session's head through $RAY_ADDRESS, and serve_overhead uses the session's MLflow server
(--mlflow-url), which keeps the file within a few minutes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration

TIMEOUT_S = 300  # each: a smoke run takes well under a minute on a quiet 2-core machine

_RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _run(name: str, *, env: dict, args: tuple = (), timeout_s: float = TIMEOUT_S) -> tuple[dict, subprocess.CompletedProcess]:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
    tail = f"\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}{tail}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{name} --smoke printed nothing{tail}"
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{name} --smoke: the last line of stdout is not JSON: {lines[-1][:300]!r}{tail}")
    assert out.get("benchmark") == name, out
    assert out["smoke"] is True and out["measure_lock"].startswith("skipped"), out
    assert len(out["load_avg"]) == 3 and all(isinstance(x, Number) for x in out["load_avg"]), out
    return out, proc


def _numbers(where: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(where.get(key), Number), f"{key!r} is not a number in {where}"


def _standalone_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in _RAY_VARS}


def _shared_env(head) -> dict:
    return {**_standalone_env(), **head.env()}


def test_train_overhead_standalone_against_a_fair_ddp():
    out, proc = _run("train_overhead", env=_standalone_env())
    _numbers(out, "ratio", "ratio_median", "trainyard_steps_per_s", "ddp_steps_per_s",
             "trainyard_submit_to_first_step_s", "ddp_submit_to_first_step_s", "submit_to_first_step_ratio",
             "ray_train_floor_s", "ray_train_floor_vs_ddp_start")
    assert out["ray_train_floor_s"] > 0, out
    startup = out["trainyard_startup"]
    _numbers(startup, "mlflow_run_start_s", "build_trainer_s", "worker_group_start_s", "imports_s",
             "models_and_plan_s", "deepspeed_init_s", "loop_setup_s", "first_checkpoint_s", "finish_s")
    # DDP copies every gradient when a parameter's strides differ from its gradient's: the
    # baseline would be slowed for nothing
    assert "Grad strides do not match" not in proc.stderr


def test_gpu_transformer_smoke_on_cpu(ray_head):
    # the GPU benchmark at a tiny shape on CPU (no GPU here): both sides run, the line holds
    # the ratio, MFU and which ZeRO stage `auto` picked against the fastest one
    out, _ = _run("gpu_transformer", env=_shared_env(ray_head), args=("--stages", "auto,0"))
    _numbers(out, "ratio", "trainyard_tokens_per_s", "raw_tokens_per_s", "auto_stage", "fastest_stage")
    assert out["on_gpu"] is False and set(out["stages"]) == {"auto", "0"}, out
    assert isinstance(out["auto_is_fastest"], bool), out
    for stage in out["stages"].values():
        assert stage["mfu"] is None or 0 < stage["mfu"] <= 1, out


def test_sweep_overhead(ray_head):
    out, _ = _run("sweep_overhead", env=_shared_env(ray_head))
    _numbers(out, "ratio", "ratio_vs_tune_floor")
    _numbers(out["inline"], "ratio", "per_trial_overhead_s")
    _numbers(out["train"], "ratio")
    assert out["inline"]["trials_done"] == out["trials"], out


def test_sweep_efficiency(ray_head):
    out, _ = _run("sweep_efficiency", env=_shared_env(ray_head))
    assert set(out["summary"]) == {"asha-stop", "asha-promote"}, out
    for summary in out["summary"].values():
        assert "ratio" in summary  # None when ASHA missed the target at this tiny size
        _numbers(summary, "total_steps_ratio_of_sums", "wall_ratio_of_sums", "best_gap_points_max")


def test_families(ray_head):
    out, _ = _run("families", env=_shared_env(ray_head))
    assert list(out["families"]) == ["cnn"], out
    _numbers(out["families"]["cnn"], "wall_ratio", "samples_per_s_ratio")


def test_serve_overhead(mlflow_server):
    out, _ = _run("serve_overhead", env=_standalone_env(), args=("--mlflow-url", mlflow_server))
    _numbers(out, "throughput_ratio", "p50_overhead_ms", "p99_ratio")
    assert out["key_check"] is True, out  # the Trainyard side sends a key, as a non-public endpoint needs
    for level in out["levels"].values():
        assert level["trainyard"]["errors"] == 0 and level["bare"]["errors"] == 0, level


def test_autoscale_standalone():
    out, _ = _run("autoscale", env=_standalone_env())
    assert out["state"] == "SUCCEEDED", out
    _numbers(out, "node_up_ratio", "first_step_ratio", "submit_to_node_up_s", "bare_submit_to_node_up_s")


# benchmarks/elastic.py --smoke runs once, in tests/integration/test_elastic_node_loss.py, which
# asserts on its JSON line (the same checks as here, and the node loss and regrow it shows): two
# trainings and a node replaced take minutes, too many to run twice.


def test_scheduler_scale():
    out, _ = _run("scheduler_scale", env=_standalone_env())
    (size,) = out["sizes"]
    assert size["queued"] == 1000, size
    _numbers(size["platform"], "burst_tick_s", "change_tick_s", "idle_tick_s")
    _numbers(size["baseline"], "burst_tick_s", "steady_tick_s")
    assert "idle_server" in out, out


def test_submit_throughput_loses_nothing_when_killed():
    out, _ = _run("submit_throughput", env=_standalone_env())
    assert [level["clients"] for level in out["levels"]] == [1, 8, 32], out
    for level in out["levels"]:
        assert level["errors"] == 0 and level["submitted"] > 0, level
    _numbers(out["ratio"], "http_vs_store_floor")
    # the one figure a smoke run does prove: acknowledged submissions survive kill -9
    assert out["crash"]["ok"] and out["crash"]["acknowledged_missing"] == 0, out["crash"]


def test_auth_overhead():
    out, _ = _run("auth_overhead", env=_standalone_env())
    assert set(out["ops"]) == {"GET /v1/jobs", "POST /v1/jobs"}, out
    for op in out["ops"].values():
        _numbers(op, "ratio")
        assert op["trainyard"]["errors"] == 0 and op["baseline"]["errors"] == 0, op
    _numbers(out, "ratio")

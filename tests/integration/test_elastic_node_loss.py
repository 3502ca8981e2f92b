"""An elastic job on the fake multi-node autoscaling cluster loses a node and gets it back.

It runs `python benchmarks/elastic.py --smoke` once, as a user runs it, and asserts on the
JSON line it prints (CI's run of that benchmark's smoke size, too). The benchmark starts one
fake-autoscaling head (cluster/local.yaml, the way `trainyard up --autoscaling` starts it, but
through trainyard.local.fake_provider.ReclaimingFakeProvider, so that a node whose raylet died
leaves the provider's list, as a reclaimed cloud instance does), whose `gpu-fake` nodes hold one
`gpu_node` each; the job asks for workers {min: 1, max: 2} with `custom_resources: {gpu_node:
1}`, so each worker needs a node of its own. The real job driver runs it (Ray Train elastic
scaling + DeepSpeed).

  1. with both nodes up it runs on 2 workers;
  2. once it passed step 6, one worker node's raylet is killed (with the node's processes), and
     the pool has no capacity for a replacement until the job runs on 1 (a spot reclaim):
     Ray Train restarts the group on 1 worker from the latest checkpoint;
  3. the autoscaler replaces the dead node and the group grows back to 2 (worlds 2 -> 1 -> 2);
  4. it ends with the final metrics of the same job run without interruption, within a
     tolerance (below), and its result's usage lists each world size it held, which the cost
     record turns into resizes.

Tolerance: with elastic_batch keep, every optimizer step averages the gradient over the same
32 examples at 1 or 2 workers (1 worker accumulates the 2 micro-batches the 2 ranks take:
DistributedSampler with the same seed and epoch permutes alike), the same number of steps run
and dropout is off, so the two runs differ only by float summation order (gloo's all-reduce
against local accumulation) and the steps replayed after the restart, which repeat the same
updates. On this 1024-example digits subset that moves the eval loss by well under 1%; the test
allows 5% (relative) on eval_loss and 0.03 on accuracy (about 10 of the 360 eval images), so
that a real divergence (a lost optimizer state, a wrong gradient accumulation after a resize,
a replayed data position: all several times larger) still fails it.

ZeRO-2 runs in CI; ZeRO-3 (the same scenario through the universal checkpoint form's stage-3
path) is marked slow: it doubles the file's time.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600
_RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _in_order(seq: list[int], wanted: list[int]) -> bool:
    it = iter(seq)
    return all(any(x == w for x in it) for w in wanted)


def _smoke(zero: int, keep: Path) -> dict:
    """benchmarks/elastic.py --smoke, standalone (its own head, as a user runs it): its JSON line."""
    env = {k: v for k, v in os.environ.items() if k not in _RAY_VARS}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "elastic.py"), "--smoke", "--zero", str(zero),
                           "--keep", str(keep)], cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    tail = f"\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"elastic --smoke exited {proc.returncode} without its JSON line{tail}")
    for name, run in (out.get("runs") or {}).items():
        log = Path(run["log"])
        assert run["rc"] == 0, (name, run["error"], log.read_text()[-6000:] if log.exists() else "no log", tail)
    assert proc.returncode == 0 and out["ok"] is True, f"elastic --smoke exited {proc.returncode}{tail}"
    # what tests/integration/test_zz_benchmarks_smoke.py asks of every benchmark's line
    assert out.get("benchmark") == "elastic" and out["smoke"] is True, out
    assert out["measure_lock"].startswith("skipped"), out
    assert len(out["load_avg"]) == 3 and all(isinstance(x, Number) for x in out["load_avg"]), out
    for key in ("wall_ratio", "uninterrupted_wall_s", "interrupted_wall_s", "accuracy_delta", "eval_loss_ratio"):
        assert isinstance(out.get(key), Number), f"{key!r} is not a number in {out}"
    return out


@pytest.mark.parametrize("zero", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_an_elastic_job_survives_a_lost_node_and_grows_back(test_root, zero, record_property):
    import importlib.util

    from trainyard.controller.costs import cost_record

    out = _smoke(zero, test_root / f"elastic-zero{zero}")
    events = out["interrupted_events"]
    record_property("elastic_events", events)
    record_property("elastic_restart_gap_s", out["restart_gap_s"])
    record_property("elastic_regrow_s", out["regrow_s"])
    print("elastic:", events, "restart gap", out["restart_gap_s"], "s, regrow", out["regrow_s"], "s")

    # (1) both started with the two nodes up, on 2 workers; the straight one stayed there
    assert out["uninterrupted_worlds"] == [2], out
    worlds = out["interrupted_worlds"]
    assert worlds[0] == 2 and out["killed_at_step"] is not None, events
    # (2) the lost node: on 1 from the checkpoint; (3) the node replaced, on 2 again
    assert _in_order(worlds, [2, 1, 2]), events
    assert worlds[-1] == 2, events

    # (4) the same final metrics
    m1, m2 = out["uninterrupted_metrics"], out["interrupted_metrics"]
    assert abs(m2["eval_loss"] - m1["eval_loss"]) <= 0.05 * m1["eval_loss"], (m1, m2)
    assert abs(m2["accuracy"] - m1["accuracy"]) <= 0.03, (m1, m2)

    # the cost record: one allocation per world size held, the changes counted as resizes
    usage = out["interrupted_usage"]
    sizes = [s["workers"] for s in usage["segments"]]
    assert _in_order(sizes, [2, 1, 2]), usage
    spec_src = importlib.util.spec_from_file_location("elastic_bench", REPO / "benchmarks" / "elastic.py")
    bench = importlib.util.module_from_spec(spec_src)
    spec_src.loader.exec_module(bench)
    spec = bench.job_spec(storage="file:///unused", steps=out["steps"], zero=zero, delay_s=out["step_delay_s"])
    start = usage["segments"][0]["start_unix"] - 1
    end = max(s["last_unix"] for s in usage["segments"]) + 1
    record = cost_record(spec, submitted_at=start, finished_at=end, attempts=[(start, end)],
                         result={"metrics": m2, "usage": usage})
    assert record is not None and record.resizes >= 2 and record.lost_seconds["resize"] > 0, record

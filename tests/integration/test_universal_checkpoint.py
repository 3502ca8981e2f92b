"""A checkpoint saved by 2 workers resumes on 1, and that one's on 2 again (ZeRO 1, 2 and 3).

The real Trainer (DeepSpeed on CPU, gloo) in processes spawned by torch.multiprocessing: each
phase is one process group that runs all three stages in turn, so torch and DeepSpeed are
imported three times in all, not nine. Ray Train would add a worker group start per run
(9 runs) for nothing this test looks at: the restore path is the Trainer's, and the session it
reports through is the only part replaced (a folder stands for the run's storage).

  A  2 workers, steps 1-6 uninterrupted (the reference), checkpoints at 2, 4, 6
  B  1 worker resumes A's step-2 checkpoint (universal form, 2 accumulation steps), stops at 4
  C  2 workers resume B's step-4 checkpoint, run to 6

cnn without dropout, eval every step on the whole eval set: eval_loss is the same function of
the weights at any world size, so the curves can be compared step by step.
"""
from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.integration

STAGES = (1, 2, 3)
# 64 samples, micro-batch 8: an epoch is 4 optimizer steps of 16 samples at either world size
# (2 workers x 1 accumulation step, or 1 worker x 2), so 6 steps cross an epoch boundary
SPEC = {
    "name": "universal", "workload": "cnn",
    "data": {"train_limit": 64},
    "hyperparameters": {"channels": 4, "hidden": 32, "dropout": 0.0},
    "resources": {"workers": 2, "cpus_per_worker": 1},  # see _workers
    "training": {"max_steps": 6, "batch_size": 8, "lr": 0.05, "eval_every_steps": 1, "log_every_steps": 1},
    "checkpoint": {"every_steps": 2},
}
# The same global batch gives the same gradient up to float summation order (fp32, one rank
# summing 2 micro-batches vs gloo averaging 2 ranks): ~1e-7 relative per step. Adam divides by
# sqrt(v) and can magnify that for elements with tiny v over the few steps here; weights within
# 1e-4 relative, eval_loss within 1e-5 leave room for it (seen: 3e-7). A wrong batch (half of
# it, other samples) or lost moments move the weights by about lr = 5e-2 per step, and eval_loss
# by more than 1e-3 (the smallest step-to-step move of the reference curve, asserted below).
RTOL = 1e-4
EVAL_ATOL = 1e-5


def _workers():
    """An elastic job of 1 to 2 workers once the spec has ranges; until then a 2-worker job
    that a phase runs on 1 (what the runner sees after a lost node either way)."""
    try:
        from trainyard.specs.models import gas_for_world  # noqa: F401
    except ImportError:
        return 2
    return {"min": 1, "max": 2}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _phase(world: int, jobs: list[dict], out) -> dict:
    import torch.multiprocessing as mp

    from universal_support import run_phase

    mp.spawn(run_phase, args=(world, _port(), jobs, str(out)), nprocs=world, join=True)
    return {int(k): v for k, v in json.loads(out.read_text()).items()}


@pytest.fixture(scope="module")
def runs(test_root):
    from trainyard.specs import parse_job_spec

    root = test_root / "universal"
    specs = {s: parse_job_spec({**SPEC, "deepspeed": {"zero_stage": s},
                                       "resources": {**SPEC["resources"], "workers": _workers()}}).model_dump(mode="json") for s in STAGES}
    d = {s: {p: root / f"z{s}" / p for p in "ABC"} for s in STAGES}
    a = _phase(2, [{"stage": s, "spec": specs[s], "checkpoint": None, "save_root": str(d[s]["A"]),
                    "stop_at": None} for s in STAGES], root / "a.json")
    b = _phase(1, [{"stage": s, "spec": specs[s], "checkpoint": str(d[s]["A"] / "step-2"),
                    "save_root": str(d[s]["B"]), "stop_at": 4} for s in STAGES], root / "b.json")
    c = _phase(2, [{"stage": s, "spec": specs[s], "checkpoint": str(d[s]["B"] / "step-4"),
                    "save_root": str(d[s]["C"]), "stop_at": None} for s in STAGES], root / "c.json")
    return {"A": a, "B": b, "C": c, "dirs": d}


def _same_states(loaded: dict, saved: dict, *, exact: bool = True) -> None:
    import torch

    assert set(loaded) == set(saved)
    for key, value in saved.items():
        if key.endswith("__steps__"):
            assert loaded[key] == value, key
            continue
        for part in ("w", "exp_avg", "exp_avg_sq"):
            if exact:
                assert torch.equal(loaded[key][part], value[part]), (key, part)
            else:
                torch.testing.assert_close(loaded[key][part], value[part], rtol=RTOL, atol=1e-6)


def _eval_losses(reports: list[dict]) -> dict[int, float]:
    return {int(r["step"]): r["eval_loss"] for r in reports if "eval_loss" in r}


@pytest.mark.parametrize("stage", STAGES)
def test_a_checkpoint_resumes_on_another_world_size(runs, stage):
    import torch

    a, b, c, d = runs["A"][stage], runs["B"][stage], runs["C"][stage], runs["dirs"][stage]
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731

    # 2 -> 1: weights, Adam moments and step count as the 2 workers saved them at step 2
    saved2 = load(d["A"] / "states-step-2.pt")
    assert saved2["model.__steps__"] == [2.0]
    _same_states(load(d["B"] / "loaded.pt"), saved2)
    assert b["gas"] == 2 and b["resize"]["resized_from_world"] == 2 and b["resize"]["universal"] == ["model"]
    assert b["resize"]["global_batch"] == b["resize"]["global_batch_from"] == 16
    assert b["resize"]["data_exact"] is True
    assert b["resize"]["rng"] == {"restored": [0], "seeded": []}

    # 1 -> 2: as the 1 worker saved them at step 4; rank 1 had no generators to restore
    saved4 = load(d["B"] / "states-step-4.pt")
    assert saved4["model.__steps__"] == [4.0]
    _same_states(load(d["C"] / "loaded.pt"), saved4)
    assert c["gas"] == 1 and c["resize"]["resized_from_world"] == 1 and c["resize"]["data_exact"] is True
    assert c["resize"]["rng"] == {"restored": [0], "seeded": [1]}

    # the resized runs go on with the uninterrupted curve: same samples per step, same gradient
    ref = _eval_losses(a["reports"])
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    resumed = {**_eval_losses(b["reports"]), **_eval_losses(c["reports"])}
    assert sorted(resumed) == [3, 4, 5, 6]
    assert resumed == pytest.approx({s: ref[s] for s in resumed}, rel=0, abs=EVAL_ATOL)
    # the comparison is not between flat lines: every step moves the curve 100 x the tolerance
    assert min(abs(ref[s + 1] - ref[s]) for s in range(1, 6)) > 100 * EVAL_ATOL
    _same_states(load(d["C"] / "states-step-6.pt"), load(d["A"] / "states-step-6.pt"), exact=False)

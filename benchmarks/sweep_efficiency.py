"""ASHA vs random search on the cnn family: same search space, same seed, same num_trials.

    python benchmarks/sweep_efficiency.py [--trials 12] [--epochs 10] [--target 0.9] [--boards FILE]

Both sweeps sample the same configurations in the same order (seeded random search); one
runs every trial to the end (fifo), the other lets ASHA stop the weak ones at its rungs.
For each it reports the total optimizer steps spent by all trials before the best-so-far
accuracy first reached --target, the final best accuracy, and the wall time. One JSON line:
    steps_ratio = asha_steps_to_target / random_steps_to_target   (target <= 0.4)
    best_gap    = random_best - asha_best, in accuracy points     (target <= 1.0)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid

from _sweep_common import ray_head


def make_spec(scheduler: str, *, trials: int, epochs: int, storage: str, seed: int, train_limit: int):
    from trainyard.specs import parse_sweep_spec

    return parse_sweep_spec({
        "name": f"bench-{scheduler}", "workload": "cnn",
        "data": {"train_limit": train_limit},
        "hyperparameters": {"hidden": 64},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": 1},
        "training": {"epochs": epochs, "batch_size": 32, "log_every_steps": 1000, "seed": seed},
        "checkpoint": {"storage": storage, "keep": 1},
        "tracking": {"register_model": False},
        "sweep": {
            "search_space": {"training.lr": {"loguniform": [3e-5, 3e-2]},
                             "hyperparameters.channels": {"choice": [4, 8, 16]},
                             "hyperparameters.dropout": {"uniform": [0.0, 0.5]}},
            "algorithm": "random", "scheduler": scheduler, "num_trials": trials,
            "max_concurrent_trials": 2, "seed": seed,
            # rungs at 2 and 6 evaluations: one epoch says little on 8x8 digits (most configs
            # sit at chance after it), two separate the hopeless ones
            "asha": {"grace_period": 2, "reduction_factor": 3, "max_t": epochs},
        },
    })


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-limit", type=int, default=1024)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--boards", help="also write both leaderboards (with curves) to this JSON file")
    args = parser.parse_args()

    from trainyard.runner.sweep import run_sweep
    from trainyard.sweeps.leaderboard import steps_to_target

    out: dict = {"benchmark": "sweep_efficiency", "family": "cnn", "trials": args.trials,
                 "epochs": args.epochs, "train_limit": args.train_limit, "target_accuracy": args.target}
    boards: dict = {}
    with tempfile.TemporaryDirectory(prefix="ty-bench-") as tmp, ray_head():
        for scheduler in ("fifo", "asha"):
            spec = make_spec(scheduler, trials=args.trials, epochs=args.epochs, storage=f"file://{tmp}",
                             seed=args.seed, train_limit=args.train_limit)
            t0 = time.monotonic()
            result = run_sweep(spec, sweep_id=f"bench-{scheduler}-{uuid.uuid4().hex[:6]}", tracking_uri=None,
                               register=False, emit=lambda line: None)
            wall = time.monotonic() - t0
            board = result["leaderboard"]
            name = "random" if scheduler == "fifo" else "asha"
            boards[name] = board
            out[name] = {"steps_to_target": steps_to_target(board, args.target),
                         "total_steps": board["best_so_far"][-1][1] if board["best_so_far"] else None,
                         "best_accuracy": board["best"]["metric"] if board["best"] else None,
                         "best_trial_params": board["best"]["params"] if board["best"] else None,
                         "stopped_trials": sum(1 for r in board["rows"] if r["state"] == "STOPPED"),
                         "wall_s": round(wall, 1),
                         "steps_to": {str(t): steps_to_target(board, t) for t in (0.8, 0.85, 0.9, 0.93, 0.95)}}
    r, a = out["random"], out["asha"]
    out["steps_ratio"] = (round(a["steps_to_target"] / r["steps_to_target"], 3)
                          if a["steps_to_target"] and r["steps_to_target"] else None)
    out["total_steps_ratio"] = (round(a["total_steps"] / r["total_steps"], 3)
                                if a["total_steps"] and r["total_steps"] else None)
    out["best_gap_points"] = (round(100 * (r["best_accuracy"] - a["best_accuracy"]), 2)
                              if r["best_accuracy"] is not None and a["best_accuracy"] is not None else None)
    out["wall_ratio"] = round(a["wall_s"] / r["wall_s"], 3)
    out["meets_target"] = bool(out["steps_ratio"] is not None and out["steps_ratio"] <= 0.4
                               and out["best_gap_points"] is not None and out["best_gap_points"] <= 1.0)
    if args.boards:
        with open(args.boards, "w") as fh:
            json.dump(boards, fh)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""ASHA vs random search on the cnn family: same search space, same seeds, same num_trials.

    python benchmarks/sweep_efficiency.py [--seeds 0,1,2] [--trials 27] [--epochs 9]
                                          [--strategies stop,promote]
                                          [--target-gap 1.0 | --target 0.97] [--boards FILE]

Per seed it runs random search, then ASHA once per sweep.asha.strategy given (stop: Ray's
asynchronous ASHA; promote: promotion-based ASHA, trials wait at rungs), side by side.

Both sweeps run through the platform's run_sweep (1-worker trials, DeepSpeed ZeRO-1, the
job's real worker loop) and sample the same configurations in the same order (seeded random
search). One trains every trial to the end (scheduler fifo: "random"); the other lets ASHA
stop the weak ones at its rungs (grace 1 epoch, reduction factor 3, max_t = epochs: rungs at
1, 3 and 9 epochs for 9). Every trial trains with the same seed, so a config's curve is the same in
both sweeps: ASHA's trials are prefixes of random's.

The search space is wide on purpose, as in practice: lr loguniform over 1e-5..1 (too small
learns nothing in the budget, too large diverges), channels and dropout as the family's.
Many configurations are poor; early stopping pays only there.

Target: by default, per seed, the best accuracy random search reached (every config trained
to the end: the best this space gives in the budget) minus --target-gap points; --target
fixes one for all seeds instead.

Steps are counted in the order they are spent: the board's best-so-far line sums, at each
result, the steps every trial had reported by then; steps_to_target is that sum at the first
result whose best-so-far reaches the target. One JSON line per seed: per sweep the steps
to target, total steps, final best accuracy, wall time, and for each ASHA its ratios to
random; then a summary per strategy: per-seed ratios, their median ("ratio"), mean, the
ratio of the summed steps, and the largest best gap. Targets: ratio <= 0.4, best gap <= 1
point.

The figures in docs/sweeps.md come from `--trials 243 --seeds 0,1,2,3,4,5,6,7,8,9
--strategies promote` (about an hour on 2 cores) and `--trials 81 --seeds 0,...,9`.

    python benchmarks/sweep_efficiency.py --smoke   # 1 seed, 3 trials, 3 epochs, 128 samples

The last line of stdout is the summary JSON line ({"benchmark": "sweep_efficiency", "summary":
{"asha-<strategy>": {"ratio", ...}}, "load_avg", ...}). Connects to $RAY_ADDRESS when set (with
its RAY_AUTH_MODE/RAY_AUTH_TOKEN); otherwise starts a private head. A measured run (not
--smoke) holds the measurement lock (benchmarks/_bench.py).
"""
from __future__ import annotations

import _bench  # first: Ray's auth environment before anything imports ray

import argparse
import json
import statistics
import time
import uuid

SEARCH_SPACE = {"training.lr": {"loguniform": [1e-5, 1.0]},
                "hyperparameters.channels": {"choice": [4, 8, 16, 32]},
                "hyperparameters.dropout": {"uniform": [0.0, 0.5]}}


def make_spec(scheduler: str, *, trials: int, epochs: int, storage: str, seed: int, train_limit: int,
              grace: int, reduction: float, strategy: str = "stop"):
    from trainyard.specs import parse_sweep_spec

    return parse_sweep_spec({
        "name": f"bench-{scheduler}", "workload": "cnn",
        "data": {"train_limit": train_limit},
        "hyperparameters": {"hidden": 64},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": 1},
        # one training seed for every trial: a config trains the same way in both sweeps
        "training": {"epochs": epochs, "batch_size": 32, "log_every_steps": 1000, "seed": 0},
        "checkpoint": {"storage": storage, "keep": 1},
        "tracking": {"register_model": False},
        "sweep": {
            "search_space": SEARCH_SPACE, "algorithm": "random", "scheduler": scheduler,
            "num_trials": trials, "max_concurrent_trials": 2, "seed": seed,
            "asha": {"grace_period": grace, "reduction_factor": reduction, "max_t": epochs,
                     "strategy": strategy},
        },
    })


def summarize(board: dict, target: float, wall: float) -> dict:
    from trainyard.sweeps.leaderboard import steps_to_target

    best = max((r["best"] for r in board["rows"] if r.get("best") is not None), default=None)
    return {"steps_to_target": steps_to_target(board, target),
            "total_steps": board["best_so_far"][-1][1] if board["best_so_far"] else None,
            "best_accuracy": best,
            "stopped_trials": sum(1 for r in board["rows"] if r["state"] == "STOPPED"),
            "trials": len(board["rows"]), "wall_s": round(wall, 1)}


SMOKE = {"seeds": "0", "trials": 3, "epochs": 3, "train_limit": 128}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default=None, help="default 0,1,2 (--smoke: 0)")
    parser.add_argument("--trials", type=int, default=None, help="default 27 (--smoke: 3)")
    parser.add_argument("--epochs", type=int, default=None, help="default 9 (--smoke: 3)")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="0: the whole train split (default; --smoke: 128)")
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--reduction", type=float, default=3.0)
    parser.add_argument("--target", type=float, default=None, help="one accuracy target for every seed")
    parser.add_argument("--target-gap", type=float, default=1.0,
                        help="points below random's best (per seed), when --target is not given")
    parser.add_argument("--strategies", default="stop,promote",
                        help="sweep.asha.strategy values to run against random search (comma-separated)")
    parser.add_argument("--boards", help="also write every leaderboard (with curves) to this JSON file")
    _bench.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else {"seeds": "0,1,2", "trials": 27, "epochs": 9, "train_limit": 0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    seeds = [int(s) for s in args.seeds.split(",")]

    from trainyard.runner.sweep_driver import run_sweep

    out: dict = {"family": "cnn", "trials": args.trials,
                 "epochs": args.epochs, "train_limit": args.train_limit, "search_space": SEARCH_SPACE,
                 "asha": {"grace_period": args.grace, "reduction_factor": args.reduction, "max_t": args.epochs},
                 "target": args.target if args.target is not None else f"random best - {args.target_gap} points",
                 "seeds": {}}
    boards: dict = {}
    strategies = [x for x in args.strategies.split(",") if x]
    variants = [("random", "fifo", "stop")] + [(f"asha-{st}", "asha", st) for st in strategies]
    out["strategies"] = strategies
    with _bench.measurement(args.smoke) as run, _bench.work_dir("ty-bench-sweep-") as tmp, \
            _bench.ray_head(num_cpus=2, logs=tmp):
        _bench.init_ray()  # before run_sweep's own: keeps the workers' output off stdout
        for seed in seeds:
            runs = {}
            for name, scheduler, strategy in variants:
                spec = make_spec(scheduler, trials=args.trials, epochs=args.epochs, storage=f"file://{tmp}",
                                 seed=seed, train_limit=args.train_limit, grace=args.grace,
                                 reduction=args.reduction, strategy=strategy)
                t0 = time.monotonic()
                result = run_sweep(spec, sweep_id=f"bench-{name}-{seed}-{uuid.uuid4().hex[:6]}",
                                   tracking_uri=None, register=False, emit=lambda line: None)
                runs[name] = (result["leaderboard"], time.monotonic() - t0)
                boards[f"{seed}/{name}"] = result["leaderboard"]
            random_best = max(r["best"] for r in runs["random"][0]["rows"] if r.get("best") is not None)
            target = args.target if args.target is not None else round(random_best - args.target_gap / 100, 4)
            row = {"target": target, **{n: summarize(b, target, w) for n, (b, w) in runs.items()}}
            r = row["random"]
            for name, _, _ in variants[1:]:
                a = row[name]
                a["steps_ratio"] = (round(a["steps_to_target"] / r["steps_to_target"], 3)
                                    if a["steps_to_target"] and r["steps_to_target"] else None)
                a["best_gap_points"] = round(100 * (r["best_accuracy"] - a["best_accuracy"]), 2)
                a["wall_ratio"] = round(a["wall_s"] / r["wall_s"], 3)
            out["seeds"][str(seed)] = row
            print(json.dumps({"seed": seed, **row}), flush=True)
    rows = list(out["seeds"].values())
    out["summary"] = {}
    for name, _, _ in variants[1:]:
        ratios = [row[name]["steps_ratio"] for row in rows if row[name]["steps_ratio"] is not None]
        both = [row for row in rows if row[name]["steps_to_target"] and row["random"]["steps_to_target"]]
        summary = {
            "steps_ratio_per_seed": [row[name]["steps_ratio"] for row in rows],
            "steps_ratio_median": round(statistics.median(ratios), 3) if ratios else None,
            "steps_ratio_mean": round(statistics.mean(ratios), 3) if ratios else None,
            "steps_ratio_of_sums": (round(sum(row[name]["steps_to_target"] for row in both)
                                          / sum(row["random"]["steps_to_target"] for row in both), 3)
                                    if both else None),
            "missed_target_seeds": [s for s, row in out["seeds"].items() if not row[name]["steps_to_target"]],
            "best_gap_points_max": max(row[name]["best_gap_points"] for row in rows),
            "total_steps_ratio_of_sums": round(sum(row[name]["total_steps"] for row in rows)
                                               / sum(row["random"]["total_steps"] for row in rows), 3),
            "wall_ratio_of_sums": round(sum(row[name]["wall_s"] for row in rows)
                                        / sum(row["random"]["wall_s"] for row in rows), 3),
        }
        summary["ratio"] = summary["steps_ratio_median"]
        summary["meets_target"] = bool(summary["ratio"] is not None and summary["ratio"] <= 0.4
                                       and not summary["missed_target_seeds"]
                                       and summary["best_gap_points_max"] <= 1.0)
        out["summary"][name] = summary
    if args.boards:
        with open(args.boards, "w") as fh:
            json.dump(boards, fh)
    _bench.emit("sweep_efficiency", out, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

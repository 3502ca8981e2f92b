"""Sweep overhead: N trivial trials of about 1 s each, 2 at a time.

    python benchmarks/sweep_overhead.py [--trials 100] [--seconds 1.0] [--gang-trials N]

ideal = trials x seconds / concurrency. Two measurements, one JSON line:
  - "gang": the real sweep path (run_sweep): every trial is a Tune trial that builds and fits
    a 1-worker TorchTrainer whose worker loop sleeps `seconds` and reports once. This is
    what a sweep costs per trial on top of training.
  - "tune_floor": the same trials as plain Tune function trainables (no Train worker group):
    the part of the overhead that Tune itself adds.
ratio = observed / ideal (target <= 1.2).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid

from _sweep_common import ray_head


def trivial_loop(config):
    import time as _t

    import ray.train

    _t.sleep(float(config["spec"]["hyperparameters"].get("sleep_s", 1.0)))
    ray.train.report({"accuracy": 1.0, "step": 1, "trainyard_done": 1})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--gang-trials", type=int, default=None,
                        help="trials for the full path (default: --trials); fewer where time is short")
    parser.add_argument("--skip-floor", action="store_true")
    args = parser.parse_args()
    ideal = args.trials * args.seconds / args.concurrency
    gang_trials = args.gang_trials or args.trials
    gang_ideal = gang_trials * args.seconds / args.concurrency
    out: dict = {"benchmark": "sweep_overhead", "trials": args.trials, "trial_s": args.seconds,
                 "concurrency": args.concurrency, "ideal_s": ideal}

    from trainyard.specs import parse_sweep_spec

    with tempfile.TemporaryDirectory(prefix="ty-bench-") as tmp, ray_head(num_cpus=args.concurrency):
        import ray
        from ray import tune

        ray.init()
        if not args.skip_floor:
            def plain(config):
                time.sleep(args.seconds)
                tune.report({"accuracy": 1.0})

            t0 = time.monotonic()
            tune.Tuner(tune.with_resources(plain, {"cpu": 1}),
                       param_space={"i": tune.grid_search(list(range(args.trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=args.concurrency),
                       run_config=tune.RunConfig(storage_path=tmp, name="floor", verbose=0)).fit()
            floor = time.monotonic() - t0
            out["tune_floor"] = {"observed_s": round(floor, 1), "ratio": round(floor / ideal, 3)}

        from trainyard.runner.sweep import run_sweep

        spec = parse_sweep_spec({
            "name": "bench-overhead", "workload": "cnn",
            "hyperparameters": {"sleep_s": args.seconds},
            "resources": {"workers": 1, "cpus_per_worker": 1},
            "checkpoint": {"storage": f"file://{tmp}"},
            "tracking": {"register_model": False},
            "sweep": {"search_space": {"training.seed": {"randint": [0, 1_000_000]}},
                      "num_trials": gang_trials, "max_concurrent_trials": args.concurrency},
        }, check_workload=False)
        t0 = time.monotonic()
        result = run_sweep(spec, sweep_id=f"overhead-{uuid.uuid4().hex[:6]}", tracking_uri=None,
                           register=False, emit=lambda line: None, train_loop=trivial_loop)
        gang = time.monotonic() - t0
        out["gang"] = {"trials": gang_trials, "ideal_s": gang_ideal, "observed_s": round(gang, 1),
                       "ratio": round(gang / gang_ideal, 3),
                       "trials_done": sum(1 for r in result["leaderboard"]["rows"] if r["state"] == "DONE"),
                       "per_trial_overhead_s": round((gang - gang_ideal) * args.concurrency / gang_trials, 2)}
    out["ratio"] = out["gang"]["ratio"]
    out["meets_target"] = out["ratio"] <= 1.2
    print(json.dumps(out))


if __name__ == "__main__":
    main()

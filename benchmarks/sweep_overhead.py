"""Sweep overhead: N trivial trials of about 1 s each, 2 at a time.

    python benchmarks/sweep_overhead.py [--trials 100] [--seconds 1.0] [--train-trials 10]

ideal = trials x seconds / concurrency; ratio = observed / ideal (target <= 1.2). Every
measurement goes through the platform's real sweep path (run_sweep: spec, Tune, storage,
progress callback, leaderboard), with a worker loop that sleeps `seconds` and reports once:
  - "inline": sweep.trial_executor inline (what `auto` picks for 1-worker trials): the loop
    runs in the Tune trial actor, reused from trial to trial. The headline ratio.
  - "train": sweep.trial_executor train: every trial builds and fits a 1-worker TorchTrainer
    (what gangs of N >= 2 workers use). Fewer trials by default: each pays the worker group's
    start.
  - "tune_floor": the same trials as bare Tune function trainables (reused actors), no
    platform code: what Tune itself costs here.
One JSON line.
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

    from trainyard.runner.train import loop_session

    session = loop_session(config)  # a Train worker's, or the inline trial's
    _t.sleep(float(config["spec"]["hyperparameters"].get("sleep_s", 1.0)))
    session.report({"accuracy": 1.0, "step": 1, "trainyard_done": 1})


def sweep_once(*, executor: str, trials: int, seconds: float, concurrency: int, storage: str) -> dict:
    from trainyard.runner.sweep import run_sweep
    from trainyard.specs import parse_sweep_spec

    spec = parse_sweep_spec({
        "name": f"bench-overhead-{executor}", "workload": "cnn",
        "hyperparameters": {"sleep_s": seconds},
        "resources": {"workers": 1, "cpus_per_worker": 1},
        "checkpoint": {"storage": storage},
        "tracking": {"register_model": False},
        "sweep": {"search_space": {"training.seed": {"randint": [0, 1_000_000]}},
                  "num_trials": trials, "max_concurrent_trials": concurrency,
                  "trial_executor": executor},
    }, check_workload=False)
    ideal = trials * seconds / concurrency
    t0 = time.monotonic()
    result = run_sweep(spec, sweep_id=f"overhead-{executor}-{uuid.uuid4().hex[:6]}", tracking_uri=None,
                       register=False, emit=lambda line: None, train_loop=trivial_loop)
    observed = time.monotonic() - t0
    return {"trials": trials, "ideal_s": ideal, "observed_s": round(observed, 1),
            "ratio": round(observed / ideal, 3), "executor": result["trial_executor"],
            "trials_done": sum(1 for r in result["leaderboard"]["rows"] if r["state"] == "DONE"),
            "per_trial_overhead_s": round((observed - ideal) * concurrency / trials, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--train-trials", type=int, default=10,
                        help="trials for the train executor (0: skip it)")
    parser.add_argument("--skip-floor", action="store_true")
    args = parser.parse_args()
    ideal = args.trials * args.seconds / args.concurrency
    out: dict = {"benchmark": "sweep_overhead", "trials": args.trials, "trial_s": args.seconds,
                 "concurrency": args.concurrency, "ideal_s": ideal}

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
                       tune_config=tune.TuneConfig(max_concurrent_trials=args.concurrency, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=tmp, name="floor", verbose=0)).fit()
            floor = time.monotonic() - t0
            out["tune_floor"] = {"observed_s": round(floor, 1), "ratio": round(floor / ideal, 3)}

        common = {"seconds": args.seconds, "concurrency": args.concurrency, "storage": f"file://{tmp}"}
        out["inline"] = sweep_once(executor="inline", trials=args.trials, **common)
        if args.train_trials:
            out["train"] = sweep_once(executor="train", trials=args.train_trials, **common)
    out["ratio"] = out["inline"]["ratio"]
    out["meets_target"] = out["ratio"] <= 1.2
    print(json.dumps(out))


if __name__ == "__main__":
    main()

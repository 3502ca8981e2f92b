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
One JSON line: "ratio" (inline observed / ideal) and "ratio_vs_tune_floor" (inline observed /
bare Tune's observed, the platform against its baseline side by side).

    python benchmarks/sweep_overhead.py --smoke   # 4 trials of 0.25 s, 1 train-executor trial

Connects to $RAY_ADDRESS when set (with its RAY_AUTH_MODE/RAY_AUTH_TOKEN); otherwise starts a
private head. A measured run (not --smoke) holds the measurement lock (benchmarks/_bench.py).
"""
from __future__ import annotations

import _bench  # first: Ray's auth environment before anything imports ray

import argparse
import time
import uuid


def trivial_loop(config):
    import time as _t

    from trainyard.runner.session import loop_session

    session = loop_session(config)  # a Train worker's, or the inline trial's
    _t.sleep(float(config["spec"]["hyperparameters"].get("sleep_s", 1.0)))
    session.report({"accuracy": 1.0, "step": 1, "trainyard_done": 1})


def sweep_once(*, executor: str, trials: int, seconds: float, concurrency: int, storage: str) -> dict:
    from trainyard.runner.sweep_driver import run_sweep
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=None, help="default 100 (--smoke: 4)")
    parser.add_argument("--seconds", type=float, default=None, help="default 1.0 (--smoke: 0.25)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--train-trials", type=int, default=None,
                        help="trials for the train executor (0: skip it); default 10 (--smoke: 1)")
    parser.add_argument("--skip-floor", action="store_true")
    _bench.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    trials = args.trials or (4 if args.smoke else 100)
    seconds = args.seconds or (0.25 if args.smoke else 1.0)
    train_trials = args.train_trials if args.train_trials is not None else (1 if args.smoke else 10)
    ideal = trials * seconds / args.concurrency
    out: dict = {"trials": trials, "trial_s": seconds, "concurrency": args.concurrency, "ideal_s": ideal}

    with _bench.measurement(args.smoke) as run, _bench.work_dir("ty-bench-sweep-") as tmp, \
            _bench.ray_head(num_cpus=args.concurrency, logs=tmp):
        from ray import tune

        ray = _bench.init_ray()
        if not args.skip_floor:
            def plain(config):
                time.sleep(seconds)
                tune.report({"accuracy": 1.0})

            t0 = time.monotonic()
            tune.Tuner(tune.with_resources(plain, {"cpu": 1}),
                       param_space={"i": tune.grid_search(list(range(trials)))},
                       tune_config=tune.TuneConfig(max_concurrent_trials=args.concurrency, reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp), name="floor", verbose=0)).fit()
            floor = time.monotonic() - t0
            out["tune_floor"] = {"observed_s": round(floor, 1), "ratio": round(floor / ideal, 3)}

        common = {"seconds": seconds, "concurrency": args.concurrency, "storage": f"file://{tmp}"}
        out["inline"] = sweep_once(executor="inline", trials=trials, **common)
        if train_trials:
            out["train"] = sweep_once(executor="train", trials=train_trials, **common)
        ray.shutdown()
    out["ratio"] = out["inline"]["ratio"]
    out["ratio_vs_tune_floor"] = (round(out["inline"]["observed_s"] / out["tune_floor"]["observed_s"], 3)
                                  if "tune_floor" in out else None)
    out["meets_target"] = out["ratio"] <= 1.2
    _bench.emit("sweep_overhead", out, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

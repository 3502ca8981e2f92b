"""What Trainyard costs over plain torch DDP, on the same CNN, data and per-worker batch.

(a) Trainyard: Ray Train TorchTrainer, 2 workers, DeepSpeed at the stage `auto` picks, rank-0
    MLflow logging of every step (to a local SQLite store, through the background thread).
(b) Plain torch: 2 processes (torch.multiprocessing), gloo, DistributedDataParallel, AdamW.
    No Ray, no DeepSpeed. Each parameter gets the strides autograd gives its gradient (the
    first conv's (C, 1, k, k) weight comes back channels-last), so that DDP's buckets match
    and it does not copy every gradient ("Grad strides do not match bucket view strides").

Both run a fixed number of steps with 1 torch thread per worker (2 workers on 2 cores), the
same seed, model and batch slicing; steady-state steps/s is measured on rank 0 after a
warm-up, both as a mean rate ("ratio") and from the median step time ("ratio_median", which
other processes on a shared machine disturb less). The baseline runs before and after (a) and
its mean is used, since the machine's load drifts (--smoke: before only).

Start-up: "submit" is the moment the job would be handed over: for (a) before the MLflow run
is started and the trainer built (what the job driver does), for (b) before the processes are
spawned. `trainyard_startup` splits (a)'s submit-to-first-step, from timestamps taken by a thin
wrapper around the runner's own worker loop (the runner itself is not changed):

    mlflow_run_start_s   driver: the job's MLflow run created (start_job_run)
    build_trainer_s      driver: spec to TorchTrainer
    worker_group_start_s fit() called -> rank 0's loop entered (Ray Train controller, worker
                         actors, placement group, torch.distributed/gloo set-up)
    imports_s            rank 0: torch, deepspeed and the runner imported in the worker
    models_and_plan_s    rank 0: the loop's start until DeepSpeed is called (spec, workload,
                         models built, hardware detected, ZeRO plan)
    deepspeed_init_s     rank 0: deepspeed.initialize, summed over the job's engines
    loop_setup_s         rank 0: the rest until the first optimizer step ends (models, data,
                         the rank-0 MLflow logger and its params, the first step itself)
    first_checkpoint_s   rank 0: the first checkpoint (DeepSpeed save + ray.train.report with
                         it; with the default sizes that is the final one)
    finish_s             last step -> fit() returned (final eval, checkpoint, teardown)

Prints ONE JSON line (the last line of stdout):

    {"benchmark": "train_overhead", "ratio", "ratio_median", "trainyard_steps_per_s",
     "ddp_steps_per_s", "trainyard_submit_to_first_step_s", "ddp_submit_to_first_step_s",
     "submit_to_first_step_ratio", "trainyard_startup": {...}, "ray_train_floor_s",
     "ray_train_floor_vs_ddp_start", "trainyard_start_beyond_floor_s", "zero_stage", "load_avg", ...}

`ray_train_floor_s` is Ray Train alone: a TorchTrainer of 2 workers with an empty loop, fit()
called -> rank 0 in the loop, on the same head after (a) (warm: a lower bound). It is the part
of (a)'s start-up that no change in Trainyard can remove.

Usage: python benchmarks/train_overhead.py [--steps 400] [--warmup 50] [--batch 32] [--smoke]
Connects to $RAY_ADDRESS when set (export its RAY_AUTH_MODE/RAY_AUTH_TOKEN too); otherwise
starts (and stops) a private 2-CPU Ray head. A measured run (not --smoke) holds the
measurement lock (see benchmarks/_bench.py).
"""
from __future__ import annotations

import _bench  # noqa: F401  (first: Ray's auth environment before anything imports ray)

import argparse
import functools
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

# ----------------------------------------------------------------------------- (b) plain DDP


def _ddp_worker(rank: int, world: int, port: int, args: dict, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data.distributed import DistributedSampler

    from workloads.cnn.workload import build_datasets, build_models

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(args["seed"])
    module = build_models(args["hparams"])["model"]
    train, _ = build_datasets(args["hparams"], args["data"])
    _align_param_strides(module, *(t[:args["batch"]] for t in train.tensors))
    model = DDP(module)
    opt = torch.optim.AdamW(model.parameters(), lr=args["lr"])
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args["seed"])
    x_all, y_all = train.tensors
    bs = args["batch"]
    spe = max(1, len(sampler) // bs)
    step, epoch = 0, 0
    first = warm = None
    times, last = [], None
    while step < args["steps"]:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler), dtype=torch.long)
        for b in range(spe):
            idx = order[b * bs:(b + 1) * bs]
            x, y = x_all[idx], y_all[idx]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            float(loss.detach().item())  # what a training loop logs each step
            step += 1
            if first is None:
                first = time.time()
            now = time.perf_counter()
            if step == args["warmup"]:
                warm = now
            elif warm is not None:
                times.append(now - last)
            last = now
            if step >= args["steps"]:
                break
        epoch += 1
    end = time.perf_counter()
    if rank == 0:
        rate = (args["steps"] - args["warmup"]) / (end - warm)
        median = sorted(times)[len(times) // 2]
        Path(out_dir, "ddp.json").write_text(json.dumps({"steps_per_s": rate, "first_step_unix": first,
                                                         "median_step_s": median}))
    dist.barrier()  # rank 0 has written its result; tearing gloo down early aborted it once
    dist.destroy_process_group()


def _align_param_strides(module, x, y) -> None:
    """Give every parameter the strides autograd gives its gradient.

    DDP lays its gradient buckets out with each parameter's strides. The first conv's weight,
    (C, 1, k, k), is both contiguous and channels-last in memory, and oneDNN returns its
    gradient with channels-last strides: DDP then warns "Grad strides do not match bucket view
    strides" and copies gradients on every step, which the DeepSpeed side does not pay. One
    probe step on a copy (its random draws undone) tells the gradient strides; the weights keep
    their values, and the same memory order keeps the convolutions' cost the same.
    """
    import copy

    import torch
    import torch.nn.functional as F

    probe = copy.deepcopy(module)
    with torch.random.fork_rng():
        F.cross_entropy(probe(x), y).backward()
    for param, seen in zip(module.parameters(), probe.parameters()):
        if seen.grad is not None and seen.grad.stride() != param.stride():
            param.data = torch.empty_strided(param.shape, seen.grad.stride(),
                                             dtype=param.dtype).copy_(param.data)


def run_ddp(args: dict) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        submitted = time.time()
        mp.spawn(_ddp_worker, args=(2, port, args, out), nprocs=2, join=True)
        res = json.loads(Path(out, "ddp.json").read_text())
    res["submit_to_first_step_s"] = res["first_step_unix"] - submitted
    return res


# ----------------------------------------------------------------------------- (a) Trainyard


def _timed_loop(config: dict, *, inner, stamps_file: str) -> None:
    """The runner's worker loop (`inner`), with rank 0's start-up timestamps written to a file.

    Only what the runner calls by attribute is wrapped (deepspeed.initialize, the engine's
    save_checkpoint, ray.train.report); a wrapper that no longer fits leaves its fields empty,
    it never fails the run.
    """
    import time as _time

    stamps: dict = {"loop_enter_unix": _time.time()}
    import deepspeed
    import ray.train
    import torch  # noqa: F401

    import trainyard.runner.trainer  # noqa: F401  (what the loop imports; cached when it runs)

    stamps["imported_unix"] = _time.time()
    rank = ray.train.get_context().get_world_rank()
    ds_init, saves, reports = [], [], []

    def timed(fn, into):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            t0 = _time.time()
            try:
                return fn(*a, **k)
            finally:
                into.append((t0, _time.time()))
        return wrapper

    patches = [(deepspeed, "initialize", ds_init), (ray.train, "report", reports)]
    try:
        from deepspeed.runtime.engine import DeepSpeedEngine

        patches.append((DeepSpeedEngine, "save_checkpoint", saves))
    except ImportError:
        pass
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, into in patches:
        setattr(owner, name, timed(getattr(owner, name), into))
    try:
        inner(config)
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
        if rank == 0:
            ckpt_reports = [r for r in reports if saves and r[0] >= saves[0][0]]
            stamps.update({"deepspeed_init": ds_init, "saves": saves, "reports": reports,
                           "first_checkpoint": ([saves[0][0], ckpt_reports[0][1]] if ckpt_reports else None)})
            Path(stamps_file).write_text(json.dumps(stamps))


def _startup(*, submitted, mlflow_done, built, fit_called, first_step, last_step_end, fit_done,
             stamps: dict | None) -> dict:
    """Where (a)'s submit-to-first-step went, in seconds (None where a stamp is missing)."""
    def span(a, b):
        return round(b - a, 2) if a is not None and b is not None else None

    stamps = stamps or {}
    ds = stamps.get("deepspeed_init") or []
    ds_end = ds[-1][1] if ds else None
    ckpt = stamps.get("first_checkpoint")
    return {
        "mlflow_run_start_s": span(submitted, mlflow_done),
        "build_trainer_s": span(mlflow_done, built),
        "worker_group_start_s": span(fit_called, stamps.get("loop_enter_unix")),
        "imports_s": span(stamps.get("loop_enter_unix"), stamps.get("imported_unix")),
        "models_and_plan_s": span(stamps.get("imported_unix"), ds[0][0] if ds else None),
        "deepspeed_init_s": round(sum(b - a for a, b in ds), 2) if ds else None,
        "loop_setup_s": span(ds_end, first_step),
        "first_checkpoint_s": span(*ckpt) if ckpt else None,
        "finish_s": span(last_step_end, fit_done),
    }


def run_trainyard(args: dict, storage: str, tracking_uri: str | None, work: Path) -> dict:
    from ray.train import Checkpoint  # noqa: F401  (import cost outside the timed part)

    from trainyard.runner.job import build_trainer
    from trainyard.specs import parse_job_spec
    from trainyard.tracking.runs import start_job_run

    spec = parse_job_spec({
        "name": "bench-overhead", "workload": "cnn", "hyperparameters": args["hparams"],
        "data": args["data"],
        "resources": {"workers": 2, "cpus_per_worker": 1},
        "deepspeed": {"zero_stage": "auto"},
        "training": {"max_steps": args["steps"], "batch_size": args["batch"], "lr": args["lr"],
                     "optimizer": "adamw", "seed": args["seed"],
                     "eval_every_steps": args["steps"] * 10, "log_every_steps": 50},
        "checkpoint": {"every_steps": args["steps"] * 10, "storage": storage},
        "tracking": {"experiment": "bench", "register_model": False},
    })
    job_id = f"bench-{secrets.token_hex(3)}"
    if tracking_uri:
        # a fresh SQLite store creates its tables on first use (seconds); a job's MLflow server
        # has them already, so that is not start-up a job pays
        import mlflow

        mlflow.MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    submitted = time.time()
    mlflow_run = None
    if tracking_uri:
        mlflow_run = start_job_run(job_id=job_id, run_name=spec.name, experiment="bench",
                                   uri=tracking_uri).to_config()
    mlflow_done = time.time()
    trainer = build_trainer(spec, job_id=job_id, mlflow_run=mlflow_run,
                            extra_config={"log_model": False, "timing_warmup_steps": args["warmup"]})
    built = time.time()
    stamps_file = work / "startup-stamps.json"
    trainer.train_loop_per_worker = functools.partial(_timed_loop, inner=trainer.train_loop_per_worker,
                                                      stamps_file=str(stamps_file))
    fit_called = time.time()
    result = trainer.fit()
    fit_done = time.time()
    metrics = result.metrics or {}
    stamps = json.loads(stamps_file.read_text()) if stamps_file.exists() else None
    first = metrics["trainyard_first_step_unix"]
    # the last optimizer step ended at about first + (steps - 1) step times; the runner keeps no
    # stamp of it, so take its steady rate for the steps after the first
    last_end = first + (args["steps"] - 1) / metrics["train_steps_per_s"] if metrics.get("train_steps_per_s") else None
    return {"steps_per_s": metrics["train_steps_per_s"],
            "median_step_s": metrics["train_step_time_median_s"],
            "submit_to_first_step_s": first - submitted,
            "startup": _startup(submitted=submitted, mlflow_done=mlflow_done, built=built,
                                fit_called=fit_called, first_step=first, last_step_end=last_end,
                                fit_done=fit_done, stamps=stamps),
            "wall_s": fit_done - submitted}


def _bare_loop(config: dict) -> None:
    import ray.train

    if ray.train.get_context().get_world_rank() == 0:
        Path(config["stamp"]).write_text(repr(time.time()))


def run_ray_train_floor(work: Path) -> float:
    """Ray Train's own start, with nothing of Trainyard's: a TorchTrainer of 2 workers whose
    loop only notes the time on rank 0; fit() called -> that loop entered (the controller,
    the worker actors, the placement group, torch.distributed's gloo group). Run after (a) on
    the same head, so it starts warm: a lower bound of what any job on Ray Train pays."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    stamp = work / "floor-stamp"
    trainer = TorchTrainer(_bare_loop, train_loop_config={"stamp": str(stamp)},
                           scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(storage_path=str(work / "floor-storage"), name="floor"))
    called = time.time()
    trainer.fit()
    return float(stamp.read_text()) - called


def _zero_stage_auto() -> int:
    from trainyard.runner.strategy import Hardware, count_parameters, plan_deepspeed
    from workloads.cnn.workload import build_models

    import psutil

    params = count_parameters(build_models({}))
    hw = Hardware(device="cpu", memory_bytes=psutil.virtual_memory().total // 2)
    return plan_deepspeed({"zero_stage": "auto"}, num_params=params, world_size=2, hardware=hw).zero_stage


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="default 400 (--smoke: 30)")
    parser.add_argument("--warmup", type=int, default=None, help="default 50 (--smoke: 5)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-mlflow", action="store_true", help="(a) without MLflow logging")
    parser.add_argument("--keep", metavar="DIR", help="keep the run's files (logs, MLflow store) under DIR")
    _bench.add_smoke_flag(parser)
    opts = parser.parse_args(argv)
    steps = opts.steps or (30 if opts.smoke else 400)
    warmup = opts.warmup if opts.warmup is not None else (5 if opts.smoke else 50)
    if not 0 < warmup < steps - 1:
        parser.error(f"--warmup must be between 1 and steps - 2 ({steps - 2}), got {warmup}")
    args = {"steps": steps, "warmup": warmup, "batch": opts.batch, "lr": 0.003, "seed": 0,
            "hparams": {"channels": 32, "hidden": 128, "dropout": 0.1}, "data": {}}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    with _bench.measurement(opts.smoke) as run, _bench.work_dir("ty-bench-train-", keep=opts.keep) as work, \
            _bench.ray_head(num_cpus=2, logs=work):
        ray = _bench.init_ray()
        tracking = None if opts.no_mlflow else f"sqlite:///{work / 'mlflow.db'}"
        before = run_ddp(args)
        ours = run_trainyard(args, f"file://{work / 'storage'}", tracking, work)
        floor = run_ray_train_floor(work)
        ddp_runs = [before] if opts.smoke else [before, run_ddp(args)]
        ray.shutdown()
    ddp_rate = sum(r["steps_per_s"] for r in ddp_runs) / len(ddp_runs)
    ddp_median = sum(r["median_step_s"] for r in ddp_runs) / len(ddp_runs)
    ddp_first = before["submit_to_first_step_s"]
    _bench.emit("train_overhead", {
        "ratio": round(ours["steps_per_s"] / ddp_rate, 3),
        # the same from median step times: robust to other processes stealing the 2 cores
        "ratio_median": round(ddp_median / ours["median_step_s"], 3),
        "trainyard_steps_per_s": round(ours["steps_per_s"], 2),
        "ddp_steps_per_s": round(ddp_rate, 2),
        "ddp_steps_per_s_runs": [round(r["steps_per_s"], 2) for r in ddp_runs],
        "trainyard_median_steps_per_s": round(1 / ours["median_step_s"], 2),
        "ddp_median_steps_per_s": round(1 / ddp_median, 2),
        "trainyard_submit_to_first_step_s": round(ours["submit_to_first_step_s"], 2),
        "ddp_submit_to_first_step_s": round(ddp_first, 2),
        "submit_to_first_step_ratio": round(ours["submit_to_first_step_s"] / ddp_first, 3),
        "trainyard_startup": ours["startup"],
        # Ray Train's own start with an empty loop (warm head): what no change of ours can remove
        "ray_train_floor_s": round(floor, 2),
        "ray_train_floor_vs_ddp_start": round(floor / ddp_first, 3),
        "trainyard_start_beyond_floor_s": round(ours["submit_to_first_step_s"] - floor, 2),
        "zero_stage": _zero_stage_auto(),
        "steps": steps, "warmup": warmup, "batch_per_worker": opts.batch,
        "mlflow": tracking is not None,
    }, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What Trainyard costs over plain torch DDP, on the same CNN, data and per-worker batch.

(a) Trainyard: Ray Train TorchTrainer, 2 workers, DeepSpeed at the stage `auto` picks, rank-0
    MLflow logging of every step (to a local SQLite store, through the background thread).
(b) Plain torch: 2 processes (torch.multiprocessing), gloo, DistributedDataParallel, AdamW.
    No Ray, no DeepSpeed.

Both run a fixed number of steps with 1 torch thread per worker (2 workers on 2 cores), the
same seed, model and batch slicing; steady-state steps/s is measured on rank 0 after a
warm-up, both as a mean rate ("ratio") and from the median step time ("ratio_median", which
other processes on a shared machine disturb less). The baseline runs before and after (a) and
its mean is used, since the machine's load drifts. Prints ONE JSON line:

    {"trainyard_steps_per_s", "ddp_steps_per_s", "ratio", "trainyard_submit_to_first_step_s",
     "ddp_submit_to_first_step_s", "zero_stage", ...}

Usage: .venv/bin/python benchmarks/train_overhead.py [--steps 400] [--warmup 50] [--batch 32]
Connects to $RAY_ADDRESS when set; otherwise starts (and stops) a private 2-CPU Ray head.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "platform", REPO):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


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
    model = DDP(build_models(args["hparams"])["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=args["lr"])
    train, _ = build_datasets(args["hparams"], args["data"])
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


def run_trainyard(args: dict, storage: str, tracking_uri: str | None) -> dict:
    from ray.train import Checkpoint  # noqa: F401  (import cost outside the timed part)

    from trainyard.runner.train import build_trainer
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
    mlflow_run = None
    if tracking_uri:
        mlflow_run = start_job_run(job_id=job_id, run_name=spec.name, experiment="bench",
                                   uri=tracking_uri).to_config()
    trainer = build_trainer(spec, job_id=job_id, mlflow_run=mlflow_run,
                            extra_config={"log_model": False, "timing_warmup_steps": args["warmup"]})
    submitted = time.time()
    result = trainer.fit()
    metrics = result.metrics or {}
    return {"steps_per_s": metrics["train_steps_per_s"],
            "median_step_s": metrics["train_step_time_median_s"],
            "submit_to_first_step_s": metrics["trainyard_first_step_unix"] - submitted,
            "wall_s": time.time() - submitted}


def _zero_stage_auto() -> int:
    from trainyard.runner.strategy import Hardware, count_parameters, plan_deepspeed
    from workloads.cnn.workload import build_models

    import psutil

    params = count_parameters(build_models({}))
    hw = Hardware(device="cpu", memory_bytes=psutil.virtual_memory().total // 2)
    return plan_deepspeed({"zero_stage": "auto"}, num_params=params, world_size=2, hardware=hw).zero_stage


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--no-mlflow", action="store_true", help="(a) without MLflow logging")
    opts = parser.parse_args(argv)
    args = {"steps": opts.steps, "warmup": opts.warmup, "batch": opts.batch, "lr": 0.003, "seed": 0,
            "hparams": {"channels": 32, "hidden": 128, "dropout": 0.1}, "data": {}}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    work = Path(tempfile.mkdtemp(prefix="ty-bench-"))
    head = None
    import ray

    from trainyard.local.processes import start_ray_head, stop_ray_head

    try:
        if not os.environ.get("RAY_ADDRESS"):
            temp_dir = tempfile.mkdtemp(prefix="tyb-", dir="/tmp")
            head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=2,
                                  log_file=work / "ray.log")
            os.environ.update(head.env())
        ray.init(log_to_driver=False)
        tracking = None if opts.no_mlflow else f"sqlite:///{work / 'mlflow.db'}"
        before = run_ddp(args)
        ours = run_trainyard(args, f"file://{work / 'storage'}", tracking)
        after = run_ddp(args)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if head is not None:
            stop_ray_head(head)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    ddp_rate = (before["steps_per_s"] + after["steps_per_s"]) / 2
    out = {
        "benchmark": "train_overhead",
        "trainyard_steps_per_s": round(ours["steps_per_s"], 2),
        "ddp_steps_per_s": round(ddp_rate, 2),
        "ddp_steps_per_s_runs": [round(before["steps_per_s"], 2), round(after["steps_per_s"], 2)],
        "ratio": round(ours["steps_per_s"] / ddp_rate, 3),
        # the same from median step times: robust to other processes stealing the 2 cores
        "trainyard_median_steps_per_s": round(1 / ours["median_step_s"], 2),
        "ddp_median_steps_per_s": round(2 / (before["median_step_s"] + after["median_step_s"]), 2),
        "ratio_median": round((before["median_step_s"] + after["median_step_s"]) / 2 / ours["median_step_s"], 3),
        "trainyard_submit_to_first_step_s": round(ours["submit_to_first_step_s"], 2),
        "ddp_submit_to_first_step_s": round(before["submit_to_first_step_s"], 2),
        "zero_stage": _zero_stage_auto(),
        "steps": opts.steps, "warmup": opts.warmup, "batch_per_worker": opts.batch,
        "mlflow": tracking is not None,
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

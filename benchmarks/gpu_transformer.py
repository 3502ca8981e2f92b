"""The transformer family at a GPT-2-small shape through Trainyard, against raw compiled PyTorch.

One run, one GPU, side by side:

(a) raw: the family's own model (workloads.transformer, 12 layers, d_model 768, 12 heads,
    context 1024), torch.compile, fused AdamW, bf16 autocast, the same batch of tokens; in a
    child process, so that its CUDA context and memory are gone before (b) starts.
(b) Trainyard: the same model, data and batch as a one-worker job through the runner (Ray Train
    TorchTrainer + DeepSpeed), at `deepspeed.zero_stage: auto` and, with --stages, at each
    explicit stage, so the line shows whether `auto` picked the fastest stage that fits.

For each: steady tokens/s (after --warmup steps) and MFU, model FLOPs of a step
(torch.utils.flop_counter, fwd + bwd) x steps/s over the device's dense bf16 peak
(trainyard.costs.peaks). Prints one JSON line: "ratio" = Trainyard at `auto` / raw, the goal
being >= 0.9 (issue 16); per stage: tokens/s, MFU and ratio; "auto_stage", "fastest_stage"
and "auto_is_fastest".

    python benchmarks/gpu_transformer.py                  # needs a CUDA GPU (H100/H200 shape)
    python benchmarks/gpu_transformer.py --stages auto,0,1,2,3
    python benchmarks/gpu_transformer.py --smoke          # CPU, a tiny shape, no compile (CI)
    make bench-gpu                                         # the first line

On an offline GPU machine without our stack, install a kit of Ray, DeepSpeed and this project's
wheels first, and set TORCH_CUDA_ARCH_LIST to the card's (9.0 on H100/H200: an image's "9.0a"
breaks DeepSpeed's op builder); the workers inherit it. Not yet run on a GPU (README, Benchmarks).
Without a GPU and without --smoke it exits 2 and says so. Starts (and stops) a private Ray head
unless $RAY_ADDRESS is set. A measured run (not --smoke) holds the measurement lock.
"""
from __future__ import annotations

import _bench  # noqa: F401  (first: Ray's auth environment before anything imports ray)

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

GPT2_SMALL = {"d_model": 768, "layers": 12, "heads": 12, "context": 1024, "dropout": 0.0}
TINY = {"d_model": 64, "layers": 2, "heads": 2, "context": 64, "dropout": 0.0}
STAGES = ("auto", "0", "1", "2", "3")


# ----------------------------------------------------------------------------- (a) raw compiled torch


def raw_child(args: dict) -> dict:
    """Runs in a child process: the raw loop, the device's peak, and what `auto` would pick here."""
    import torch
    import torch.nn.functional as F

    from trainyard.costs.flops import count_step_flops
    from trainyard.runner.strategy import count_parameters, detect_hardware, plan_deepspeed
    from trainyard.runner.usage import device_info
    from workloads.transformer.workload import build_datasets, build_models

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda", 0) if on_gpu else torch.device("cpu")
    torch.manual_seed(0)
    model = build_models(args["hparams"])["model"].to(device)
    train, _ = build_datasets(args["hparams"], args["data"])
    batch, context = args["batch"], args["hparams"]["context"]
    xs, ys = zip(*(train[i % len(train)] for i in range(batch)))
    x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)

    def lm_step(m, b):
        logits = m(b[0])
        F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), b[1].reshape(-1)).backward()

    flops_per_step = count_step_flops(model, (x, y), step_fn=lm_step)
    plan = plan_deepspeed({"zero_stage": "auto"}, num_params=count_parameters({"model": model}), world_size=1,
                          hardware=detect_hardware(use_gpu=on_gpu))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=on_gpu)
    step_model = torch.compile(model) if args["compile"] else model
    dtype = torch.bfloat16 if on_gpu else torch.float32

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=on_gpu):
            logits = step_model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args["warmup"]):  # compiles, autotunes, warms the allocator
        step()
    if on_gpu:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args["steps"] - args["warmup"]):
        loss = step()
    float(loss)
    if on_gpu:
        torch.cuda.synchronize()
    steps_per_s = (args["steps"] - args["warmup"]) / (time.perf_counter() - t0)
    info = device_info(on_gpu=on_gpu, dtype="bf16" if on_gpu else "fp32")
    return {"steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * batch * context,
            "flops_per_step": flops_per_step, "peak_flops": info["peak_flops_per_device"],
            "device_name": info["device_name"], "on_gpu": on_gpu, "auto_stage": plan.zero_stage,
            "auto_reason": plan.reason}


def run_raw(args: dict, work: Path) -> dict:
    out = work / "raw.json"
    proc = subprocess.run([sys.executable, __file__, "--raw-child", json.dumps(args), "--raw-out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    (work / "raw.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        raise _bench.BenchError(f"the raw torch run failed (exit {proc.returncode}); its log is {work / 'raw.log'}:\n"
                                f"{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------- (b) Trainyard


def run_trainyard(args: dict, stage: str, *, storage: str, on_gpu: bool) -> dict:
    from trainyard.runner.job import build_trainer
    from trainyard.specs import parse_job_spec

    spec = parse_job_spec({
        "name": f"gpu-bench-z{stage}", "workload": "transformer", "hyperparameters": args["hparams"],
        "data": args["data"],
        "resources": {"workers": 1, "cpus_per_worker": 1, **({"gpus_per_worker": 1} if on_gpu else {})},
        "deepspeed": {"zero_stage": stage if stage == "auto" else int(stage)},
        "training": {"max_steps": args["steps"], "batch_size": args["batch"], "lr": 3e-4, "seed": 0,
                     "log_every_steps": max(1, args["steps"] // 5), "eval_every_steps": args["steps"] * 10},
        "checkpoint": {"every_steps": args["steps"] * 10, "storage": storage},
        "tracking": {"register_model": False},
    })
    trainer = build_trainer(spec, job_id=f"gpu-bench-{stage}-{uuid.uuid4().hex[:6]}", mlflow_run=None,
                            extra_config={"log_model": False, "artifacts": False,
                                          "timing_warmup_steps": args["warmup"]})
    metrics = dict(trainer.fit().metrics or {})
    steps_per_s = float(metrics["train_steps_per_s"])
    return {"steps_per_s": steps_per_s, "tokens_per_s": steps_per_s * args["batch"] * args["hparams"]["context"],
            "flops_per_step": metrics.get("trainyard_cost_flops_per_step")}


def _mfu(flops_per_step, steps_per_s, peak) -> float | None:
    if not (flops_per_step and peak):
        return None
    value = float(flops_per_step) * steps_per_s / float(peak)
    return round(value, 4) if 0 < value <= 1 else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 120; --smoke: 6)")
    parser.add_argument("--warmup", type=int, default=None, help="steps left out of the rate (default 20; --smoke: 2)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step (default 16; --smoke: 4)")
    parser.add_argument("--stages", default="auto",
                        help="Trainyard runs, comma-separated from auto,0,1,2,3 (default: auto)")
    parser.add_argument("--no-compile", action="store_true", help="(a) without torch.compile")
    parser.add_argument("--keep", metavar="DIR", help="keep the run's files (logs) under DIR")
    parser.add_argument("--raw-child", help=argparse.SUPPRESS)
    parser.add_argument("--raw-out", help=argparse.SUPPRESS)
    _bench.add_smoke_flag(parser)
    opts = parser.parse_args(argv)
    if opts.raw_child:
        Path(opts.raw_out).write_text(json.dumps(raw_child(json.loads(opts.raw_child))))
        return 0

    stages = [s.strip() for s in opts.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad or not stages:
        parser.error(f"--stages takes a comma-separated list from {','.join(STAGES)}, got {opts.stages!r}")
    steps = opts.steps or (6 if opts.smoke else 120)
    warmup = opts.warmup if opts.warmup is not None else (2 if opts.smoke else 20)
    if not 0 < warmup < steps - 1:
        parser.error(f"--warmup must be between 1 and steps - 2 ({steps - 2}), got {warmup}")
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not opts.smoke:
        print("gpu_transformer: no CUDA GPU here; it measures a GPU (run it with --smoke to check it on CPU)",
              file=sys.stderr)
        return 2
    args = {"steps": steps, "warmup": warmup, "batch": opts.batch or (4 if opts.smoke else 16),
            "hparams": dict(TINY if opts.smoke else GPT2_SMALL),
            "data": {"max_bytes": 200_000 if opts.smoke else 6_000_000, "val_chunks": 4},
            "compile": not (opts.no_compile or opts.smoke or not on_gpu)}
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    env_vars = {"TORCH_CUDA_ARCH_LIST": os.environ["TORCH_CUDA_ARCH_LIST"]} if "TORCH_CUDA_ARCH_LIST" in os.environ else {}
    with _bench.measurement(opts.smoke) as run, _bench.work_dir("ty-bench-gpu-", keep=opts.keep) as work, \
            _bench.ray_head(num_cpus=2, logs=work):  # `ray start` finds the GPU itself
        raw = run_raw(args, work)  # before Ray's worker holds the GPU
        ray = _bench.init_ray()
        if env_vars:  # DeepSpeed's op builder breaks on the image's 9.0a (../shared/gpu/README.md)
            os.environ.update(env_vars)
        ours = {stage: run_trainyard(args, stage, storage=f"file://{work / 'storage'}", on_gpu=on_gpu)
                for stage in stages}
        ray.shutdown()
    peak = raw["peak_flops"]
    per_stage = {stage: {"tokens_per_s": round(r["tokens_per_s"], 1),
                         "ratio": round(r["tokens_per_s"] / raw["tokens_per_s"], 3),
                         "mfu": _mfu(r["flops_per_step"] or raw["flops_per_step"], r["steps_per_s"], peak)}
                 for stage, r in ours.items()}
    explicit = {s: v for s, v in per_stage.items() if s != "auto"}
    fastest = max(explicit, key=lambda s: explicit[s]["tokens_per_s"]) if explicit else None
    first = per_stage[stages[0]]
    _bench.emit("gpu_transformer", {
        "ratio": first["ratio"], "trainyard_stage_run": stages[0],
        "trainyard_tokens_per_s": first["tokens_per_s"], "raw_tokens_per_s": round(raw["tokens_per_s"], 1),
        "trainyard_mfu": first["mfu"], "raw_mfu": _mfu(raw["flops_per_step"], raw["steps_per_s"], peak),
        "stages": per_stage, "auto_stage": raw["auto_stage"], "auto_reason": raw["auto_reason"],
        "fastest_stage": int(fastest) if fastest is not None else None,
        "auto_is_fastest": (int(fastest) == raw["auto_stage"]) if fastest is not None else None,
        "device": raw["device_name"], "on_gpu": on_gpu, "raw_compiled": args["compile"],
        "shape": args["hparams"], "batch": args["batch"], "steps": steps, "warmup": warmup,
        "goal_ratio": 0.9,
    }, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

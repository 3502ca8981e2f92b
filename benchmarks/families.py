"""Per-family quality and speed: each example spec trained through Trainyard and by a plain loop.

    python benchmarks/families.py [FAMILY ...]              # both sides, one family after another
    python benchmarks/families.py baseline [FAMILY ...]     # only the plain single-process loop
    python benchmarks/families.py trainyard [FAMILY ...]    # only the runner

Trainyard side: the example spec exactly as a user's job runs it (the runner's TorchTrainer,
its workers, DeepSpeed at the spec's ZeRO stage, its checkpoints, rank-0 MLflow metrics to a
local SQLite store) on a private local Ray head with 2 CPUs, started and stopped here. The
final model is not logged (that is tracking, not training). `wall_s` runs from fit() to its
return: worker start, DeepSpeed setup, data, training, evaluations, checkpoints.

Baseline side: the same model with one process: the global batch is workers x batch_size,
the same epochs/max_steps, the same optimizer, learning rate and schedule, and the family's
own train_step/evaluate on a plain-torch stand-in for a DeepSpeed engine, with one torch
thread (what a Ray Train worker with cpus_per_worker: 1 gets). `wall_s` covers model, data,
training, evaluations.

Per family, one JSON line: the primary metric reached on each side and the bar, wall seconds,
steady-state samples/s (optimizer steps after the first 10% of the run, times the global
batch), and the ratios trainyard / baseline (`samples_per_s_ratio` > 1: Trainyard is faster;
`wall_ratio` > 1: Trainyard takes longer). Last, one summary JSON line
{"benchmark": "families", "families": {family: {ratios...}}, "load_avg", ...}; the table goes
to stderr. `cpu_s` (baseline) is the process's CPU seconds: on a machine shared with other
work it is what the baseline's wall time would be on an idle one.

    python benchmarks/families.py --smoke                   # cnn only, 12 steps, 512 samples

Connects to $RAY_ADDRESS when set (with its RAY_AUTH_MODE/RAY_AUTH_TOKEN); otherwise starts a
private head. A measured run (not --smoke) holds the measurement lock (benchmarks/_bench.py).
"""
from __future__ import annotations

import _bench  # first: Ray's auth environment before anything imports ray

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = _bench.REPO

# --smoke: a few steps on a slice of the data, a checkpoint and an evaluation on the way, so
# every part of both sides runs; the bars are not expected to be met at this size
SMOKE = {"training": {"max_steps": 12, "eval_every_steps": 6}, "checkpoint": {"every_steps": 6},
         "data": {"train_limit": 512}}

# family -> (example spec, bar description, predicate on the metrics)
FAMILIES = {
    "cnn": ("examples/cnn.yaml", "accuracy >= 0.95", lambda m: m["accuracy"] >= 0.95),
    "rnn": ("examples/rnn.yaml", "accuracy >= 0.90", lambda m: m["accuracy"] >= 0.90),
    "rnn-forecast": ("examples/rnn-forecast.yaml", "mase < 1.0", lambda m: m["mase"] < 1.0),
    "autoencoder": ("examples/autoencoder.yaml", "elbo reported; fid <= noise_fid / 5",
                    lambda m: m["fid"] <= m["noise_fid"] / 5),
    "gan": ("examples/gan.yaml", "fid <= noise_fid / 5", lambda m: m["fid"] <= m["noise_fid"] / 5),
    "diffusion": ("examples/diffusion.yaml", "fid <= noise_fid / 5", lambda m: m["fid"] <= m["noise_fid"] / 5),
    "transformer": ("examples/transformer.yaml", "bpb <= 2.5", lambda m: m["bpb"] <= 2.5),
}


class PlainEngine:
    """What a DeepSpeed engine offers a train_step, over a plain torch optimizer."""

    def __init__(self, module, optimizer):
        self.module, self.optimizer = module, optimizer

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    forward = __call__

    def backward(self, loss):
        loss.backward()

    def step(self):
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def parameters(self):
        return self.module.parameters()


def _optimizer(params, training):
    import torch

    kind = training.optimizer
    if kind == "sgd":
        return torch.optim.SGD(params, lr=training.lr, weight_decay=training.weight_decay, momentum=0.9)
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return cls(params, lr=training.lr, weight_decay=training.weight_decay)


def load_spec(family: str, *, smoke: bool = False):
    """The family's example spec, cut to the smoke size when asked."""
    import yaml

    from trainyard.specs import parse_job_spec

    raw = yaml.safe_load((REPO / FAMILIES[family][0]).read_text())
    if smoke:
        training = {k: v for k, v in (raw.get("training") or {}).items() if k != "epochs"}
        raw["training"] = {**training, **SMOKE["training"]}
        raw["checkpoint"] = {**(raw.get("checkpoint") or {}), **SMOKE["checkpoint"]}
        raw["data"] = {**(raw.get("data") or {}), **SMOKE["data"]}
    return parse_job_spec(raw, source=FAMILIES[family][0])


def baseline(family: str, *, epochs: int | None = None, quiet: bool = False, smoke: bool = False) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from trainyard.workload import StepContext, resolve_workload

    spec_path, bar, ok = FAMILIES[family]
    spec = load_spec(family, smoke=smoke)
    wl = resolve_workload(spec.workload)
    hparams = {**wl.default_hparams, **spec.hyperparameters}
    torch.manual_seed(spec.training.seed)
    t0 = time.perf_counter()
    c0 = time.process_time()
    models = wl.build_models(hparams)
    train_ds, eval_ds = wl.build_datasets(hparams, spec.data)
    engines = {name: PlainEngine(m, _optimizer(m.parameters(), spec.training)) for name, m in models.items()}
    global_batch = spec.training.batch_size * spec.resources.workers
    gen = torch.Generator().manual_seed(spec.training.seed)
    loader = DataLoader(train_ds, batch_size=global_batch, shuffle=True, drop_last=True, generator=gen)
    n_epochs = epochs or spec.training.epochs
    max_steps = spec.training.max_steps or n_epochs * len(loader)
    ctx = StepContext(hparams=hparams, loss_fn=wl.loss_fn, world_size=1)
    step, history, warm_at, warm_t = 0, [], max(1, max_steps // 10), None
    evals = []
    scheduled = spec.training.lr_schedule != "constant" or spec.training.warmup_steps > 0
    param_groups = [g for e in engines.values() for g in e.optimizer.param_groups]
    every = spec.training.eval_every_steps  # default: each epoch, as the runner does

    def progress():
        for m in models.values():
            m.eval()
        metrics = wl.evaluate(models, eval_ds, ctx)
        for m in models.values():
            m.train()
        evals.append(metrics)
        print(f"# {family} epoch {ctx.epoch} step {step} t={time.perf_counter() - t0:.0f}s "
              f"{json.dumps({k: round(v, 4) for k, v in {**history[-1], **metrics}.items()})}",
              file=sys.stderr, flush=True)

    while step < max_steps:
        for batch in loader:
            ctx.step = step
            if scheduled:
                for group in param_groups:
                    group["lr"] = spec.training.lr_at(step, max_steps)
            losses = wl.train_step(engines, batch, ctx)
            history.append(losses)
            step += 1
            if step == warm_at:
                warm_t = time.perf_counter()
            if not quiet and every and step % every == 0 and step < max_steps:
                progress()
            if step >= max_steps:
                break
        ctx.epoch += 1
        if not quiet and not every and step < max_steps:
            progress()
    t_train_end = time.perf_counter()
    for m in models.values():
        m.eval()
    metrics = wl.evaluate(models, eval_ds, ctx)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    steady = (max_steps - warm_at) * global_batch / max(t_train_end - warm_t, 1e-9) if warm_t else None
    out = {"family": family, "mode": "baseline", "metric": wl.metric, "value": round(metrics[wl.metric], 4),
           "bar": bar, "meets_bar": bool(ok(metrics)), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "steps": max_steps,
           "global_batch": global_batch, "samples_per_s": round(steady, 1) if steady else None,
           "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
           "first_loss": history[0], "last_loss": history[-1], "torch_threads": torch.get_num_threads()}
    if os.environ.get("TRAINYARD_BENCH_ARTIFACTS") and wl.artifacts:
        out["artifacts"] = wl.artifacts(models, eval_ds, ctx, os.environ["TRAINYARD_BENCH_ARTIFACTS"])
    return out


def trainyard(family: str, *, work: Path, smoke: bool = False) -> dict:
    """The example spec through the runner on the connected Ray head."""
    import uuid

    from trainyard.runner.job import build_trainer
    from trainyard.tracking.runs import start_job_run
    from trainyard.workload import resolve_workload

    spec_path, bar, ok = FAMILIES[family]
    spec = load_spec(family, smoke=smoke)
    spec = spec.model_copy(update={"checkpoint": spec.checkpoint.model_copy(
        update={"storage": f"file://{work / 'storage'}"})})
    wl = resolve_workload(spec.workload)
    job_id = f"bench-{family}-{uuid.uuid4().hex[:6]}"
    run = start_job_run(job_id=job_id, run_name=spec.name, experiment="bench-families",
                        uri=f"sqlite:///{work / 'mlflow.db'}")
    # the same warm-up as the baseline's: throughput counts the steps after the first 10%
    total = spec.training.max_steps or spec.training.epochs * _steps_per_epoch(wl, spec)
    trainer = build_trainer(spec, job_id=job_id, mlflow_run=run.to_config(),
                            extra_config={"log_model": False, "artifacts": False,
                                          "timing_warmup_steps": max(1, total // 10)})
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    reported = dict(result.metrics or {})
    metrics = {k: float(v) for k, v in reported.items() if k in wl.metrics or k == wl.metric}
    global_batch = spec.training.batch_size * spec.resources.workers * spec.deepspeed.gradient_accumulation_steps
    rate = reported.get("train_steps_per_s")
    return {"family": family, "mode": "trainyard", "metric": wl.metric, "value": round(metrics[wl.metric], 4),
            "bar": bar, "meets_bar": bool(ok(metrics)), "wall_s": round(wall, 1), "steps": int(reported["step"]),
            "global_batch": global_batch, "samples_per_s": round(rate * global_batch, 1) if rate else None,
            "workers": spec.resources.workers, "zero_stage": spec.deepspeed.zero_stage,
            "metrics": {k: round(v, 4) for k, v in metrics.items()}}


def _steps_per_epoch(wl, spec) -> int:
    hparams = {**wl.default_hparams, **spec.hyperparameters}
    train_ds, _ = wl.build_datasets(hparams, spec.data)
    per_rank = -(-len(train_ds) // spec.resources.workers)  # DistributedSampler pads up
    return max(1, per_rank // spec.training.batch_size) // spec.deepspeed.gradient_accumulation_steps


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def both(family: str, *, work: Path, quiet: bool, smoke: bool = False) -> dict:
    ty = trainyard(family, work=work, smoke=smoke)
    base = baseline(family, quiet=quiet, smoke=smoke)
    return {"family": family, "metric": ty["metric"], "bar": ty["bar"],
            "trainyard": {k: ty[k] for k in ("value", "meets_bar", "wall_s", "samples_per_s", "steps",
                                             "global_batch", "workers", "zero_stage")},
            "baseline": {k: base[k] for k in ("value", "meets_bar", "wall_s", "cpu_s", "samples_per_s",
                                              "steps", "global_batch")},
            "wall_ratio": _ratio(ty["wall_s"], base["wall_s"]),
            "samples_per_s_ratio": _ratio(ty["samples_per_s"], base["samples_per_s"]),
            "load_avg_1m": round(os.getloadavg()[0], 1)}


def _table(rows: list[dict]) -> str:
    head = ("family", "metric", "trainyard", "baseline", "bar", "wall ty/base (s)", "wall ratio",
            "samples/s ty/base", "samples/s ratio")
    lines = [head]
    for r in rows:
        t, b = r["trainyard"], r["baseline"]
        lines.append((r["family"], r["metric"], f"{t['value']:g}" + ("" if t["meets_bar"] else " (miss)"),
                      f"{b['value']:g}" + ("" if b["meets_bar"] else " (miss)"), r["bar"],
                      f"{t['wall_s']:.0f} / {b['wall_s']:.0f}", f"{r['wall_ratio']}",
                      f"{t['samples_per_s']} / {b['samples_per_s']}", f"{r['samples_per_s_ratio']}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", metavar="[MODE] FAMILY",
                    help=f"optional mode (both, baseline, trainyard; default both), then families "
                         f"(default all: {', '.join(FAMILIES)}; --smoke: cnn)")
    ap.add_argument("--quiet", action="store_true", help="baseline: skip the per-epoch progress evaluations")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TRAINYARD_BENCH_THREADS", "1")),
                    help="baseline torch intra-op threads (default 1: what a 1-CPU Ray worker gets)")
    ap.add_argument("--keep", metavar="DIR", help="keep the run's files (MLflow store, checkpoints) under DIR")
    _bench.add_smoke_flag(ap)
    args = ap.parse_args(argv)
    names = list(args.families)
    mode = names.pop(0) if names and names[0] in ("both", "baseline", "trainyard") else "both"
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {unknown[0]!r}; known: {', '.join(FAMILIES)}")
    names = names or (["cnn"] if args.smoke else list(FAMILIES))
    quiet = args.quiet or args.smoke
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    with _bench.measurement(args.smoke) as run:
        if mode == "baseline":
            for fam in names:
                rows.append(baseline(fam, quiet=quiet, smoke=args.smoke))
                print(json.dumps(rows[-1]), flush=True)
        else:
            os.environ.setdefault("RAY_DEDUP_LOGS", "1")
            with _bench.work_dir("ty-families-", keep=args.keep) as tmp, _bench.ray_head(num_cpus=2, logs=tmp):
                ray = _bench.init_ray()
                for i, fam in enumerate(names):
                    work = Path(tmp) / f"job{i}"
                    work.mkdir()
                    row = (trainyard(fam, work=work, smoke=args.smoke) if mode == "trainyard"
                           else both(fam, work=work, quiet=quiet, smoke=args.smoke))
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                ray.shutdown()
    if mode == "both":
        print(_table(rows), file=sys.stderr, flush=True)
        summary = {r["family"]: {k: r[k] for k in ("wall_ratio", "samples_per_s_ratio")}
                   | {"trainyard_meets_bar": r["trainyard"]["meets_bar"],
                      "baseline_meets_bar": r["baseline"]["meets_bar"]} for r in rows}
    else:
        summary = {r["family"]: {k: r[k] for k in ("value", "meets_bar", "wall_s", "samples_per_s")} for r in rows}
    _bench.emit("families", {"mode": mode, "families": summary}, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())

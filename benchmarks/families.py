"""Per-family quality and speed: the example spec's hyperparameters, trained two ways.

    python benchmarks/families.py baseline [FAMILY ...]      # plain single-process PyTorch loop
    python benchmarks/families.py trainyard [FAMILY ...]     # through the runner (Ray + DeepSpeed)

`baseline` mimics the example job with one process: the global batch is
workers x batch_size, the same epochs/max_steps, the same optimizer and learning rate, and
the family's own train_step/evaluate on a plain-torch stand-in for a DeepSpeed engine.
It prints one JSON line per family: the primary metric and its bar, wall seconds, and the
steady-state samples/s (steps after the first 10% of the run), and cpu_s, the process's
CPU seconds: on a machine shared with other work, cpu_s (one thread) is what the wall time
would be on an idle one. Torch runs with one
intra-op thread by default, as a Ray Train worker with cpus_per_worker: 1 does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "platform", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# family -> (example spec, bar description, predicate on the metrics)
FAMILIES = {
    "cnn": ("examples/cnn.yaml", "accuracy >= 0.90", lambda m: m["accuracy"] >= 0.90),
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


def baseline(family: str, *, epochs: int | None = None, quiet: bool = False) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from trainyard.specs import parse_job_spec
    from trainyard.workload import StepContext, resolve_workload

    spec_path, bar, ok = FAMILIES[family]
    spec = parse_job_spec(REPO / spec_path)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["baseline", "trainyard"])
    ap.add_argument("families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--quiet", action="store_true", help="skip the per-epoch evaluations")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("TRAINYARD_BENCH_THREADS", "1")),
                    help="torch intra-op threads (default 1: what a 1-CPU Ray worker gets)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "trainyard":
        print("trainyard mode needs the runner (platform/trainyard/runner/train.py); not wired yet", file=sys.stderr)
        return 2
    for fam in args.families:
        print(json.dumps(baseline(fam, quiet=args.quiet)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

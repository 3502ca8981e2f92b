"""A training job on a Ray cluster: Ray Train (TorchTrainer) workers, one DeepSpeed engine
per module, MLflow tracking from rank 0, checkpoints to file:// or s3:// storage.

    run_job(spec, job_id)               the driver side: MLflow run, trainer, fit, result
    build_trainer(spec, job_id=...)     the TorchTrainer, for callers that fit it themselves
    train_loop_per_worker(config)       the worker function (also reused by sweeps)

Imports torch/deepspeed/ray.train only inside functions, so importing this module is cheap.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["train_loop_per_worker", "build_trainer", "run_job", "JobResult", "worker_env", "loop_session"]

log = logging.getLogger("trainyard.runner")

STATE_FILE = "trainyard_state.json"
CKPT_TAG = "ckpt"
CRASH_ENV = "TRAINYARD_TEST_CRASH"  # tests only: "rank:step:marker_path"


# ============================================================================ worker side


@dataclass
class _LoopState:
    micro_step: int = 0  # train_step calls done (all epochs)
    epoch: int = 0
    resumed_from: str | None = None


def worker_env(spec) -> dict[str, str]:
    """Environment the workers need before torch/deepspeed are imported."""
    env = {}
    if not spec.resources.gpus_per_worker:
        threads = str(max(1, int(spec.resources.cpus_per_worker)))
        # DeepSpeed would otherwise look for CUDA, then try to build C++ ops
        env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": threads})
    env.update({str(k): str(v) for k, v in (spec.env or {}).items()})
    return env


def _make_optimizer(training, params, *, on_gpu: bool):
    import torch

    kwargs: dict[str, Any] = {"lr": training.lr, "weight_decay": training.weight_decay}
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=0.9, **kwargs)
    if on_gpu:
        kwargs["fused"] = True
    cls = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    return cls(params, **kwargs)


def _torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _to_device(batch, device, dtype):
    """Move a batch (tensor / tuple / list / dict) to the device; floats to the engines' dtype."""
    import torch

    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point():
            return batch.to(device=device, dtype=dtype, non_blocking=True)
        return batch.to(device=device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device, dtype) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, dtype) for k, v in batch.items()}
    return batch


class _Batches:
    """The rank's batches for one epoch, from a DistributedSampler's index order.

    TensorDatasets are sliced with one index tensor per batch (no per-item collate).
    Other datasets go through a DataLoader over the same indices.
    """

    def __init__(self, dataset, sampler, batch_size: int):
        from torch.utils.data import TensorDataset

        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None
        n = len(sampler)
        self.steps_per_epoch = max(1, n // batch_size)

    def epoch(self, epoch: int, *, start: int = 0):
        import torch

        self.sampler.set_epoch(epoch)
        indices = list(self.sampler)
        bs = self.batch_size
        if self.tensors is not None:
            order = torch.as_tensor(indices, dtype=torch.long)
            for b in range(start, self.steps_per_epoch):
                idx = order[b * bs:(b + 1) * bs]
                yield tuple(t[idx] for t in self.tensors)
            return
        from torch.utils.data import DataLoader

        chosen = indices[start * bs:self.steps_per_epoch * bs]
        # a loader draws its base seed from its generator: a private one leaves the global
        # generator (dropout, noise) to the model, so a run resumed mid-epoch draws as the
        # uninterrupted run did (seeded as the sampler seeds its order: seed + epoch)
        generator = torch.Generator().manual_seed(int(getattr(self.sampler, "seed", 0)) + epoch)
        yield from DataLoader(self.dataset, batch_size=bs, sampler=chosen, drop_last=False, generator=generator)


def plan_steps(training, *, steps_per_epoch: int, gas: int = 1, examples: int | None = None,
               workers: int = 1) -> tuple[int, int]:
    """(micro-steps, optimizer steps) of a run: training.max_steps, else training.epochs passes
    of `steps_per_epoch` micro-batches per worker (what the dataset's size, the batch size and
    the number of workers give), in optimizer steps of `gas` micro-steps.

    Raises SpecError when training.warmup_steps is longer than the run. The spec checks that
    against max_steps; an epochs-based run's length is only known here, at run time.
    """
    from trainyard.errors import SpecError

    total_micro = (training.max_steps * gas if training.max_steps
                   else training.epochs * steps_per_epoch)
    total_steps = max(1, total_micro // gas)
    if training.warmup_steps > total_steps:
        if training.max_steps:
            how = f"training.max_steps {training.max_steps}"
        else:
            how = f"training.epochs {training.epochs} x {steps_per_epoch} batches per epoch"
            if examples is not None:
                how += (f" ({examples} training examples over {workers} worker(s) at "
                        f"training.batch_size {training.batch_size})")
            if gas > 1:
                how += f" / deepspeed.gradient_accumulation_steps {gas}"
        raise SpecError(
            f"must be <= the run's {total_steps} optimizer steps ({how}), got {training.warmup_steps}",
            field="training.warmup_steps", value=training.warmup_steps,
            fix=f"set training.warmup_steps to at most {total_steps}, or train longer "
                "(more training.epochs, or training.max_steps)")
    return total_micro, total_steps


def _maybe_crash_for_test(env_value: str | None, *, rank: int, step: int) -> None:
    """Tests only: simulate a worker dying once (a marker file makes it happen once)."""
    if not env_value:
        return
    want_rank, want_step, marker = env_value.split(":", 2)
    if rank == int(want_rank) and step == int(want_step) and not os.path.exists(marker):
        with open(marker, "w") as fh:
            fh.write(f"rank {rank} exited at step {step}\n")
        sys.stdout.flush()
        os._exit(13)


def _gather_state_dicts(engines, *, stage: int, rank: int) -> dict[str, dict] | None:
    """Full fp32 CPU state_dicts of every module on rank 0 (None elsewhere).

    Under ZeRO-3 the parameters are sharded, so every rank must take part in the gather.
    """
    out: dict[str, dict] = {}
    for name, engine in engines.items():
        module = engine.module
        if stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                if rank == 0:
                    out[name] = _cpu_state(module)
        elif rank == 0:
            out[name] = _cpu_state(module)
    return out if rank == 0 else None


def _cpu_state(module) -> dict:
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in module.state_dict().items()}


RNG_FILE = "rng-rank{rank}.pt"


def _rng_state() -> dict:
    """This process's random generators: torch (CPU and every CUDA device), NumPy, Python."""
    import random

    import numpy as np
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(engines, state: dict, *, rank: int):
    """DeepSpeed checkpoint of every engine into a fresh local dir (every rank saves its shards),
    with the rank's random generators: a run resumed from it draws the same dropout masks and
    noise as the run that saved it would have (a paused sweep trial goes on exactly as if it
    had never stopped)."""
    import torch
    from ray.train import Checkpoint

    tmp = tempfile.mkdtemp(prefix=f"ty-ckpt-r{rank}-")
    for name, engine in engines.items():
        engine.save_checkpoint(os.path.join(tmp, name), tag=CKPT_TAG, save_latest=False)
    torch.save(_rng_state(), os.path.join(tmp, RNG_FILE.format(rank=rank)))
    if rank == 0:
        with open(os.path.join(tmp, STATE_FILE), "w") as fh:
            json.dump(state, fh)
    return tmp, Checkpoint.from_directory(tmp)


def _state_step(checkpoint) -> int:
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STATE_FILE}") as fh:
            return int(json.loads(fh.read().decode()).get("micro_step", 0))
    except Exception:
        return -1


def _load_checkpoint(engines, checkpoint, *, rank: int = 0, world_size: int = 1) -> dict:
    """Load every engine's DeepSpeed checkpoint, and the rank's random generators when the
    checkpoint has them and was saved by as many workers (a checkpoint from before they were
    saved, or from another world size, leaves the generators as seeded)."""
    import torch

    with checkpoint.as_directory() as path:
        with open(os.path.join(path, STATE_FILE)) as fh:
            state = json.load(fh)
        for name, engine in engines.items():
            load_path, _ = engine.load_checkpoint(os.path.join(path, name), tag=CKPT_TAG,
                                                  load_optimizer_states=True,
                                                  load_lr_scheduler_states=False)
            if load_path is None:
                raise RuntimeError(f"DeepSpeed found no checkpoint for module {name!r} in {path}")
        rng_path = os.path.join(path, RNG_FILE.format(rank=rank))
        if os.path.exists(rng_path) and int(state.get("world_size", world_size)) == world_size:
            _set_rng_state(torch.load(rng_path, weights_only=False))
    return state


def _complete(fs, path: str, state: dict) -> bool:
    """Did every rank finish uploading its part of the checkpoint at `path`?"""
    import pyarrow.fs as pafs

    files = [info.base_name for info in fs.get_file_info(pafs.FileSelector(path, recursive=True))
             if info.type == pafs.FileType.File]
    modules = state.get("modules") or []
    # ZeRO-3 names model states per rank (zero_pp_rank_R_mp_rank_00_model_states.pt)
    if not modules or not any(f.endswith("model_states.pt") for f in files):
        return False
    if int(state.get("zero_stage", 0)) >= 1:
        for rank in range(int(state.get("world_size", 1))):
            shards = [f for f in files if f.startswith(f"zero_pp_rank_{rank}_") and f.endswith("optim_states.pt")]
            if len(shards) < len(modules):
                return False
    return True


def _latest_checkpoint_in_storage():
    """The newest complete checkpoint in this run's storage folder, or None.

    Ray Train learns of a checkpoint only when its controller polls the report (every
    2 s). A worker that dies in between leaves a checkpoint on storage that Ray does not
    hand back after the restart; this finds it.
    """
    import pyarrow.fs as pafs
    from ray.train import Checkpoint

    storage = ray_train_storage()
    if storage is None:
        return None
    fs, root = storage.storage_filesystem, storage.experiment_fs_path
    try:
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except Exception:
        return None
    best = None
    for entry in entries:
        if entry.type != pafs.FileType.Directory or not entry.base_name.startswith("checkpoint_"):
            continue
        try:
            with fs.open_input_stream(f"{entry.path}/{STATE_FILE}") as fh:
                state = json.loads(fh.read().decode())
        except Exception:
            continue
        if not _complete(fs, entry.path, state):
            continue
        key = (int(state.get("micro_step", 0)), entry.base_name)
        if best is None or key > best[0]:
            best = (key, entry.path)
    return Checkpoint(best[1], filesystem=fs) if best else None


def ray_train_storage():
    import ray.train

    try:
        return ray.train.get_context().get_storage()
    except Exception:
        return None


class _RayTrainSession:
    """Where the loop runs, as the loop sees it: a Ray Train worker (the default).

    A sweep trial that runs inline in its Tune actor (sweep.trial_executor: inline) hands the
    loop its own object with the same members in config["session"] (see runner/sweep.py).
    """

    def __init__(self):
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.local_world_size = ctx.get_local_world_size()

    def device(self):
        import ray.train.torch

        return ray.train.torch.get_device()

    def get_checkpoint(self):
        """The newest checkpoint of this run: Ray Train's, or a complete one a dying worker
        left in storage unregistered."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        found = _latest_checkpoint_in_storage()
        if found is not None and (checkpoint is None or _state_step(found) > _state_step(checkpoint)):
            checkpoint = found
        return checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)


def loop_session(config: dict):
    """The session a worker loop reports through: config["session"] when a sweep runs the
    trial inline, else Ray Train's worker context."""
    return config.get("session") or _RayTrainSession()


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker function: train one job (or one sweep trial) on this rank.

    config keys (a plain dict, so sweeps can build it):
        spec        dict, required: JobSpec.model_dump(). Sweeps override hyperparameters /
                    training / deepspeed values in it before calling.
        job_id      str, required: names the job in logs and MLflow tags.
        mlflow      {"tracking_uri": str|None, "run_id": str, "experiment_id": str} or None.
                    Rank 0 logs into run_id (created by the driver, so a restarted worker
                    group reuses it). None: no MLflow logging at all.
        log_model   bool, default True: log the consolidated final model into the run.
        register_model  bool|None, default spec.tracking.register_model: also register it
                    under spec.model_name() (sweeps pass False for trials).
        session     an object like _RayTrainSession, or None (Ray Train's worker context):
                    sweeps running a 1-worker trial inline in its Tune actor pass their own.
        progress_queue  ray.util.queue.Queue|None: rank 0 puts progress dicts
                    {"kind": "progress"|"final", "step", "total_steps", "epoch", "metrics"}
                    for the driver to print (run_job does this).
        artifacts   bool, default True: loss curve + workload artifacts at the end.
        resume_from ray.train.Checkpoint|None: start from this checkpoint (one this loop
                    saved) when Ray Train has none for this run (sweeps: restore / PBT clone).
        timing_warmup_steps  int: steps excluded from the final "train_steps_per_s".

    Resume order: Ray Train's latest checkpoint of this run; else the newest complete
    checkpoint in this run's storage folder (one a dying worker left unregistered); else
    resume_from. A checkpoint restores every engine (weights, optimizer, ZeRO shards) and the
    position in the data (epoch, batch), so the resumed run sees the batches it had not seen.

    Reports (ray.train.report, all ranks, rank 0's values are the ones kept) happen after
    every evaluation: each epoch, or every training.eval_every_steps, plus at each
    checkpoint.every_steps (with a checkpoint) and once at the end (with a checkpoint).
    Every report holds the workload's eval metrics (so Tune's ASHA/PBT can act on each),
    the mean training losses since the last report, "step", "epoch" and "total_steps";
    the final one also "trainyard_done": 1 and, when logged, model info as strings.
    """
    import ray.train

    from trainyard.specs import JobSpec

    spec = JobSpec.model_validate(config["spec"])
    job_id = config["job_id"]
    env = worker_env(spec)
    for key, value in env.items():
        os.environ.setdefault(key, value)  # the runtime_env set these already on a real cluster

    import torch

    from trainyard.runner.strategy import (build_deepspeed_config, count_parameters,
                                           detect_hardware, plan_deepspeed)
    from trainyard.workload import StepContext, resolve_workload

    session = loop_session(config)
    rank, world = session.rank, session.world_size
    local_world = session.local_world_size
    on_gpu = bool(spec.resources.gpus_per_worker)
    if not on_gpu:
        # 2 workers on 2 cores with torch's default threads oversubscribe the cores
        torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))

    workload = resolve_workload(spec.workload)
    hparams = {**dict(workload.default_hparams), **spec.hyperparameters}
    torch.manual_seed(spec.training.seed)
    models = workload.build_models(hparams)
    hardware = detect_hardware(local_world_size=local_world, use_gpu=on_gpu)
    plan = plan_deepspeed(spec.deepspeed, num_params=count_parameters(models), world_size=world,
                          hardware=hardware)
    gas = spec.deepspeed.gradient_accumulation_steps
    ds_config = build_deepspeed_config(plan, micro_batch_size=spec.training.batch_size,
                                       gradient_accumulation_steps=gas,
                                       gradient_clipping=spec.deepspeed.gradient_clipping)

    import deepspeed

    if not on_gpu:
        # DeepSpeed's CPU backend compiles a shared-memory all-reduce op at first use
        # (about a minute, and it needs a C++ compiler). Only its inference path uses it:
        # training all-reduces go through torch.distributed (gloo).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if on_gpu:
        device = session.device()
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dtype = _torch_dtype(plan.precision)
    engines = {}
    for name, module in models.items():
        optimizer = _make_optimizer(spec.training, module.parameters(), on_gpu=on_gpu)
        engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer,
                                          config=dict(ds_config), dist_init_required=False)
        engines[name] = engine

    train_ds, eval_ds = workload.build_datasets(hparams, spec.data)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                 seed=spec.training.seed)
    batches = _Batches(train_ds, sampler, spec.training.batch_size)
    spe = batches.steps_per_epoch  # micro-steps per epoch
    # refuses a warm-up longer than the run before any step (or MLflow logging) is done
    total_micro, total_steps = plan_steps(spec.training, steps_per_epoch=spe, gas=gas,
                                          examples=len(train_ds), workers=world)

    state = _LoopState()
    checkpoint = session.get_checkpoint()
    if checkpoint is None and config.get("resume_from") is not None:
        # Train v2 refuses TorchTrainer(resume_from_checkpoint=...); a sweep trial that Tune
        # restores (PBT exploit, retry, resumed sweep) hands its ray.train.Checkpoint here
        checkpoint = config["resume_from"]
    if checkpoint is not None:
        saved = _load_checkpoint(engines, checkpoint, rank=rank, world_size=world)
        state.micro_step = int(saved["micro_step"])
        state.resumed_from = getattr(checkpoint, "path", None)
        # the spec's optimizer settings win over the checkpoint's: a PBT sweep trial resumes
        # another trial's weights with its own (perturbed) lr (same values for a plain resume)
        for engine in engines.values():
            for group in getattr(engine.optimizer, "param_groups", None) or []:
                group["lr"] = spec.training.lr
                group["weight_decay"] = spec.training.weight_decay

    tracking = config.get("mlflow") or None
    logger = None
    try:
        if rank == 0 and tracking and tracking.get("run_id"):
            from trainyard.tracking.logger import RunLogger

            logger = RunLogger(run_id=tracking["run_id"], tracking_uri=tracking.get("tracking_uri"))
            logger.log_params({
                "hyperparameters": hparams, "training": spec.training.model_dump(),
                "resources": spec.resources.model_dump(exclude={"custom_resources"}),
                "deepspeed.requested": spec.deepspeed.model_dump(), "workload": spec.workload,
                "data": spec.data,
            })
            logger.log_params(plan.as_params())
            logger.set_tags({"trainyard.workload": spec.workload, "trainyard.zero_stage": plan.zero_stage,
                             "trainyard.world_size": world})
            if state.resumed_from:
                logger.set_tags({"trainyard.resumed_from": state.resumed_from,
                                 "trainyard.resumed_from_step": state.micro_step // gas})
        queue = config.get("progress_queue")

        def progress(kind: str, step: int, epoch: int, metrics: dict) -> None:
            if rank == 0 and queue is not None:
                queue.actor.put_nowait.remote({"kind": kind, "step": step, "total_steps": total_steps,
                                               "epoch": epoch, "metrics": metrics})

        sctx = StepContext(hparams=hparams, device=device, dtype=dtype, rank=rank, world_size=world,
                           loss_fn=workload.loss_fn, extra={"plan": plan, "engines": engines})
        eval_models = {name: engine.module for name, engine in engines.items()}

        def evaluate(step: int, epoch: int) -> dict[str, float]:
            sctx.step, sctx.epoch = step, epoch
            for engine in engines.values():
                engine.eval()
            try:
                metrics = {k: float(v) for k, v in workload.evaluate(eval_models, eval_ds, sctx).items()}
            finally:
                for engine in engines.values():
                    engine.train()
            if logger is not None:
                logger.log_metrics(metrics, step=step)
            return metrics

        crash = os.environ.get(CRASH_ENV)
        ckpt_meta = {"zero_stage": plan.zero_stage, "world_size": world, "modules": sorted(engines),
                     "total_micro_steps": total_micro}
        every_ckpt = spec.checkpoint.every_steps
        every_eval = spec.training.eval_every_steps
        log_every = spec.training.log_every_steps
        sums: dict[str, float] = {}
        count = 0
        window: dict[str, float] = {}
        window_n = 0
        last_eval: dict[str, float] = {}
        micro = state.micro_step
        started = time.monotonic()
        # throughput: optimizer steps per second after a warm-up (first steps pay for lazy init)
        start_step = micro // gas
        warmup = int(config.get("timing_warmup_steps", max(1, min(10, (total_steps - start_step) // 5))))
        first_step_unix = None
        warm_at: tuple[int, float] | None = None
        last_at: tuple[int, float] | None = None
        step_times: list[float] = []  # after warm-up; the median shrugs off a noisy neighbour
        if rank == 0:
            print(f"[trainyard] job {job_id}: {plan.reason}; {world} workers, {spe} steps/epoch, "
                  f"{total_steps} steps" + (f", resumed at step {micro // gas}" if micro else ""), flush=True)

        for engine in engines.values():
            engine.train()
        scheduled = spec.training.lr_schedule != "constant" or spec.training.warmup_steps > 0
        param_groups = [group for engine in engines.values()
                        for group in getattr(engine.optimizer, "param_groups", None) or []]
        while micro < total_micro:
            epoch = micro // spe
            for batch in batches.epoch(epoch, start=micro % spe):
                step = micro // gas
                sctx.step, sctx.epoch = step, epoch
                if scheduled and micro % gas == 0:
                    lr = spec.training.lr_at(step, total_steps)
                    for group in param_groups:
                        group["lr"] = lr
                    if logger is not None and param_groups:
                        # read back from the optimizer: what it steps with, logged with that step's loss
                        logger.log_metrics({"lr": param_groups[0]["lr"]}, step=step + 1)
                out = workload.train_step(engines, _to_device(batch, device, dtype), sctx)
                micro += 1
                _maybe_crash_for_test(crash, rank=rank, step=micro // gas)
                if micro % gas:
                    continue
                step = micro // gas
                if first_step_unix is None:
                    first_step_unix = time.time()
                now = time.perf_counter()
                if step - start_step == warmup:
                    warm_at = (step, now)
                elif warm_at is not None:
                    step_times.append(now - last_at[1])
                last_at = (step, now)
                values = {k: float(v) for k, v in out.items()}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                    window[k] = window.get(k, 0.0) + v
                count += 1
                window_n += 1
                if logger is not None:
                    logger.log_metrics(values, step=step)
                if rank == 0 and (step % log_every == 0):
                    progress("progress", step, epoch, {k: v / window_n for k, v in window.items()})
                    window, window_n = {}, 0
                if micro >= total_micro:
                    break
                end_of_epoch = micro % spe == 0
                ckpt_due = (step % every_ckpt == 0) if every_ckpt else end_of_epoch
                eval_due = (step % every_eval == 0) if every_eval else end_of_epoch
                if not (ckpt_due or eval_due):
                    continue
                last_eval = evaluate(step, micro // spe if end_of_epoch else epoch)
                report = {**{k: v / max(1, count) for k, v in sums.items()}, **last_eval,
                          "step": step, "epoch": epoch, "total_steps": total_steps}
                sums, count = {}, 0
                progress("progress", step, epoch, report)
                if ckpt_due:
                    if logger is not None:
                        # what a checkpoint covers is on record before a crash can lose it
                        logger.flush()
                    tmp, ckpt = _save_checkpoint(engines, {"micro_step": micro, "step": step, "epoch": epoch,
                                                           **ckpt_meta}, rank=rank)
                    try:
                        session.report(report, checkpoint=ckpt)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                else:
                    session.report(report)
            if micro % spe != 0 and micro < total_micro:
                break  # cannot happen: an epoch always ends on its last batch

        # ---- the end: final eval, model, last checkpoint
        timing: dict[str, float] = {}
        if warm_at and last_at and last_at[0] > warm_at[0]:
            timing["train_steps_per_s"] = (last_at[0] - warm_at[0]) / (last_at[1] - warm_at[1])
        if step_times:
            timing["train_step_time_median_s"] = sorted(step_times)[len(step_times) // 2]
        if first_step_unix is not None:
            timing["trainyard_first_step_unix"] = first_step_unix
        if logger is not None and "train_steps_per_s" in timing:
            logger.log_metrics({"train_steps_per_s": timing["train_steps_per_s"]}, step=micro // gas)
        step = micro // gas
        epoch = max(0, (micro - 1) // spe) if micro else 0
        final_eval = evaluate(step, epoch)
        final = {**{k: v / max(1, count) for k, v in sums.items()}, **final_eval,
                 "step": step, "epoch": epoch, "total_steps": total_steps, "trainyard_done": 1, **timing}
        model_info: dict[str, Any] = {}
        want_model = bool(config.get("log_model", True)) and tracking and tracking.get("run_id")
        if want_model:
            state_dicts = _gather_state_dicts(engines, stage=plan.zero_stage, rank=rank)
            if rank == 0:
                model_info = _finish_tracking(logger, spec=spec, config=config, hparams=hparams,
                                              workload=workload, eval_ds=eval_ds,
                                              state_dicts=state_dicts, tracking=tracking,
                                              final_eval=final_eval, plan=plan)
        if rank == 0:
            final.update({f"trainyard_{k}": v for k, v in model_info.items() if v is not None})
            elapsed = time.monotonic() - started
            print(f"[trainyard] job {job_id}: {step} steps done in {elapsed:.1f}s; "
                  f"{json.dumps(final_eval)}", flush=True)
        if logger is not None:
            logger.close()
            logger = None  # closed: the finally below has nothing left to do
        progress("final", step, epoch, {**final_eval, **{k: v for k, v in final.items()
                                                         if k.startswith("trainyard_")}})
        tmp, ckpt = _save_checkpoint(engines, {"micro_step": micro, "step": step, "epoch": epoch,
                                               "done": True, **ckpt_meta}, rank=rank)
        try:
            session.report(final, checkpoint=ckpt)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        # a trial that Tune stops (ASHA, PBT) leaves through session.report with SystemExit,
        # a failed step with its exception: either way what rank 0 queued for MLflow is sent
        # and the logger's thread ends (an inline trial's actor runs the next trial)
        if logger is not None:
            logger.close()


def _finish_tracking(logger, *, spec, config, hparams, workload, eval_ds, state_dicts, tracking,
                     final_eval, plan) -> dict[str, Any]:
    """Rank 0: final metrics, spec, loss curve, workload artifacts, the model."""
    import yaml

    from trainyard.tracking.model import log_trainyard_model

    info: dict[str, Any] = {}
    logger.flush()
    with tempfile.TemporaryDirectory(prefix="ty-art-") as tmp:
        spec_path = os.path.join(tmp, "spec.yaml")
        with open(spec_path, "w") as fh:
            yaml.safe_dump(spec.model_dump(mode="json"), fh, sort_keys=False)
        logger.log_artifact(spec_path)
        want_artifacts = config.get("artifacts", True) is not False
        try:
            if want_artifacts:
                _loss_curve(logger, tmp, spec=spec, workload=workload)
        except Exception as exc:  # a plot is not worth failing a job for
            log.warning("loss curve failed: %s", exc)
        if want_artifacts and workload.artifacts is not None:
            try:
                plain = _plain_models(workload, hparams, state_dicts)
                from trainyard.workload import StepContext

                out_dir = os.path.join(tmp, "artifacts")
                os.makedirs(out_dir)
                paths = workload.artifacts(plain, eval_ds, StepContext(hparams=hparams), out_dir) or []
                for path in paths:
                    logger.log_artifact(path, "samples")
            except Exception as exc:
                log.warning("workload artifacts failed: %s", exc)
    register = config.get("register_model")
    if register is None:
        register = spec.tracking.register_model
    try:
        info = log_trainyard_model(state_dicts, workload=spec.workload, hparams=hparams,
                                   run_id=tracking["run_id"], tracking_uri=tracking.get("tracking_uri"),
                                   registered_model_name=spec.model_name() if register else None)
        logger.set_tags({"trainyard.model_uri": info["model_uri"],
                         **({"trainyard.model_name": info["model_name"],
                             "trainyard.model_version": info["model_version"]}
                            if info.get("model_version") else {})})
    except Exception as exc:
        log.exception("logging the model failed")
        info = {"model_error": f"{type(exc).__name__}: {exc}"[:500]}
    return info


def _plain_models(workload, hparams, state_dicts):
    models = workload.build_models(hparams)
    for name, module in models.items():
        module.load_state_dict(state_dicts[name])
        module.eval()
    return models


def _loss_curve(logger, tmp: str, *, spec, workload) -> None:
    from trainyard.tracking.plots import loss_curve_png

    client, run_id = logger.client, logger.run_id
    metrics = client.get_run(run_id).data.metrics
    train_keys = [k for k in metrics if (k not in workload.metrics or k == "loss") and k != "lr"]
    eval_keys = [k for k in workload.metrics if k in metrics and k != "loss"]

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    path = loss_curve_png(os.path.join(tmp, "loss_curve.png"),
                          train={k: history(k) for k in train_keys},
                          evals={k: history(k) for k in eval_keys}, title=spec.name)
    logger.log_artifact(path)


# ============================================================================ driver side

# Ray Train's controller picks up workers' reports (and so Tune's results) once per health
# check, every 2 s by default, and a worker waits for its report to be taken. A job that
# evaluates every few hundred milliseconds (digits families report each ~22-step epoch)
# spent most of its wall time waiting: rnn 48 s -> 19 s, autoencoder 330 s -> 49 s at 0.2 s.
# Ray propagates this variable from the driver to the controller and the workers; an
# operator's own setting wins.
CONTROLLER_POLL_S = "0.2"


def controller_env_defaults() -> None:
    """Set the driver-side Ray Train defaults Trainyard relies on (call before fit())."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_S)



def build_trainer(spec, *, job_id: str, storage: str | None = None,
                  mlflow_run: dict | None = None, progress_queue=None,
                  callbacks: list | None = None, extra_config: dict | None = None):
    """The TorchTrainer for `spec`: checkpoints under <storage>/<project>/<job_id>.

    storage: file:///abs or s3://bucket/prefix; default spec.checkpoint.storage, then
    $TRAINYARD_STORAGE, then the Trainyard home's storage/ folder. S3 credentials and
    endpoint come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and
    TRAINYARD_S3_ENDPOINT_URL (or spec.checkpoint.endpoint_url).
    A trainer with the same job_id and storage resumes from the job's latest checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainyard.runner.storage import resolve_storage

    target = resolve_storage(storage or spec.checkpoint.storage, project=spec.project,
                             endpoint_url=spec.checkpoint.endpoint_url)
    controller_env_defaults()
    on_gpu = bool(spec.resources.gpus_per_worker)
    resources = spec.resources.per_worker()
    scaling = ScalingConfig(num_workers=spec.resources.workers, use_gpu=on_gpu,
                            resources_per_worker=resources,
                            accelerator_type=spec.resources.accelerator_type if on_gpu else None)
    run_config = RunConfig(
        name=job_id, storage_path=target.path, storage_filesystem=target.filesystem,
        failure_config=FailureConfig(max_failures=spec.failure.max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
        callbacks=callbacks or None,
        worker_runtime_env={"env_vars": worker_env(spec)},
    )
    loop_config = {"spec": spec.model_dump(mode="json"), "job_id": job_id, "mlflow": mlflow_run,
                   "progress_queue": progress_queue, **(extra_config or {})}
    return TorchTrainer(train_loop_per_worker, train_loop_config=loop_config,
                        scaling_config=scaling, run_config=run_config,
                        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"))


@dataclass
class JobResult:
    metrics: dict
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    model_name: str | None
    model_version: str | None
    checkpoint: str | None
    extra: dict = field(default_factory=dict)

    def to_protocol(self) -> dict:
        return {"metrics": self.metrics, "mlflow_run_id": self.mlflow_run_id,
                "mlflow_experiment_id": self.mlflow_experiment_id, "model_name": self.model_name,
                "model_version": self.model_version, "checkpoint": self.checkpoint}


def take_available(queue) -> list:
    """Every item in a ray.util.queue.Queue now, in order, for its only consumer (qsize is
    then a lower bound: nobody else takes items). Never `queue.get(timeout=...)`: the queue
    actor's `asyncio.wait_for(queue.get(), timeout)` can drop the item it took when the
    timeout races the get (Python 3.11)."""
    n = queue.qsize()
    return queue.get_nowait_batch(n) if n else []


class _ProgressPrinter:
    """Driver thread: prints TRAINYARD_PROGRESS lines from what rank 0 queues, every item once,
    in order. It polls (take_available, else a short sleep) rather than blocking in a get."""

    def __init__(self, queue, emit: Callable[[str], None], *, poll_s: float = 0.2):
        self.queue, self.emit, self.poll_s = queue, emit, poll_s
        self.final: dict | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one drain at a time: lines keep the queue's order
        self._thread = threading.Thread(target=self._run, name="trainyard-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(self.poll_s)

    def _drain(self) -> int:
        """Emit what the queue holds now; return how many items it took."""
        from trainyard.runner.protocol import PROGRESS, format_line

        with self._lock:
            try:
                items = take_available(self.queue)
            except Exception:  # the queue actor is gone at shutdown
                return 0
            for item in items:
                if item.get("kind") == "final":
                    self.final = item
                    continue
                self.emit(format_line(PROGRESS, {k: item[k] for k in ("step", "total_steps", "epoch", "metrics")}))
            return len(items)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for _ in range(1000):  # what arrived since the thread's last look (bounded: a
            if not self._drain():  # producer still running must not keep us here)
                break


def spec_error_in(exc: BaseException | None):
    """The SpecError a worker raised (plan_steps refusing the warm-up, say), found inside Ray
    Train's WorkerGroupError (worker_failures) or an exception's causes; None if there is none.
    A job that fails on its spec then ends as a spec error (exit 2) with that error's message."""
    from trainyard.errors import SpecError

    todo, seen = [exc], set()
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, SpecError):
            return err
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures[rank] for rank in sorted(failures))
        todo.extend([getattr(err, "_base_exc", None), err.__cause__, err.__context__])
    return None


def _emit(line: str) -> None:
    print(line, flush=True)


def run_job(spec, job_id: str, *, storage: str | None = None, tracking_uri: str | None = None,
            emit: Callable[[str], None] = _emit, log_model: bool = True) -> dict:
    """Train `spec` as job `job_id` on the connected Ray cluster (ray.init is done here if
    needed) and return the TRAINYARD_RESULT payload. Raises on failure (after marking the
    MLflow run FAILED)."""
    import ray
    from ray.util.queue import Queue

    from trainyard.tracking import tracking_uri as _uri
    from trainyard.tracking.runs import end_job_run, run_tags, start_job_run

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    uri = _uri(tracking_uri)
    run = start_job_run(job_id=job_id, run_name=spec.name, experiment=spec.tracking.experiment,
                        uri=uri, tags={"trainyard.project": spec.project,
                                       "trainyard.workload": spec.workload})
    queue = Queue(actor_options={"num_cpus": 0})
    printer = _ProgressPrinter(queue, emit)
    trainer = build_trainer(spec, job_id=job_id, storage=storage, mlflow_run=run.to_config(),
                            progress_queue=queue, extra_config={"log_model": log_model})
    try:
        result = trainer.fit()
    except BaseException as exc:
        printer.stop()
        try:
            end_job_run(run, status="FAILED")
        except Exception:
            pass
        spec_error = spec_error_in(exc)
        if spec_error is not None:  # e.g. plan_steps: the spec is wrong, not the training
            raise spec_error from exc
        raise
    finally:
        printer.stop()
        try:
            ray.kill(queue.actor)
        except Exception:
            pass
    final = dict(printer.final or {})
    final_metrics = dict(final.get("metrics") or {})
    reported = dict(result.metrics or {})
    tags = {}
    try:
        tags = run_tags(run)
    except Exception:
        pass
    model_version = final_metrics.pop("trainyard_model_version", None) or reported.get(
        "trainyard_model_version") or tags.get("trainyard.model_version")
    model_name = final_metrics.pop("trainyard_model_name", None) or reported.get(
        "trainyard_model_name") or tags.get("trainyard.model_name")
    model_error = final_metrics.pop("trainyard_model_error", None) or reported.get("trainyard_model_error")
    for key in list(final_metrics):
        if key.startswith("trainyard_"):
            final_metrics.pop(key)
    if not final_metrics:
        final_metrics = {k: v for k, v in reported.items()
                         if not k.startswith("trainyard_") and k not in ("step", "epoch", "total_steps")}
    checkpoint = None
    if result.checkpoint is not None:
        path = result.checkpoint.path
        checkpoint = f"file://{path}" if path.startswith("/") else f"s3://{path.lstrip('/')}"
    end_job_run(run, status="FINISHED")
    out = JobResult(metrics=final_metrics, mlflow_run_id=run.run_id,
                    mlflow_experiment_id=run.experiment_id, model_name=model_name,
                    model_version=str(model_version) if model_version is not None else None,
                    checkpoint=checkpoint,
                    extra={"model_error": model_error} if model_error else {})
    payload = out.to_protocol()
    if model_error:
        payload["model_error"] = model_error
    return payload

"""Checkpoints of the worker loop: every engine, the rank's random generators, the loop's position."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

__all__ = ["Checkpointer", "STATE_FILE", "CKPT_TAG", "RNG_FILE", "latest_checkpoint_in_storage",
           "state_step", "ray_train_storage", "read_state", "saved_rng_ranks"]

STATE_FILE = "trainyard_state.json"
CKPT_TAG = "ckpt"
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


def _seed_generators(value: int) -> None:
    import random

    import numpy as np
    import torch

    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def saved_rng_ranks(path: str) -> list[int]:
    """The ranks whose generators a checkpoint folder holds."""
    prefix, suffix = RNG_FILE.split("{rank}")
    ranks = []
    for name in os.listdir(path):
        if name.startswith(prefix) and name.endswith(suffix) and name[len(prefix):-len(suffix)].isdigit():
            ranks.append(int(name[len(prefix):-len(suffix)]))
    return sorted(ranks)


def read_state(checkpoint) -> dict | None:
    """A checkpoint's state (position and meta) read from storage without downloading the rest;
    None when it cannot be read (loading it will then say what is wrong)."""
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{STATE_FILE}") as fh:
            return json.loads(fh.read().decode())
    except Exception:
        return None


def _load_checkpoint(engines, checkpoint, *, rank: int = 0, world_size: int = 1, seed: int = 0) -> dict:
    """Load every engine's DeepSpeed checkpoint and set this rank's random generators.

    Saved by another number of workers, a ZeRO checkpoint is loaded through its universal form
    (runner/universal.py; the engines must have been created with checkpoint.load_universal).
    Rank r restores rank r's saved generators when the checkpoint has them (at any world size);
    a rank without any (a grown world, an old checkpoint) is seeded from (seed, step, rank).
    The state's "resume" tells which, with the layout change, for the run's record."""
    import torch

    from trainyard.runner.elastic import rng_plan, rng_seed, rng_source
    from trainyard.runner.universal import UNIVERSAL_TAG, ensure_universal, needs_universal

    with checkpoint.as_directory() as path:
        with open(os.path.join(path, STATE_FILE)) as fh:
            state = json.load(fh)
        saved_world = int(state.get("world_size", world_size))
        converted = []
        for name, engine in engines.items():
            load_dir, tag = os.path.join(path, name), CKPT_TAG
            if needs_universal(saved_world=saved_world, world=world_size, zero_stage=engine.zero_optimization_stage()):
                if not engine.load_universal_checkpoint():
                    raise RuntimeError(f"module {name!r}: a checkpoint of {saved_world} workers loads on "
                                       f"{world_size} only into an engine built with checkpoint.load_universal")
                key = f"{getattr(checkpoint, 'path', path)}/{name}"
                load_dir, tag = ensure_universal(os.path.join(path, name, CKPT_TAG), key=key), UNIVERSAL_TAG
                converted.append(name)
            load_path, _ = engine.load_checkpoint(load_dir, tag=tag, load_optimizer_states=True,
                                                  load_lr_scheduler_states=False)
            if load_path is None:
                raise RuntimeError(f"DeepSpeed found no checkpoint for module {name!r} in {path}")
        saved_ranks = saved_rng_ranks(path)
        if rng_source(rank=rank, saved_ranks=saved_ranks) == "restored":
            _set_rng_state(torch.load(os.path.join(path, RNG_FILE.format(rank=rank)), weights_only=False))
        else:
            _seed_generators(rng_seed(seed=seed, step=int(state.get("step", 0)), rank=rank))
    state["resume"] = {"saved_world_size": saved_world, "universal": converted,
                       "rng": rng_plan(world=world_size, saved_ranks=saved_ranks)}
    return state


def _cpu_state(module) -> dict:
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in module.state_dict().items()}


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


def _order(state: dict) -> tuple[int, int]:
    """Which of two checkpoints of a run is newer: optimizer steps first. Micro-steps alone do
    not order them once the world size changed (2 accumulation steps per optimizer step on one
    worker, 1 on two)."""
    micro = int(state.get("micro_step", 0))
    return int(state.get("step", micro)), micro


def state_step(checkpoint) -> tuple[int, int]:
    """(optimizer step, micro-step) a checkpoint was saved at; (-1, -1) when its state cannot be read."""
    state = read_state(checkpoint)
    if state is None:
        return -1, -1
    try:
        return _order(state)
    except (TypeError, ValueError):
        return -1, -1


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


def ray_train_storage():
    import ray.train

    try:
        return ray.train.get_context().get_storage()
    except Exception:
        return None


def latest_checkpoint_in_storage():
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
        key = (_order(state), entry.base_name)
        if best is None or key > best[0]:
            best = (key, entry.path)
    return Checkpoint(best[1], filesystem=fs) if best else None


class Checkpointer:
    """Saves and restores every engine with the rank's generators and the loop's position.

    `meta` goes into every checkpoint's state (zero stage, world size, modules, run length):
    what `_complete` needs to tell a finished upload from a partial one."""

    def __init__(self, engines: dict, *, rank: int, world_size: int, zero_stage: int):
        self.engines, self.rank, self.world_size, self.zero_stage = engines, rank, world_size, zero_stage
        self.meta: dict = {}

    def restore(self, checkpoint, *, seed: int = 0) -> dict:
        return _load_checkpoint(self.engines, checkpoint, rank=self.rank, world_size=self.world_size, seed=seed)

    def save_and_report(self, session, report: dict, **position) -> None:
        """Checkpoint at `position` (micro_step, step, epoch[, done]) and report it through the
        session, which copies it to storage before returning; the local copy then goes."""
        tmp, ckpt = _save_checkpoint(self.engines, {**position, **self.meta}, rank=self.rank)
        try:
            session.report(report, checkpoint=ckpt)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def gather_state_dicts(self) -> dict[str, dict] | None:
        return _gather_state_dicts(self.engines, stage=self.zero_stage, rank=self.rank)

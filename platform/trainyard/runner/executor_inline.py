"""The inline trial executor: a 1-worker trial runs the worker loop in its own Tune actor, warm across trials."""
from __future__ import annotations

import contextlib
import os
from typing import Callable

__all__ = ["run_inline"]


def run_inline(loop: Callable, loop_config: dict, *, spec, trial_id: str, env: dict) -> dict:
    """Run the worker loop in this (Tune trial) process; return its last report."""
    from trainyard.runner.session import InlineSession

    on_gpu = bool(spec.resources.gpus_per_worker)
    # what a Train worker's runtime_env and rendezvous would give it (before torch is imported
    # here: DS_ACCELERATOR picks DeepSpeed's backend at its import). Only the loop reads them
    # (DeepSpeed reads LOCAL_RANK when it builds an engine), so they are put back afterwards:
    # the reused actor's next trial sets its own.
    with _environ({**env, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}):
        _inline_process_group(on_gpu)
        session = InlineSession(trial_id=trial_id, on_gpu=on_gpu)
        loop({**loop_config, "resume_from": None, "session": session})
    return session.last


def _inline_process_group(on_gpu: bool) -> None:
    """A world of one for DeepSpeed, made once per trial actor (reused by its later trials).
    An in-process store: no port to pick, nothing to rendezvous with."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", store=dist.HashStore(), rank=0, world_size=1)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the block; restore what was there (or unset) after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

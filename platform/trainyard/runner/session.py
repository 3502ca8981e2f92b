"""Where the worker loop runs, as it sees it: the Session protocol, for Ray Train and inline trials."""
from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

from trainyard.runner.reports import first_flags, reportable

__all__ = ["Session", "RayTrainSession", "InlineSession", "loop_session"]


@runtime_checkable
class Session(Protocol):
    """What the Trainer needs from the process it runs in: its rank, its device, the
    checkpoint to start from, and a place to report metrics (and checkpoints) to."""

    rank: int
    world_size: int
    local_world_size: int

    def device(self) -> Any: ...

    def get_checkpoint(self) -> Any: ...

    def report(self, metrics: dict, checkpoint: Any = None) -> None: ...


class RayTrainSession:
    """A Ray Train worker (the default): reports go to Train's controller."""

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

        from trainyard.runner.checkpoint import latest_checkpoint_in_storage, state_step

        checkpoint = ray.train.get_checkpoint()
        found = latest_checkpoint_in_storage()
        if found is not None and (checkpoint is None or state_step(found) > state_step(checkpoint)):
            checkpoint = found
        return checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=checkpoint)


class InlineSession:
    """A 1-worker sweep trial run inline in its Tune trial actor: rank 0 of 1; the checkpoint
    it starts from is Tune's (a restore, a PBT clone, a resumed sweep); its checkpoints go
    straight to Tune, which persists them under the trial's folder of the experiment."""

    rank, world_size, local_world_size = 0, 1, 1

    def __init__(self, *, trial_id: str, on_gpu: bool):
        from ray import tune

        self.on_gpu = on_gpu
        self.checkpoint = tune.get_checkpoint()
        self.last: dict = {}
        source = None
        if self.checkpoint is not None:
            # <experiment>/<trial dir = trial id>/checkpoint_NNNNNN
            source = os.path.basename(os.path.dirname(str(self.checkpoint.path).rstrip("/")))
            print(f"[trainyard] trial {trial_id}: restoring from {self.checkpoint.path}", flush=True)
        self.first_flags = first_flags(self.checkpoint is not None, source, trial_id)

    def device(self):
        import torch

        return torch.device("cuda", 0) if self.on_gpu else torch.device("cpu")

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        from ray import tune

        self.last = dict(metrics)
        report = {**reportable(metrics), **self.first_flags}
        self.first_flags = {}
        if checkpoint is not None:
            checkpoint = tune.Checkpoint(checkpoint.path, filesystem=checkpoint.filesystem)
        # Tune copies the checkpoint to storage before this returns (the loop then deletes its
        # local folder); a trial that ASHA/PBT stops leaves here with SystemExit
        tune.report(report, checkpoint=checkpoint)


def loop_session(config: dict) -> Session:
    """The session a worker loop reports through: config["session"] when a sweep runs the
    trial inline, else Ray Train's worker context."""
    return config.get("session") or RayTrainSession()

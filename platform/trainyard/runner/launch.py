"""make_trainer: the one TorchTrainer assembly (scaling, storage, failures, worker env) for jobs and sweep trials."""
from __future__ import annotations

import os
from typing import Callable

__all__ = ["make_trainer", "controller_env_defaults", "CONTROLLER_POLL_S"]

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


def make_trainer(spec, *, name: str, target, loop_config: dict, loop: Callable | None = None,
                 num_to_keep: int | None = None, callbacks: list | None = None, cpu_held_elsewhere: float = 0.0):
    """The TorchTrainer that runs `loop` (default: the Trainer's worker loop) on
    spec.resources.workers workers, its Train run `name` under `target` (a resolved storage).

    num_to_keep: checkpoints kept (None keeps all).
    cpu_held_elsewhere: CPU taken off each worker, held by the caller (a sweep's trial actor),
    so that a trial of N workers fits N CPUs.
    A trainer with the same name and storage resumes from that run's latest checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from trainyard.runner.engines import worker_env

    if loop is None:
        from trainyard.runner.trainer import train_loop_per_worker as loop
    controller_env_defaults()
    on_gpu = bool(spec.resources.gpus_per_worker)
    per_worker = spec.resources.per_worker()
    if cpu_held_elsewhere:
        per_worker["CPU"] = max(0.01, per_worker.get("CPU", 1.0) - cpu_held_elsewhere)
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=spec.resources.workers, use_gpu=on_gpu,
                                     resources_per_worker=per_worker,
                                     accelerator_type=spec.resources.accelerator_type if on_gpu else None),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=target.path, storage_filesystem=target.filesystem,
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=callbacks or None,
            worker_runtime_env={"env_vars": worker_env(spec)},
        ),
    )

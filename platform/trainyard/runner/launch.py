"""make_trainer: the one TorchTrainer assembly (scaling, storage, failures, worker env) for jobs and sweep trials."""
from __future__ import annotations

import os
from typing import Callable

__all__ = ["make_trainer", "controller_env_defaults", "scaling_for", "max_failures_for", "CONTROLLER_POLL_S",
           "RESIZE_INTERVAL_ENV", "ELASTIC_MIN_RESTARTS", "GROUP_START_TIMEOUT_ENV", "ELASTIC_GROUP_START_TIMEOUT_S"]

# Ray Train's controller picks up workers' reports (and so Tune's results) once per health
# check, every 2 s by default, and a worker waits for its report to be taken. A job that
# evaluates every few hundred milliseconds (digits families report each ~22-step epoch)
# spent most of its wall time waiting: rnn 48 s -> 19 s, autoencoder 330 s -> 49 s at 0.2 s.
# Ray propagates this variable from the driver to the controller and the workers; an
# operator's own setting wins.
CONTROLLER_POLL_S = "0.2"


# Ray Train looks for room to grow an elastic group this often while it runs (its default: 60 s).
# A grow restarts the group from its latest checkpoint, so checking much more often only adds
# restarts when nodes come and go in bursts; tests and the benchmark set it low.
RESIZE_INTERVAL_ENV = "TRAINYARD_ELASTIC_RESIZE_INTERVAL_S"
DEFAULT_RESIZE_INTERVAL_S = 60.0
# An elastic job exists to outlive a lost node: each loss is one of Ray Train's failures (the
# group restarts on the workers left, from the latest checkpoint), so it gets at least this many
# whatever failure.max_failures says (its default 0 would end the job at the first lost node).
ELASTIC_MIN_RESTARTS = 3
# Right after a node is lost, Ray Train still believes in it (its AutoscalingCoordinator
# refreshes the node list every 20 s, and the GCS marks a silent raylet dead after ~15 s), so the
# restart first asks for the old size, and waits this long for a placement group that cannot
# come before it tries again with what is left (Ray's default: 60 s). An elastic group only
# asks for sizes it saw room for, so a placement group that is not ready within 15 s is stale;
# a timeout is a controller retry that no failure budget counts. Fixed jobs keep Ray's default;
# an operator's own setting wins.
GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
ELASTIC_GROUP_START_TIMEOUT_S = "15"


# the most workers the scheduler granted this attempt (its project's quota room): set by the
# controller on the Ray job (controller/runtime.py), read here only
WORKERS_MAX_ENV = "TRAINYARD_WORKERS_MAX"


def scaling_for(resources) -> int | tuple[int, int]:
    """ScalingConfig.num_workers: an int for a fixed job, (min, max) for an elastic one, max
    lowered to the scheduler's grant ($TRAINYARD_WORKERS_MAX) so Ray Train never grows past it."""
    low, high = resources.min_workers, resources.max_workers
    raw = os.environ.get(WORKERS_MAX_ENV, "").strip()
    if resources.elastic and raw.isdigit():  # an unreadable grant is no grant: the spec's max
        high = max(low, min(high, int(raw)))
    return (low, high) if high > low else high


def max_failures_for(spec) -> int:
    """FailureConfig.max_failures: the spec's, raised to ELASTIC_MIN_RESTARTS for an elastic job
    (-1, unlimited, stays)."""
    wanted = spec.failure.max_failures
    if not spec.resources.elastic or wanted < 0:
        return wanted
    return max(wanted, ELASTIC_MIN_RESTARTS)


def resize_interval_s() -> float:
    from trainyard.errors import SpecError

    raw = os.environ.get(RESIZE_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_RESIZE_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise SpecError(f"must be a number of seconds in (0, 3600], got {raw!r}", field=RESIZE_INTERVAL_ENV,
                        value=raw, fix=f"unset it for the default ({DEFAULT_RESIZE_INTERVAL_S:g} s)")
    return value


def controller_env_defaults(*, elastic: bool = False) -> None:
    """Set the driver-side Ray Train defaults Trainyard relies on (call before fit()); Ray
    propagates them to the controller and the workers."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_S)
    if elastic:
        os.environ.setdefault(GROUP_START_TIMEOUT_ENV, ELASTIC_GROUP_START_TIMEOUT_S)


def make_trainer(spec, *, name: str, target, loop_config: dict, loop: Callable | None = None,
                 num_to_keep: int | None = None, callbacks: list | None = None, cpu_held_elsewhere: float = 0.0):
    """The TorchTrainer that runs `loop` (default: the Trainer's worker loop) on
    spec.resources' workers (min..max for an elastic job: Ray Train starts it on what the cluster
    has room for, at least min, restarts it on fewer when a node is lost and grows it back when
    the autoscaler adds room), its Train run `name` under `target` (a resolved storage).

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
    controller_env_defaults(elastic=spec.resources.elastic)
    on_gpu = bool(spec.resources.gpus_per_worker)
    per_worker = spec.resources.per_worker()
    elastic = {"elastic_resize_monitor_interval_s": resize_interval_s()} if spec.resources.elastic else {}
    if cpu_held_elsewhere:
        per_worker["CPU"] = max(0.01, per_worker.get("CPU", 1.0) - cpu_held_elsewhere)
    return TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=scaling_for(spec.resources), use_gpu=on_gpu,
                                     resources_per_worker=per_worker,
                                     accelerator_type=spec.resources.accelerator_type if on_gpu else None,
                                     **elastic),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=target.path, storage_filesystem=target.filesystem,
            failure_config=FailureConfig(max_failures=max_failures_for(spec)),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=callbacks or None,
            worker_runtime_env={"env_vars": worker_env(spec)},
        ),
    )

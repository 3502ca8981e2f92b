"""The names a training job had here before the runner was split into parts (kept for callers)."""
from __future__ import annotations

from trainyard.runner.batches import Batches as _Batches
from trainyard.runner.batches import plan_steps
from trainyard.runner.checkpoint import _rng_state, _set_rng_state
from trainyard.runner.engines import worker_env
from trainyard.runner.job import JobResult, _ProgressPrinter, build_trainer, run_job, spec_error_in
from trainyard.runner.launch import CONTROLLER_POLL_S, controller_env_defaults, make_trainer
from trainyard.runner.reports import take_available
from trainyard.runner.session import loop_session
from trainyard.runner.trainer import CRASH_ENV, Trainer, train_loop_per_worker

__all__ = ["train_loop_per_worker", "build_trainer", "make_trainer", "run_job", "JobResult", "worker_env",
           "loop_session", "plan_steps", "spec_error_in", "take_available", "controller_env_defaults",
           "CONTROLLER_POLL_S", "CRASH_ENV", "Trainer", "_Batches", "_ProgressPrinter", "_rng_state",
           "_set_rng_state"]

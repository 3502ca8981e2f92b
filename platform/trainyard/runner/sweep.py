"""The names the sweep runner had here before it was split into parts (kept for callers)."""
from __future__ import annotations

from trainyard.runner.executor_gang import POINTER_FILE
from trainyard.runner.executor_gang import run_gang as _run_gang
from trainyard.runner.executor_inline import _environ
from trainyard.runner.executor_inline import run_inline as _run_inline
from trainyard.runner.reports import SENTINEL as _SENTINEL
from trainyard.runner.reports import first_flags as _first_flags
from trainyard.runner.reports import forward_reports as _forward_reports
from trainyard.runner.reports import reportable as _reportable
from trainyard.runner.session import InlineSession as _InlineSession
from trainyard.runner.sweep_driver import _tune_parts, main, run_sweep
from trainyard.runner.trial import make_trial as _make_trial
from trainyard.runner.trial import trial_outcome as _trial_outcome
from trainyard.sweeps.plan import SweepPlan, experiment_name, plan_sweep, promoting
from trainyard.tracking.sweeps import (CHILD_END, CLOSED_BY_TAG, KIND_TAG, STOPPED_EARLY_TAG, SWEEP_ID_TAG,
                                       TRIAL_ID_TAG)
from trainyard.tracking.sweeps import child_run as _child_run
from trainyard.tracking.sweeps import end_child as _end_child

__all__ = ["run_sweep", "main", "SweepPlan", "plan_sweep", "experiment_name", "promoting", "POINTER_FILE",
           "CHILD_END", "SWEEP_ID_TAG", "TRIAL_ID_TAG", "KIND_TAG", "STOPPED_EARLY_TAG", "CLOSED_BY_TAG",
           "_SENTINEL", "_forward_reports", "_first_flags", "_reportable", "_trial_outcome", "_end_child",
           "_child_run", "_environ", "_run_inline", "_run_gang", "_InlineSession", "_make_trial", "_tune_parts"]

"""MLflow tracking for Trainyard jobs.

    runs     the driver creates (or, for a resubmitted job, finds) one run per job and
             hands its id to the workers; a restarted worker group reuses it
    logger   RunLogger: rank 0's logging; metrics through MLflow's asynchronous log_batch
    finish   rank 0's end of a run: spec, loss curve, workload samples, the model
    sweeps   a sweep's parent run, its trials' child runs, the leaderboard, `candidate`
    model    TrainyardModel (an mlflow.pyfunc PythonModel: JSON payload in, JSON out),
             log_trainyard_model (a user's workload code travels in the model) and
             load_trainyard_model (for serving)
    plots    the loss-curve PNG

Rank 0 logs; other ranks never open a run. Importing this package imports no torch.
"""
from __future__ import annotations

import os

__all__ = ["tracking_uri", "JOB_ID_TAG"]

JOB_ID_TAG = "trainyard.job_id"


def tracking_uri(explicit: str | None = None) -> str | None:
    """The MLflow tracking URI: explicit, else $MLFLOW_TRACKING_URI, else None (MLflow's default)."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("TRAINYARD_MLFLOW_URI") or None

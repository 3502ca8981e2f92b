"""MLflow tracking for Trainyard jobs.

    runs     the driver creates (or, for a resubmitted job, finds) one run per job and
             hands its id to the workers; a restarted worker group reuses it
    logger   RunLogger: rank 0's logging, metrics batched (log_batch) off the training thread
    model    TrainyardModel (an mlflow.pyfunc PythonModel: JSON payload in, JSON out),
             log_trainyard_model and load_trainyard_model (for serving)
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

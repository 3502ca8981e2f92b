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

One identity end to end: every run of a job (a job's run, a sweep's parent and its trials)
is tagged `trainyard.user` and `trainyard.project`, the MLflow experiment of a job is
`<project>/<tracking.experiment>`, and a registered model carries `trainyard.project` (the
project that first registered the name owns it). The server gives the job's driver its owner
and project as TRAINYARD_USER and TRAINYARD_PROJECT.
"""
from __future__ import annotations

import os

__all__ = ["tracking_uri", "JOB_ID_TAG", "USER_TAG", "PROJECT_TAG", "UNKNOWN_USER", "run_user", "run_project",
           "identity_tags", "experiment_for"]

JOB_ID_TAG = "trainyard.job_id"
USER_TAG = "trainyard.user"
PROJECT_TAG = "trainyard.project"
# a runner started by hand, not by the server, knows no Trainyard user
UNKNOWN_USER = "unknown"


def run_user() -> str:
    """Whose job this is: $TRAINYARD_USER, which the server sets to the job's owner."""
    return os.environ.get("TRAINYARD_USER") or UNKNOWN_USER


def run_project(spec) -> str:
    """The job's project: $TRAINYARD_PROJECT (the server's record of it), else the spec's.
    Tags, the MLflow experiment and the checkpoint prefix all use this one answer."""
    return os.environ.get("TRAINYARD_PROJECT") or spec.project


def identity_tags(spec) -> dict[str, str]:
    return {USER_TAG: run_user(), PROJECT_TAG: run_project(spec)}


# MLflow's experiments.name column (VARCHAR(256): PostgreSQL refuses longer names)
MAX_EXPERIMENT_NAME = 256


def experiment_for(project: str, experiment: str) -> str:
    """The MLflow experiment of a project's `tracking.experiment`: experiments are per project,
    so two projects' `default` experiments are two experiments."""
    name = f"{project}/{experiment}"
    if len(name) > MAX_EXPERIMENT_NAME:
        from trainyard.errors import SpecError

        room = MAX_EXPERIMENT_NAME - len(project) - 1
        raise SpecError(f"is {len(experiment)} characters; in project {project!r} it may have at most {room} "
                        f"(MLflow names it {project}/<experiment>, at most {MAX_EXPERIMENT_NAME})",
                        field="tracking.experiment", value=experiment[:80], fix=f"shorten it to {room} characters")
    return name


def tracking_uri(explicit: str | None = None) -> str | None:
    """The MLflow tracking URI: explicit, else $MLFLOW_TRACKING_URI, else None (MLflow's default)."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or os.environ.get("TRAINYARD_MLFLOW_URI") or None

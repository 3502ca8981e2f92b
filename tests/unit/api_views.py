"""The API's answers as the SDK returns them (trainyard.apitypes models), for the CLI tests' fake
clients: complete, so that a CLI that reads a field the API does not have fails here."""
from __future__ import annotations

from trainyard import apitypes as T

__all__ = ["job_view", "job_item", "sweep_view", "sweep_item"]


def job_view(job_id: str = "tiny-1", **fields) -> T.JobDetail:
    """A job as the SDK returns it (the API's JobDetail model)."""
    base = {"id": job_id, "kind": "job", "name": "tiny", "project": "default", "owner": "admin", "priority": 0,
            "state": "PENDING", "phase": "PENDING", "workload": "cnn", "workers": 1, "cluster": "local",
            "submission_id": None, "attempt": 0, "created_at": "2026-01-01T00:00:00Z", "started_at": None,
            "ended_at": None, "duration_s": None, "message": None, "metrics": None, "mlflow_run_id": None,
            "mlflow_experiment_id": None, "mlflow_url": None, "cancel_requested": False, "pending": None,
            "progress": None, "result": None, "spec": {}, "events": []}
    return T.JobDetail.model_validate({**base, **fields})


def job_item(job_id: str = "tiny-1", **fields) -> T.Job:
    """A job as lists show it (the API's Job model)."""
    return T.Job.model_validate(job_view(job_id, **fields).model_dump(exclude={"progress", "result", "spec", "events"}))


def sweep_view(sweep_id: str = "sw-1", *, leaderboard=None, best=None, sweep=None, promote=None, model=None,
               **fields) -> T.Sweep:
    """A sweep as the SDK returns it (the API's Sweep model)."""
    job = job_view(sweep_id, kind="sweep", **fields).model_dump()
    return T.Sweep.model_validate({**job, "leaderboard": leaderboard, "best": best, "sweep": sweep,
                                   "promote": promote, "model": model})


def sweep_item(sweep_id: str = "sw-1", *, best=None, num_trials=None, **fields) -> T.SweepSummary:
    """A sweep as lists show it (the API's SweepSummary model)."""
    return T.SweepSummary.model_validate({**job_item(sweep_id, kind="sweep", **fields).model_dump(),
                                          "best": best, "num_trials": num_trials})

"""One MLflow run per job, created by the driver (not the workers).

Creating the run before the workers start means a worker-group restart (max_failures)
and a resubmission of the same job id log into the same run instead of a new one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from trainyard.tracking import JOB_ID_TAG, tracking_uri

__all__ = ["RunRef", "start_job_run", "end_job_run", "latest_metrics", "run_tags", "artifact_location_for"]


@dataclass
class RunRef:
    tracking_uri: str | None
    run_id: str
    experiment_id: str

    def to_config(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id,
                "experiment_id": self.experiment_id}


def _client(uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_location_for(uri: str | None, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts when the tracking URI is a SQLite file: a
    folder beside the database. MLflow's own default there is ./mlruns relative to whichever
    process creates the experiment, here the job driver, whose working directory is Ray's
    (the directory `ray start` ran in), so models landed in whatever folder that was and were
    lost with it. None for a tracking server (it decides) and for other databases."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    database = uri[len("sqlite:///"):].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (Path(database).resolve().parent / "mlartifacts" / folder).as_uri()


def start_job_run(*, job_id: str, run_name: str, experiment: str, tags: dict | None = None,
                  uri: str | None = None, parent_run_id: str | None = None) -> RunRef:
    """Find the run tagged with this job id in `experiment`, or create it."""
    uri = tracking_uri(uri)
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_location_for(uri, experiment))
        except Exception:  # created concurrently by another job
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    elif exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
        experiment_id = exp.experiment_id
    else:
        experiment_id = exp.experiment_id
    found = client.search_runs([experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'",
                               max_results=1, order_by=["attributes.start_time DESC"])
    all_tags = {JOB_ID_TAG: job_id, **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for key, value in all_tags.items():
            client.set_tag(run_id, key, str(value))
    else:
        run = client.create_run(experiment_id, run_name=run_name,
                                tags={k: str(v) for k, v in all_tags.items()})
        run_id = run.info.run_id
    return RunRef(tracking_uri=uri, run_id=run_id, experiment_id=str(experiment_id))


def end_job_run(ref: RunRef, *, status: str = "FINISHED") -> None:
    _client(ref.tracking_uri).set_terminated(ref.run_id, status=status)


def latest_metrics(ref: RunRef) -> dict[str, float]:
    return dict(_client(ref.tracking_uri).get_run(ref.run_id).data.metrics)


def run_tags(ref: RunRef) -> dict[str, str]:
    return dict(_client(ref.tracking_uri).get_run(ref.run_id).data.tags)

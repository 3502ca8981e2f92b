"""What a Ray job for a Trainyard job looks like: entrypoint and runtime_env. Pure.

The contract with the runner (trainyard.runner):
    entrypoint  python -m trainyard.runner job --job-id <ID>
    env_vars    TRAINYARD_SPEC (JobSpec JSON), TRAINYARD_JOB_ID, MLFLOW_TRACKING_URI (and
                MLFLOW_TRACKING_USERNAME/PASSWORD when MLflow needs credentials),
                TRAINYARD_STORAGE, TRAINYARD_USER and TRAINYARD_PROJECT (whose job it is: the
                job row's owner and project), and for s3:// storage TRAINYARD_S3_ENDPOINT_URL,
                AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; RAY_JOB_STOP_WAIT_TIME_S for jobs (the
                preemption grace period); TRAINYARD_WORKERS_MAX for an elastic job (the most
                workers the scheduler granted it: runner/launch.scaling_for never grows past
                it); plus spec.env (which cannot override any of these).
    working_dir gcs://_ray_pkg_<sha1>.zip when the job shipped a folder.
"""
from __future__ import annotations

import json
import math
from typing import Any

from pydantic import SecretStr

from trainyard import redact
from trainyard.config import Settings

__all__ = ["DEFAULT_ENTRYPOINT", "WORKERS_MAX_ENV", "entrypoint_for", "runtime_env_for", "secret_values", "storage_for",
           "mlflow_credentials",
           "s3_settings_for"]

# the grant an elastic job's runner caps Ray Train's max at (runner/launch.py reads it)
WORKERS_MAX_ENV = "TRAINYARD_WORKERS_MAX"
DEFAULT_ENTRYPOINT = "python -m trainyard.runner job --job-id {job_id}"
SWEEP_ENTRYPOINT = "python -m trainyard.runner sweep --sweep-id {job_id}"


def entrypoint_for(job_id: str, settings: Settings, *, kind: str = "job") -> str:
    """The runner command. Overridable (settings.extra['runner_entrypoint'] or
    settings.runner_entrypoint, from $TRAINYARD_RUNNER_ENTRYPOINT) so the control plane can be
    tested with a stand-in."""
    template = (settings.extra.get("runner_entrypoint") or settings.runner_entrypoint
                or (SWEEP_ENTRYPOINT if kind == "sweep" else DEFAULT_ENTRYPOINT))
    # replace, not format: a stand-in `python -c` script is full of braces
    return template.replace("{job_id}", job_id)


def _revealed(secret: SecretStr | None) -> str | None:
    # only where the value leaves for the job's own environment, or to be redacted
    return secret.get_secret_value() if secret is not None else None


def storage_for(spec: dict[str, Any], settings: Settings) -> str:
    return (spec.get("checkpoint") or {}).get("storage") or settings.storage


def s3_settings_for(spec: dict[str, Any], settings: Settings) -> dict[str, str | None]:
    """Endpoint and credentials an s3:// job gets: the spec's, else the server's."""
    env = spec.get("env") or {}
    return {
        "endpoint_url": (spec.get("checkpoint") or {}).get("endpoint_url") or settings.s3_endpoint_url
        or env.get("TRAINYARD_S3_ENDPOINT_URL"),
        "key": _revealed(settings.s3_key) or env.get("AWS_ACCESS_KEY_ID"),
        "secret": _revealed(settings.s3_secret) or env.get("AWS_SECRET_ACCESS_KEY"),
    }


def mlflow_credentials(settings: Settings) -> dict[str, str]:
    """MLflow basic-auth credentials for a job or a Serve replica (none when MLflow is open)."""
    if not (settings.mlflow_username and settings.mlflow_password):
        return {}
    return {"MLFLOW_TRACKING_USERNAME": settings.mlflow_username,
            "MLFLOW_TRACKING_PASSWORD": _revealed(settings.mlflow_password)}


def runtime_env_for(job_id: str, spec: dict[str, Any], settings: Settings, *, owner: str, project: str,
                    working_dir_uri: str | None = None, stop_wait_s: float | None = None,
                    workers_max: int | None = None) -> dict[str, Any]:
    """owner, project: the job row's; the runner tags the job's MLflow runs with them and puts
    its experiment and checkpoints under the project.
    stop_wait_s: how long Ray's stop_job waits after its SIGTERM before it kills the driver
    (RAY_JOB_STOP_WAIT_TIME_S, read by Ray's job supervisor, which runs in this runtime_env;
    Ray's default is 3 s): the time a preempted job has to checkpoint."""
    env: dict[str, str] = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    storage = storage_for(spec, settings)
    env.update({
        "TRAINYARD_SPEC": json.dumps(spec, separators=(",", ":"), sort_keys=True),
        "TRAINYARD_JOB_ID": job_id,
        "TRAINYARD_STORAGE": storage,
        "TRAINYARD_USER": owner,
        "TRAINYARD_PROJECT": project,
    })
    if workers_max is not None:
        env[WORKERS_MAX_ENV] = str(int(workers_max))
    else:
        env.pop(WORKERS_MAX_ENV, None)  # the scheduler's to set: a spec's env cannot lift the cap
    if stop_wait_s is not None:
        env["RAY_JOB_STOP_WAIT_TIME_S"] = str(max(1, math.ceil(stop_wait_s)))
    if settings.mlflow_uri:
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
        env.update(mlflow_credentials(settings))
    if storage.startswith("s3://"):
        s3 = s3_settings_for(spec, settings)
        for name, value in (("TRAINYARD_S3_ENDPOINT_URL", s3["endpoint_url"]),
                            ("AWS_ACCESS_KEY_ID", s3["key"]), ("AWS_SECRET_ACCESS_KEY", s3["secret"])):
            if value:
                env[name] = value
    runtime_env: dict[str, Any] = {"env_vars": env}
    if working_dir_uri:
        runtime_env["working_dir"] = working_dir_uri
    return runtime_env


def secret_values(spec: dict[str, Any], settings: Settings) -> list[str]:
    """Values that must never appear in a message, a log line or an API response."""
    values = [*settings.secret_values(), *redact.env_secrets(spec)]
    return [v for v in values if v and len(v) >= redact.MIN_SECRET_LEN]

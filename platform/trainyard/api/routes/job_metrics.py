"""GET /v1/jobs/{id}/metrics: a job's metric history, read from its MLflow run.

The console charts it; MLflow is asked over its REST API with the server's own credentials, so
a browser needs neither MLflow access nor MLflow credentials, and the job's project roles decide
who may read (the same check as GET /v1/jobs/{id}). Read-only, bounded: at most MAX_KEYS metric
keys, each thinned to at most MAX_POINTS points.
"""
from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter, Depends

from trainyard.api.auth import current_principal
from trainyard.api.context import ServerContext, get_ctx
from trainyard.api.errors import error_responses
from trainyard.api.params import JobId
from trainyard.api.routes.jobs import visible_job
from trainyard.auth.principal import Principal
from trainyard.errors import ClusterError
from trainyard.store import jobs as jobs_repo

__all__ = ["router", "thin", "MAX_KEYS", "MAX_POINTS"]

MAX_KEYS = 32
MAX_POINTS = 1000
TIMEOUT_S = 10.0

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(current_principal)],
                   responses=error_responses(401, 403, 422))


def thin(points: list[list[float]], *, most: int = MAX_POINTS) -> list[list[float]]:
    """At most `most` points, evenly spaced, always keeping the last (the final value)."""
    if len(points) <= most:
        return points
    stride = len(points) / (most - 1)
    picked = [points[int(i * stride)] for i in range(most - 1)]
    return picked + [points[-1]]


def _history(client: httpx.Client, run_id: str, key: str) -> list[list[float]]:
    points: list[dict[str, Any]] = []
    token = None
    for _ in range(50):  # pages of MLflow's answer; a run has far fewer
        params = {"run_id": run_id, "metric_key": key, "max_results": 25000}
        if token:
            params["page_token"] = token
        resp = client.get("/api/2.0/mlflow/metrics/get-history", params=params)
        resp.raise_for_status()
        body = resp.json()
        points += body.get("metrics") or []
        token = body.get("next_page_token")
        if not token:
            break
    points.sort(key=lambda m: (int(m.get("step") or 0), int(m.get("timestamp") or 0)))
    return thin([[int(m.get("step") or 0), float(m["value"]), int(m.get("timestamp") or 0)]
                 for m in points if isinstance(m.get("value"), (int, float))])


def read_metrics(*, uri: str, run_id: str, auth: tuple[str, str] | None = None) -> dict[str, list[list[float]]]:
    """{metric key: [[step, value, timestamp_ms], ...]} of one MLflow run."""
    try:
        with httpx.Client(base_url=uri.rstrip("/"), auth=auth, timeout=TIMEOUT_S) as client:
            resp = client.get("/api/2.0/mlflow/runs/get", params={"run_id": run_id})
            resp.raise_for_status()
            keys = sorted({m["key"] for m in ((resp.json().get("run") or {}).get("data") or {}).get("metrics") or []})
            return {key: _history(client, run_id, key) for key in keys[:MAX_KEYS]}
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise ClusterError(f"MLflow did not give run {run_id}'s metrics"
                           + (f" (HTTP {status})" if status else f" ({type(exc).__name__})"),
                           fix="check that the server's MLflow (TRAINYARD_MLFLOW_URI) is up") from None


@router.get("/{job_id}/metrics", summary="A job's metric history from its MLflow run (step, value, time)",
            responses=error_responses(404, 502))
def job_metrics(job_id: JobId, principal: Principal = Depends(current_principal),
                ctx: ServerContext = Depends(get_ctx)) -> dict:
    visible_job(ctx, principal, job_id)
    with ctx.db.session() as s:
        run_id = jobs_repo.get_job(s, job_id).mlflow_run_id
    uri = ctx.settings.mlflow_uri
    if not run_id or not uri.startswith("http"):
        note = "no MLflow run recorded yet" if not run_id else "the server has no MLflow tracking server over HTTP"
        return {"job_id": job_id, "mlflow_run_id": run_id, "metrics": {}, "note": note}
    settings = ctx.settings
    auth = None
    if settings.mlflow_username and settings.mlflow_password:
        auth = (settings.mlflow_username, settings.mlflow_password.get_secret_value())
    return {"job_id": job_id, "mlflow_run_id": run_id, "metrics": read_metrics(uri=uri, run_id=run_id, auth=auth),
            "note": None}

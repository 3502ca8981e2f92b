"""Turning store rows into scheduler data and API dictionaries. Pure."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from trainyard import redact
from trainyard.controller.costs import segment_workers
from trainyard.scheduler import ClusterView, Pending, QueuedJob, held_workers, subtract_reserved, worker_bundle
from trainyard.scheduler.model import demand_of
from trainyard.specs.models import worker_bounds
from trainyard.store import state as st
from trainyard.store.models import ClusterRow, JobRow

__all__ = ["quota_demand", "queued_job", "worker_range", "live_workers", "row_job", "job_demand", "ledger_demand", "cluster_view",
           "job_dict", "cluster_dict", "iso", "reserved_by_cluster", "redacted_spec", "pending_of", "pending_record", "PENDING_KEY"]

# A queued job has no result yet, so the why-pending record lives in the result column under
# this key until the job is dispatched (the controller clears it then). job_dict shows it as
# "pending", never as "result".
PENDING_KEY = "pending"


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def queued_job(job_id: str, spec: dict[str, Any], *, priority: int = 0, seq: float = 0.0,
               project: str = "default", checkpoint_cluster: str | None = None,
               live: int | None = None, granted: int | None = None) -> QueuedJob:
    """The scheduler's view of a job. A queued elastic job is admitted at its min and may grow
    to its max; a running one (`live`/`granted` from its row, see `row_job`) holds its live size
    (held_workers) and may grow to its grant."""
    res = spec.get("resources") or {}
    per = {"CPU": float(res.get("cpus_per_worker", 1.0))}
    if res.get("gpus_per_worker"):
        per["GPU"] = float(res["gpus_per_worker"])
    per.update({k: float(v) for k, v in (res.get("custom_resources") or {}).items()})
    limit = spec.get("max_runtime_s")
    low, high = worker_range(res)
    if granted is not None:
        high = max(low, min(high, granted))
    workers = held_workers(low=low, high=high, live=live) if live is not None else low
    return QueuedJob(id=job_id, workers=workers, max_workers=high if high > workers else None,
                     per_worker=worker_bundle(per, res.get("accelerator_type")),
                     priority=priority, seq=seq, cluster=res.get("cluster"), project=project,
                     max_runtime=float(limit) if limit else None, checkpoint_cluster=checkpoint_cluster)


def worker_range(resources: dict[str, Any]) -> tuple[int, int]:
    """(min, max) workers of a stored spec's resources (specs.models.worker_bounds: the spec
    models' own rule). The scheduler admits a job at min."""
    return worker_bounds(resources.get("workers"))


def live_workers(job: JobRow) -> int | None:
    """The live world size that counts for a job row: its last reported one while its attempt
    may hold resources (phases st.ACTIVE), else None (queued, or ended)."""
    return job.workers_live if job.phase in st.ACTIVE else None


def row_job(job: JobRow, **kwargs: Any) -> QueuedJob:
    """queued_job for a stored row: an active elastic job at its live size, within its grant."""
    active = job.phase in st.ACTIVE
    return queued_job(job.id, job.spec or {}, project=job.project, live=live_workers(job),
                      granted=job.workers_granted if active else None, **kwargs)


def job_demand(job: JobRow) -> dict[str, float]:
    """What a job's gang holds now, in the scheduler's accounting space (the budgets' running
    charge): an elastic job's at its live size (row_job). Its quota use is `quota_demand`."""
    return dict(row_job(job).demand)


def quota_demand(job: JobRow) -> dict[str, float]:
    """What a job counts as against its project's quota: an active elastic job at its grant
    (the room it may grow into is its share; scheduler.model.RunningJob.quota_workers)."""
    held = row_job(job)
    return dict(demand_of(held.per_worker, held.most_workers))


def ledger_demand(job: JobRow) -> dict[str, float]:
    """What the job's attempt held, for its usage ledger entry (the budgets' closed charge): an
    elastic job at the workers' own segments (the time-weighted world size, from the result's
    usage) when the result carries them, else at its live size; never outside [min, grant].
    Called as the attempt closes, before or after the move out of it: its phase is not looked at."""
    held = queued_job(job.id, job.spec or {}, project=job.project, live=job.workers_live,
                      granted=job.workers_granted)
    low, high = worker_range((job.spec or {}).get("resources") or {})
    mean = segment_workers(job.result) if high > low else None
    if mean is None:
        return dict(held.demand)
    ceiling = high if job.workers_granted is None else max(low, min(high, job.workers_granted))
    return demand_of(held.per_worker, max(float(low), min(float(ceiling), mean)))


def pending_of(result: Any) -> dict[str, Any] | None:
    """The why-pending record in a result column value, when that is all it holds."""
    if isinstance(result, dict) and len(result) == 1 and isinstance(result.get(PENDING_KEY), dict):
        return result[PENDING_KEY]
    return None


def pending_record(pending: Pending) -> dict[str, Any]:
    """A scheduler `Pending` as stored and shown: reason (code, sentence, ...), positions
    (1-based) in the whole queue, the project's and the cluster's, estimated start (ISO or None)."""
    start = pending.estimated_start
    return {"reason": pending.reason.to_dict(), "position_in_queue": pending.position_in_queue,
            "position_in_project": pending.position_in_project, "position_in_cluster": pending.position_in_cluster,
            "estimated_start": iso(datetime.fromtimestamp(start, tz=timezone.utc)) if start is not None else None}


def reserved_by_cluster(active: Iterable[JobRow | tuple[str | None, QueuedJob]]) -> dict[str, dict[str, float]]:
    """What our own active jobs hold, per cluster: rows, or (cluster, QueuedJob) pairs; an
    elastic job at its live size (row_job; the mirror's QueuedJobs are built the same way)."""
    out: dict[str, dict[str, float]] = {}
    for job in active:
        if isinstance(job, tuple):
            cluster, total = job[0], job[1].total()
        else:
            cluster, total = job.cluster, (row_job(job).total() if job.cluster else {})
        if not cluster:
            continue
        acc = out.setdefault(cluster, {})
        for key, value in total.items():
            acc[key] = acc.get(key, 0.0) + value
    return out


def cluster_view(row: ClusterRow, *, healthy: bool = True,
                 reserved: dict[str, float] | None = None) -> ClusterView | None:
    """None when nothing is known about the cluster's nodes yet."""
    nodes = (row.last_resources or {}).get("nodes")
    max_nodes = (row.max_resources or {}).get("nodes") if row.max_resources else None
    if not nodes and not max_nodes:
        return None
    if max_nodes:
        # Autoscaling: admit against what the cluster may grow to, less what our own jobs hold;
        # Ray adds the nodes when the job's workers ask for them.
        totals = [{k: float(v) for k, v in n.items()} for n in max_nodes]
        free = subtract_reserved(totals, totals, reserved or {})
        return ClusterView(name=row.name, nodes_free=free, nodes_total=totals, max_nodes=totals,
                           healthy=healthy)
    totals = [dict(n.get("total") or {}) for n in nodes]
    free = [dict(n.get("free") or {}) for n in nodes]
    if reserved:
        free = subtract_reserved(free, totals, reserved)
    return ClusterView(name=row.name, nodes_free=free, nodes_total=totals, healthy=healthy)


def redacted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API shows it: every env value masked (see trainyard.redact)."""
    return redact.masked_spec(spec)


def _mlflow_url(base: str, exp: str | None, run: str | None) -> str | None:
    if not (base and run and base.startswith("http")):
        return None
    return f"{base.rstrip('/')}/#/experiments/{exp or 0}/runs/{run}"


def job_dict(job: JobRow, *, mlflow_uri: str = "", detail: bool = False,
             progress: dict | None = None, events: list | None = None) -> dict[str, Any]:
    res = (job.spec or {}).get("resources") or {}
    low, high = worker_range(res)
    live = live_workers(job)
    workers = low if live is None else live
    duration = None
    if job.started_at:
        end = job.ended_at or datetime.now(job.started_at.tzinfo)
        duration = round((end - job.started_at).total_seconds(), 1)
    result = job.result or None
    pending = pending_of(result)
    if pending is not None:
        result = None
    body: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "name": job.name,
        "project": job.project,
        "owner": job.owner,
        "priority": job.priority,
        "state": st.public_state(job.phase),
        "phase": job.phase,
        "workload": (job.spec or {}).get("workload"),
        # while it may hold resources, the size it runs at (an elastic job's live world size,
        # its min before the first progress line); queued or ended, the count it is admitted at
        "workers": workers,
        # an elastic job's range and the most its quota let this (or, ended, the last) attempt
        # grow to (None while queued: the next grant is made at admission); None for a fixed job
        "workers_range": ({"min": low, "max": high,
                           "granted": None if job.phase in st.QUEUED else job.workers_granted}
                          if high > low else None),
        "cluster": job.cluster,
        "submission_id": job.submission_id,
        "attempt": job.attempt,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "ended_at": iso(job.ended_at),
        "duration_s": duration,
        "message": job.message,
        "metrics": (result or {}).get("metrics"),
        "mlflow_run_id": job.mlflow_run_id,
        "mlflow_experiment_id": job.mlflow_experiment_id,
        "mlflow_url": _mlflow_url(mlflow_uri, job.mlflow_experiment_id, job.mlflow_run_id),
        "cancel_requested": bool(job.cancel_requested),
        # why it waits (reason code + sentence, positions, estimated start); None once it left the queue
        "pending": pending if job.phase in st.QUEUED else None,
        # trainyard.costs.JobCost.to_dict(): written when the job ends (describe adds a live one
        # while it runs); None before it started or when no record could be made
        "cost": job.cost,
        # times the scheduler took its place for another job, and the seconds those
        # preemptions held it between the request and its stop
        "preemptions": int(job.preemptions or 0),
        "preempted_s": round(float(job.preempted_s or 0.0), 1),
    }
    if detail:
        body["progress"] = progress
        body["result"] = result
        body["spec"] = redacted_spec(job.spec or {})
        body["events"] = events or []
    return body


def cluster_dict(row: ClusterRow, *, health: dict | None = None) -> dict[str, Any]:
    nodes = (row.last_resources or {}).get("nodes") or []
    total: dict[str, float] = {}
    free: dict[str, float] = {}
    for node in nodes:
        for k, v in (node.get("total") or {}).items():
            total[k] = total.get(k, 0.0) + v
        for k, v in (node.get("free") or {}).items():
            free[k] = free.get(k, 0.0) + v
    health = health or {}
    return {
        "name": row.name,
        "address": row.dashboard_url,
        "auth": "token" if (row.token or row.token_file) else "none",
        "token_file": row.token_file,
        "reachable": health.get("ok"),
        "nodes": len(nodes),
        "resources_total": total,
        "resources_free": free,
        "max_resources": row.max_resources,
        "last_seen_at": iso(row.last_seen_at),
        "last_error": health.get("error") or row.last_error,
        "created_at": iso(row.created_at),
    }

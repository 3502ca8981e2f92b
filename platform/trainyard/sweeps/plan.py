"""A sweep's plan: what the driver derives from a SweepSpec before touching Ray (pure)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SweepPlan", "plan_sweep", "promoting", "experiment_name"]


def experiment_name(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def promoting(spec) -> bool:
    """Promotion-based ASHA (sweep.asha.strategy: promote): trials pause at rungs."""
    return spec.sweep.scheduler == "asha" and spec.sweep.asha.strategy == "promote"


@dataclass
class SweepPlan:
    """Everything the driver derives from the spec before touching Ray."""

    spec: Any  # SweepSpec
    sweep_id: str
    metric: str
    mode: str
    dims: list
    num_trials: int
    samples: int  # Tune's num_samples: num_trials / grid points
    mutable: list[str] = field(default_factory=list)

    @property
    def base_job(self) -> dict:
        job = self.spec.job_spec().model_dump(mode="json")
        job["tracking"]["register_model"] = False  # trials never register; the driver does
        if promoting(self.spec):
            # a trial paused at a rung resumes from its last report: every evaluation checkpoints
            job["checkpoint"]["every_steps"] = job["training"].get("eval_every_steps")
        return job


def plan_sweep(spec, *, sweep_id: str, workload=None) -> SweepPlan:
    """Validate (raising SpecError) and resolve the family defaults."""
    from trainyard.errors import SpecError
    from trainyard.sweeps import space as sp
    from trainyard.sweeps import validate as sv
    from trainyard.workload import resolve_workload

    workload = workload or resolve_workload(spec.workload)
    issues = sv.sweep_issues(spec, workload)
    if issues:
        raise SpecError(issues, source="sweep")
    metric, mode = sv.resolved_metric(spec, workload)
    dims, _ = sp.parse_space(sv.resolved_space(spec, workload))
    n = sv.num_trials(spec, dims)
    points = sp.full_grid_size(dims) if spec.sweep.algorithm == "grid" else sp.grid_size(dims)
    mutable = sv.pbt_mutable_keys(spec, dims) if spec.sweep.scheduler == "pbt" else []
    return SweepPlan(spec=spec, sweep_id=sweep_id, metric=metric, mode=mode, dims=dims,
                     num_trials=n, samples=max(1, n // max(1, points)), mutable=mutable)

"""Plain data for the multi-project policy (quotas, budgets, fair share, preemption, backfill).

Times are seconds (floats, any epoch, as long as `now` uses the same one). Resources are
Ray's names: "CPU", "GPU", "memory" (bytes), custom ones, and "accelerator_type:<T>".

Accounting space. Ray marks a node's accelerator with `accelerator_type:<T>: 1` and a job
asks for 0.001 of it. For quotas, fair share and budgets that marker is turned into a count:
`accelerator_type:<T>` counts the GPUs *of type T* that a job holds or a node has. So a quota
of {"accelerator_type:A100": 8} means "8 A100 GPUs".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from trainyard.errors import SpecError

__all__ = ["ACCEL_PREFIX", "DAY", "Budget", "Project", "Quota", "RunningJob", "TickConfig", "UsageRecord",
           "add_into", "capacity_of", "demand_of", "node_accounting"]

ACCEL_PREFIX = "accelerator_type:"
DAY = 86400.0
Res = Mapping[str, float]


def demand_of(per_worker: Res, workers: int) -> dict[str, float]:
    """What a gang holds, in accounting space (accelerator markers become GPU counts)."""
    gpus = float(per_worker.get("GPU", 0.0))
    out: dict[str, float] = {}
    for key, value in per_worker.items():
        if key.startswith(ACCEL_PREFIX):
            out[key] = (gpus or 1.0) * workers
        elif value:
            out[key] = float(value) * workers
    return out


def node_accounting(node: Res) -> dict[str, float]:
    """One node's resources in accounting space: its accelerator marker counts its GPUs."""
    gpus = float(node.get("GPU", 0.0))
    return {k: (gpus or float(v)) if k.startswith(ACCEL_PREFIX) else float(v) for k, v in node.items()}


def add_into(total: dict[str, float], amounts: Res, sign: float = 1.0) -> dict[str, float]:
    for key, value in amounts.items():
        total[key] = total.get(key, 0.0) + sign * value
    return total


def capacity_of(node_lists: Iterable[Iterable[Res]]) -> dict[str, float]:
    """Sum of nodes (of several clusters) in accounting space."""
    out: dict[str, float] = {}
    for nodes in node_lists:
        for node in nodes:
            add_into(out, node_accounting(node))
    return out


def _check_amounts(where: str, amounts: Res | None) -> None:
    for key, value in (amounts or {}).items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 or value == float("inf"):
            raise SpecError(f"must be a finite number >= 0, got {value!r}", field=f"{where}.{key}", value=value,
                            fix="give a non-negative amount")


@dataclass(frozen=True)
class Quota:
    """A project's share of the fleet, after Kueue's ClusterQueue.

    - `nominal`: guaranteed amounts per resource. The project may always use this much, and
      may preempt jobs of projects that borrow it (reclaim).
    - `borrowing_limit`: how far beyond `nominal` it may go on idle capacity; per resource,
      a missing key means "no limit". None: no limit at all.
    - `lending_limit`: how much of its *unused* nominal others may borrow; per resource, a
      missing key means all of it. The rest stays free for the project itself.
    A quota constrains only the resources it names; others are limited by capacity alone.
    """

    nominal: Mapping[str, float] = field(default_factory=dict)
    borrowing_limit: Mapping[str, float] | None = None
    lending_limit: Mapping[str, float] | None = None

    def validate(self, project: str) -> "Quota":
        _check_amounts(f"projects.{project}.quota.nominal", self.nominal)
        _check_amounts(f"projects.{project}.quota.borrowing_limit", self.borrowing_limit)
        _check_amounts(f"projects.{project}.quota.lending_limit", self.lending_limit)
        for key, value in (self.lending_limit or {}).items():
            if value > self.nominal.get(key, 0.0):
                raise SpecError(f"lending limit {value:g} is above the nominal quota {self.nominal.get(key, 0.0):g}",
                                field=f"projects.{project}.quota.lending_limit.{key}", value=value,
                                fix="lend at most the nominal quota")
        return self

    def dimensions(self) -> set[str]:
        return set(self.nominal) | set(self.borrowing_limit or {})


@dataclass(frozen=True)
class Budget:
    """Resource-hours a project may use over a rolling window (None: unlimited)."""

    gpu_hours: float | None = None
    cpu_hours: float | None = None
    window_s: float = 30 * DAY

    def validate(self, project: str) -> "Budget":
        _check_amounts(f"projects.{project}.budget", {k: v for k, v in
                       (("gpu_hours", self.gpu_hours), ("cpu_hours", self.cpu_hours)) if v is not None})
        if not self.window_s > 0:
            raise SpecError(f"must be > 0 seconds, got {self.window_s!r}", field=f"projects.{project}.budget.window_s",
                            value=self.window_s, fix="use a window such as 30 days (2592000)")
        return self


@dataclass(frozen=True)
class Project:
    """Per-project settings. `weight` is its fair-share weight (shares are weight / sum of weights)."""

    name: str
    weight: float = 1.0
    quota: Quota | None = None
    budget: Budget | None = None

    def validate(self) -> "Project":
        if not isinstance(self.weight, (int, float)) or not 0 < self.weight < float("inf"):
            raise SpecError(f"must be > 0, got {self.weight!r}", field=f"projects.{self.name}.weight",
                            value=self.weight, fix="give a positive weight, e.g. 1")
        if self.quota is not None:
            self.quota.validate(self.name)
        if self.budget is not None:
            self.budget.validate(self.name)
        return self


@dataclass(frozen=True)
class RunningJob:
    """A job that holds resources now.

    `nodes`, when known, is what it holds on each node of its cluster, aligned with the
    cluster's `nodes_free` (index i = node i). Without it, what the job frees is treated as
    extra nodes: exact for the totals, approximate per node, and always taken in the safe
    direction (see backfill.py and preemption.py).
    Its expected end comes from its progress (`progress` done after running since
    `started_at`, or `progress_rate` per second), else from `max_runtime`.
    """

    id: str
    project: str
    cluster: str
    workers: int
    per_worker: Mapping[str, float]
    priority: int = 0
    started_at: float = 0.0
    max_runtime: float | None = None
    progress: float | None = None
    progress_rate: float | None = None
    nodes: tuple[Mapping[str, float], ...] | None = None
    preemptible: bool = True
    # already asked to checkpoint and stop (being preempted): it leaves whatever happens, so
    # the blocked job it was chosen for counts on it first, and no extra victim is taken
    leaving: bool = False
    # the workers its project's quota counts it at: an elastic job's grant, which it may grow
    # to without asking again (None: `workers`). Capacity and preemption count `workers`.
    quota_workers: int | None = None

    def demand(self) -> dict[str, float]:
        return demand_of(self.per_worker, self.workers)

    def quota_demand(self) -> dict[str, float]:
        return demand_of(self.per_worker, max(self.workers, self.quota_workers or 0))

    def freed_nodes(self, *, merged: bool = True) -> list[dict[str, float]]:
        """What it gives back per node. Without `nodes`: one node holding all of it
        (`merged`, the optimistic view) or one node per worker (the pessimistic one)."""
        if self.nodes is not None:
            return [dict(n) for n in self.nodes]
        if merged:
            return [{k: v * self.workers for k, v in self.per_worker.items()}]
        return [dict(self.per_worker) for _ in range(self.workers)]


@dataclass(frozen=True)
class UsageRecord:
    """Resources a project's job held from `start` to `end` (None: still holding)."""

    project: str
    start: float
    end: float | None
    resources: Mapping[str, float]  # totals for the whole gang, e.g. {"GPU": 8, "CPU": 32}


@dataclass(frozen=True)
class TickConfig:
    """Knobs of plan_tick. Defaults: fair share, quotas, budgets, backfill and preemption on."""

    fair_share: bool = True
    backfill: bool = True
    preemption: bool = True
    min_runtime_s: float = 600.0  # a running job younger than this is never preempted
    max_victims_per_tick: int = 16
    max_preemption_candidates: int = 64  # per blocked job: bounds the victim search
    eta_depth: int = 32  # per cluster: how many waiting jobs get an estimated start
    burn_window_s: float = DAY  # burn rate is measured over this much recent time
    # placement weights (see placement.py)
    w_fit: float = 1.0
    w_price: float = 1.0
    w_accelerator: float = 0.5
    w_locality_cluster: float = 4.0
    w_locality_region: float = 2.0

    def validate(self) -> "TickConfig":
        for name in ("min_runtime_s", "burn_window_s", "w_fit", "w_price", "w_accelerator",
                     "w_locality_cluster", "w_locality_region"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise SpecError(f"must be a finite number >= 0, got {value!r}", field=f"scheduler.{name}",
                                value=value, fix="give a non-negative number")
        for name in ("max_victims_per_tick", "max_preemption_candidates", "eta_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10_000:
                raise SpecError(f"must be an integer from 0 to 10000, got {value!r}", field=f"scheduler.{name}",
                                value=value, fix="give a small whole number")
        if self.burn_window_s <= 0:
            raise SpecError("must be > 0", field="scheduler.burn_window_s", value=self.burn_window_s,
                            fix="use e.g. 86400 (one day)")
        return self

"""Elastic jobs (resources.workers {min, max}) in the scheduler's accounting. Pure.

An elastic job is admitted at its min. Ray Train then grows the group on its own when nodes
are free, so growth is decided outside the scheduler; what keeps it inside the project's quota
is a ceiling granted at admission:

- `grant_workers`: the largest w in [min, max] whose gang the project's quota would let it
  hold given what the project holds now (QuotaLedger.check: nominal, borrowing limit and
  the idle pool, the same rule that admits jobs). No quota: max. The runner never grows past
  it (TRAINYARD_WORKERS_MAX, runner/launch.py).
- `held_workers`: what a running elastic job holds, for cluster reservations and the
  budgets' running charge: its live world size (the driver's progress lines), min before
  the first one, clamped into [min, grant].

Against its project's quota a running elastic job counts at its grant (RunningJob.quota_workers),
as Kueue counts an admitted workload at its admitted size: the room it may grow into without
asking is its own, so two elastic jobs of one project never grow past the quota together, and
a job admitted later cannot take the room of one that has not grown yet. The price is quota
held but unused while a job runs below its grant; capacity (what the cluster has free) counts
the live size, so other projects' jobs still use those nodes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from trainyard.scheduler.model import demand_of

if TYPE_CHECKING:
    from trainyard.scheduler.policy import QueuedJob
    from trainyard.scheduler.quotas import QuotaLedger

__all__ = ["grant_workers", "held_workers"]


def grant_workers(job: "QueuedJob", *, ledger: "QuotaLedger") -> int | None:
    """The most workers `job` may grow to under its project's quota, given the ledger's use
    (which must not include the job itself). `job.workers` is its min, `job.max_workers` its
    max (None: a fixed job, granted its own size when that fits). None when not even the min
    fits: the job is not admitted."""
    low = job.workers
    high = max(low, job.max_workers or 0)
    if job.project not in ledger.quotas:
        return high
    if ledger.check(job.project, demand_of(job.per_worker, low)) is not None:
        return None
    # demand grows with w and check() is a threshold per resource: the largest w that
    # fits is found by bisection (max may be large; each check is O(resources))
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ledger.check(job.project, demand_of(job.per_worker, mid)) is None:
            lo = mid
        else:
            hi = mid - 1
    return lo


def held_workers(*, low: int, high: int, live: int | None = None, granted: int | None = None) -> int:
    """What a running job with `low`..`high` workers counts as: `live` (its last reported world
    size; None before the first report: `low`), never below `low` nor above `granted` (None: no
    grant on record, `high`)."""
    ceiling = high if granted is None else max(low, min(high, granted))
    size = low if live is None else live
    return max(low, min(ceiling, size))

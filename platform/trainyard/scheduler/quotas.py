"""Project quotas in the spirit of Kueue's ClusterQueues, with all projects in one cohort.

For a project P and resource r (accounting space, see model.py), P may hold:
- anything up to its nominal quota (guaranteed: P may preempt borrowers to get it back);
- beyond it, up to `nominal + borrowing_limit`, and only out of capacity that no other
  project guards. Another project Q guards max(used_Q, nominal_Q - lendable_Q), where
  lendable_Q is its lending limit (default: all of its nominal). Capacity nobody's nominal
  covers is idle and may be borrowed too.

The ledger is incremental: adding a job's demand is O(resources), so a tick stays linear.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from trainyard.scheduler.model import Quota, RunningJob
from trainyard.scheduler.reasons import QUOTA, Reason

__all__ = ["QuotaLedger"]

_EPS = 1e-9


def _fmt(x: float) -> str:
    return f"{x:g}"


class QuotaLedger:
    """Usage per project against quotas and the pool, updated as jobs are admitted."""

    def __init__(self, quotas: Mapping[str, Quota | None], capacity: Mapping[str, float],
                 running: Iterable[RunningJob] = ()):
        self.quotas = {p: q for p, q in quotas.items() if q is not None}
        self.capacity = dict(capacity)
        self.used: dict[str, dict[str, float]] = {}
        self._guarded_total: dict[str, float] = {}
        # A project with nothing running still guards the nominal it will not lend.
        for project, quota in self.quotas.items():
            used = self.used.setdefault(project, {})
            for key in quota.nominal:
                used[key] = 0.0
                self._guarded_total[key] = self._guarded_total.get(key, 0.0) + self._guarded(project, key, 0.0)
        for job in running:  # an elastic job at its grant: the room it may grow into is its own
            self.add(job.project, job.quota_demand())

    def _guarded(self, project: str, key: str, used: float) -> float:
        quota = self.quotas.get(project)
        if quota is None:
            return used
        nominal = quota.nominal.get(key, 0.0)
        lendable = (quota.lending_limit or {}).get(key, nominal)
        return max(used, nominal - lendable)

    def add(self, project: str, demand: Mapping[str, float], sign: float = 1.0) -> None:
        used = self.used.setdefault(project, {})
        for key, amount in demand.items():
            before = used.get(key, 0.0)
            after = before + sign * amount
            used[key] = after
            self._guarded_total[key] = (self._guarded_total.get(key, 0.0) - self._guarded(project, key, before)
                                        + self._guarded(project, key, after))

    def nominal(self, project: str, key: str) -> float | None:
        quota = self.quotas.get(project)
        return None if quota is None else quota.nominal.get(key, 0.0)

    def is_borrowing(self, project: str, keys: Iterable[str] | None = None) -> bool:
        """True when the project holds more than its nominal of some resource (of `keys`, if given)."""
        quota = self.quotas.get(project)
        if quota is None:
            return False
        used = self.used.get(project, {})
        dims = quota.dimensions() if keys is None else quota.dimensions() & set(keys)
        return any(used.get(key, 0.0) > quota.nominal.get(key, 0.0) + _EPS for key in dims)

    def within_nominal(self, project: str, demand: Mapping[str, float]) -> bool:
        """True when `demand` asks for some resource the project is guaranteed, and adding it
        keeps the project within its nominal on every resource its quota names (so it may
        reclaim what others borrowed)."""
        quota = self.quotas.get(project)
        if quota is None or not any(quota.nominal.get(key, 0.0) > 0 and amount > 0 for key, amount in demand.items()):
            return False
        used = self.used.get(project, {})
        return all(used.get(key, 0.0) + amount <= quota.nominal.get(key, 0.0) + _EPS
                   for key, amount in demand.items() if key in quota.dimensions())

    def check(self, project: str, demand: Mapping[str, float]) -> Reason | None:
        """None when the project may take `demand` now; else why not (code 'quota')."""
        quota = self.quotas.get(project)
        if quota is None:
            return None
        used = self.used.get(project, {})
        dims = quota.dimensions()
        for key in sorted(demand):
            if key not in dims:
                continue
            want = used.get(key, 0.0) + demand[key]
            nominal = quota.nominal.get(key, 0.0)
            if want <= nominal + _EPS:
                continue
            limit = (quota.borrowing_limit or {}).get(key)  # None: no limit
            if limit is not None and want > nominal + limit + _EPS:
                return Reason(QUOTA, f"project '{project}' would hold {_fmt(want)} {key} but its quota allows "
                              f"{_fmt(nominal)} plus {_fmt(limit)} borrowed", resource=key)
            others = self._guarded_total.get(key, 0.0) - self._guarded(project, key, used.get(key, 0.0))
            pool = self.capacity.get(key, 0.0) - others
            if want > pool + _EPS:
                return Reason(QUOTA, f"project '{project}' would hold {_fmt(want)} {key}, over its nominal "
                              f"{_fmt(nominal)}, and only {_fmt(max(0.0, pool - nominal))} {key} is idle to borrow",
                              resource=key)
        return None

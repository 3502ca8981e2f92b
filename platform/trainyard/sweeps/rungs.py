"""Rung bookkeeping of promotion-based ASHA (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020, Algorithm 2), kept free of Ray so it can be unit-tested.

Rungs sit at grace, grace*rf, grace*rf^2, ... evaluations, below max_t. A trial that reaches a
rung records its metric there. It may go on to the next rung only when it is among the top
floor(n/rf) of the n trials recorded at that rung ("promotable"); otherwise it waits (Tune
pauses it, with its checkpoint) until enough later trials have been recorded below it that
it becomes promotable, or the sweep ends.

The difference from Ray's AsyncHyperBandScheduler (sweep.asha.strategy: stop), which decides
once, when the trial reaches the rung, against whatever the rung has seen so far: there the
first trials to reach a rung always go on (an empty rung has no cutoff) and a tie with the
cutoff goes on, so the early trials of a sweep run to the end whatever their quality. Here
no trial goes past a rung before the rung holds rf trials to rank it against.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PromotionRungs", "milestones"]


def milestones(grace: int, reduction_factor: float, max_t: int) -> list[int]:
    """The rung milestones below max_t: grace, grace*rf, ... (integers, strictly increasing)."""
    out: list[int] = []
    m = float(grace)
    while int(m) < max_t:
        if not out or int(m) > out[-1]:
            out.append(int(m))
        m *= reduction_factor
    return out


@dataclass
class PromotionRungs:
    """Which trials are recorded at which rung, and which of them went on."""

    grace: int
    reduction_factor: float
    max_t: int
    mode: str = "max"
    rungs: list[int] = field(init=False)
    recorded: list[dict[str, float]] = field(init=False)  # per rung: trial -> value (higher is better)
    promoted: list[set[str]] = field(init=False)  # per rung: trials that went past it

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {self.mode!r}")
        self.rungs = milestones(self.grace, self.reduction_factor, self.max_t)
        self.recorded = [{} for _ in self.rungs]
        self.promoted = [set() for _ in self.rungs]

    # ------------------------------------------------------------------ queries

    def next_rung(self, trial_id: str) -> int | None:
        """Index of the lowest rung the trial has not been recorded at (None: past them all)."""
        for k in range(len(self.rungs)):
            if trial_id not in self.recorded[k]:
                return k
        return None

    def is_top(self, trial_id: str, k: int) -> bool:
        """Among the top floor(n/rf) recorded at rung k (ties: the earlier recorded wins)."""
        rec = self.recorded[k]
        quota = int(len(rec) / self.reduction_factor)
        if quota <= 0 or trial_id not in rec:
            return False
        ranked = sorted(rec, key=lambda t: -rec[t])  # stable: insertion order breaks ties
        return trial_id in ranked[:quota]

    def promotable(self, waiting: set[str] | None = None) -> list[tuple[str, int]]:
        """(trial, rung) pairs that may go on now and have not, highest rung first; only
        trials in `waiting` when it is given (the paused ones)."""
        out = []
        for k in reversed(range(len(self.rungs))):
            rec = self.recorded[k]
            quota = int(len(rec) / self.reduction_factor)
            ranked = sorted(rec, key=lambda t: -rec[t])[:quota]
            for t in ranked:
                if t in self.promoted[k] or (waiting is not None and t not in waiting):
                    continue
                if any(t in self.recorded[j] for j in range(k + 1, len(self.rungs))):
                    continue  # already past it (recorded higher: a restored trial)
                out.append((t, k))
        return out

    # ------------------------------------------------------------------ updates

    def record(self, trial_id: str, k: int, value: float) -> None:
        self.recorded[k][trial_id] = value if self.mode == "max" else -value

    def promote(self, trial_id: str, k: int) -> None:
        self.promoted[k].add(trial_id)

    def on_result(self, trial_id: str, t: int, value: float | None) -> str:
        """What a trial does after reporting evaluation number `t`: 'continue' (below its next
        rung, past them all, no metric, or promoted at once) or 'pause' (recorded at a rung and
        not among its top)."""
        k = self.next_rung(trial_id)
        if k is None or t < self.rungs[k] or value is None:
            return "continue"
        # a trial that skipped rungs (reports sparser than the rungs) is recorded at each
        for j in range(k, len(self.rungs)):
            if t >= self.rungs[j] and trial_id not in self.recorded[j]:
                self.record(trial_id, j, value)
                top = j
        if self.is_top(trial_id, top):
            for j in range(k, top + 1):
                self.promote(trial_id, j)
            return "continue"
        for j in range(k, top):
            self.promote(trial_id, j)
        return "pause"

    def summary(self) -> str:
        return ", ".join(f"rung {m}: {len(r)} recorded, {len(p)} promoted"
                         for m, r, p in zip(self.rungs, self.recorded, self.promoted))

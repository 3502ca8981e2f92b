"""Promotion decisions, as pure functions of the evidence. No I/O here.

The flow (driven by trainyard.serving.promotion):

    PENDING --compare--> REJECTED          candidate does not beat champion by min_improvement
            \\--------->  PROMOTED         no champion yet: the first candidate is promoted directly
             \\-------->  CANARY --gates--> PROMOTED     canary held every gate over the window
                                  \\------> ROLLED_BACK  a gate broke, or too little traffic by max_wait_s
    any non-final state --error--> FAILED   (cluster or registry trouble; traffic restored to the champion)

Every transition produces an `Event` that carries its evidence (metric values, counts,
latencies), which is what `trainyard models history` shows and what goes to MLflow.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Mapping

from trainyard.errors import ConflictError, SpecError
from trainyard.serving.stats import VersionStats

__all__ = ["State", "Event", "MetricComparison", "GateVerdict", "compare_metric", "evaluate_gates",
           "transition", "FINAL_STATES", "RollbackPlan", "plan_rollback", "ROLLBACK_EVENT"]


class State(str, Enum):
    PENDING = "pending"
    CANARY = "canary"
    PROMOTED = "promoted"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


FINAL_STATES = frozenset({State.PROMOTED, State.REJECTED, State.ROLLED_BACK, State.FAILED})

_ALLOWED: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.CANARY, State.PROMOTED, State.REJECTED, State.FAILED}),
    State.CANARY: frozenset({State.PROMOTED, State.ROLLED_BACK, State.FAILED}),
}


def transition(current: State, target: State) -> State:
    if target not in _ALLOWED.get(current, frozenset()):
        raise ConflictError(f"a promotion cannot go from {current.value} to {target.value}",
                            field="state", value=current.value)
    return target


@dataclass
class Event:
    """One decision of a promotion, with the evidence it was taken on."""

    kind: str  # compared | canary_started | promoted | rejected | rolled_back | failed | ...
    model: str
    candidate: str | None
    champion: str | None
    reason: str
    evidence: dict = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "Event":
        return cls(**{k: data.get(k) for k in ("kind", "model", "candidate", "champion", "reason")},
                   evidence=dict(data.get("evidence") or {}), time=float(data.get("time") or 0.0))


@dataclass(frozen=True)
class MetricComparison:
    wins: bool
    reason: str
    evidence: dict


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def compare_metric(candidate: Any, champion: Any, *, metric: str, mode: str,
                   min_improvement: float) -> MetricComparison:
    """Does the candidate beat the champion on `metric` by at least `min_improvement`?

    `champion` None means there is no champion: the candidate wins outright.
    """
    if mode not in ("max", "min"):
        raise SpecError(f"must be 'max' or 'min', got {mode!r}", field="mode", value=mode)
    cand = _finite(candidate)
    evidence = {"metric": metric, "mode": mode, "candidate_value": cand,
                "champion_value": _finite(champion), "min_improvement": min_improvement}
    if cand is None:
        return MetricComparison(False, f"the candidate has no finite {metric!r} metric (got {candidate!r})",
                                evidence)
    if champion is None:
        return MetricComparison(True, "no champion yet: the first candidate is promoted directly", evidence)
    champ = _finite(champion)
    if champ is None:
        return MetricComparison(True, f"the champion has no finite {metric!r} metric (got {champion!r})",
                                evidence)
    gain = cand - champ if mode == "max" else champ - cand
    evidence["improvement"] = gain
    if gain > 0 and gain >= min_improvement:  # a tie never churns the endpoint
        return MetricComparison(True, f"{metric} {cand:.6g} beats the champion's {champ:.6g} by {gain:.6g} "
                                      f"(needed {min_improvement:.6g})", evidence)
    return MetricComparison(False, f"{metric} {cand:.6g} does not beat the champion's {champ:.6g} by "
                                   f"{min_improvement:.6g} (improvement {gain:.6g})", evidence)


@dataclass(frozen=True)
class GateVerdict:
    status: str  # "pass" | "fail" | "wait"
    reason: str
    evidence: dict


def evaluate_gates(canary: VersionStats, champion: VersionStats, gates, *, elapsed_s: float,
                   window_s: float, wait_limit_s: float) -> GateVerdict:
    """Judge a canary from its window's statistics (and the champion's, over the same window).

    - error rate over the limit, once min_requests are in: fail at once (no need to wait);
    - window over and min_requests in: pass when error rate and p99 ratio hold, else fail;
    - max wait over and still too few requests: fail (no evidence is not good evidence);
    - otherwise: wait.
    """
    served = canary.requests - canary.rejected
    rate = canary.error_rate()
    cp99, hp99 = canary.quantile_ms(0.99), champion.quantile_ms(0.99)
    ratio = (cp99 / hp99) if (cp99 is not None and hp99) else None
    evidence = {
        "elapsed_s": round(elapsed_s, 3), "window_s": window_s,
        "canary": canary.summary(), "champion": champion.summary(),
        "p99_ratio": None if ratio is None else round(ratio, 4),
        "gates": {"max_error_rate": gates.max_error_rate, "max_p99_latency_ratio": gates.max_p99_latency_ratio,
                  "min_requests": gates.min_requests},
    }
    enough = served >= gates.min_requests
    if enough and rate is not None and rate > gates.max_error_rate:
        return GateVerdict("fail", f"canary error rate {rate:.2%} over {served} requests exceeds "
                                   f"max_error_rate {gates.max_error_rate:.2%}", evidence)
    if elapsed_s >= window_s and enough:
        if ratio is not None and ratio > gates.max_p99_latency_ratio:
            return GateVerdict("fail", f"canary p99 {cp99:.2f} ms is {ratio:.2f}x the champion's {hp99:.2f} ms, "
                                       f"over max_p99_latency_ratio {gates.max_p99_latency_ratio}", evidence)
        note = "" if ratio is not None else " (champion had no requests in the window: latency gate not applied)"
        return GateVerdict("pass", f"canary held the gates over {served} requests in {elapsed_s:.1f}s: "
                                   f"error rate {rate or 0:.2%}, p99 ratio "
                                   f"{'n/a' if ratio is None else f'{ratio:.2f}'}{note}", evidence)
    if elapsed_s >= wait_limit_s:
        return GateVerdict("fail", f"only {served} canary requests in {elapsed_s:.1f}s, fewer than "
                                   f"min_requests {gates.min_requests}: not enough evidence to promote", evidence)
    return GateVerdict("wait", f"observing: {served}/{gates.min_requests} requests, "
                               f"{elapsed_s:.1f}/{window_s:.1f}s", evidence)


ROLLBACK_EVENT = "reverted"  # a roll-back asked for by hand (`rolled_back` is a canary's failed gate)


@dataclass(frozen=True)
class RollbackPlan:
    endpoint: str
    from_version: str
    to_version: str


def plan_rollback(model: str, events: list[Mapping[str, Any]]) -> RollbackPlan:
    """Where a roll-back of `model` goes, from its promotion history (oldest first).

    Every `promoted` decision is put on a stack with the version that served before it (the
    champion it replaced, or for a first promotion the version served by hand, `served_before`);
    every roll-back takes the last one off. So repeated roll-backs walk back one promotion at a
    time. ConflictError when there is nothing to go back to."""
    stack: list[RollbackPlan | None] = []
    for event in events:
        kind = event.get("kind")
        if kind == "promoted":
            evidence = event.get("evidence") or {}
            before = event.get("champion") or evidence.get("served_before") or None
            candidate, endpoint = event.get("candidate"), evidence.get("endpoint") or model
            usable = before is not None and candidate is not None and str(before) != str(candidate)
            stack.append(RollbackPlan(str(endpoint), str(candidate), str(before)) if usable else None)
        elif kind == ROLLBACK_EVENT and stack:
            stack.pop()
    fix = "promote another version instead (`trainyard models promote MODEL --candidate VERSION`)"
    if not stack:
        raise ConflictError(f"model {model!r} has no promotion left to roll back", field="model", value=model,
                            fix=fix)
    plan = stack[-1]
    if plan is None:
        raise ConflictError(f"nothing served model {model!r} before its last promotion, so there is no "
                            f"version to roll back to", field="model", value=model, fix=fix)
    return plan

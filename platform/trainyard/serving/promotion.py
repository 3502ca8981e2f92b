"""The promotion flow: candidate vs champion, canary, then promote or roll back.

    sweep registers `candidate` -> compare with `champion` on the policy's metric
      no champion: promote directly (alias + endpoint)
      loses:       rejected (nothing deployed)
      wins:        canary beside the champion at canary_weight; observe the window
                   gates hold  -> promoted: full traffic, alias `champion` moved, old version drained + removed
                   a gate breaks -> rolled back: canary removed, alias unchanged, reason recorded

Each decision is an Event with its evidence, logged to MLflow (experiment
`trainyard-promotions`) and returned. Blocking: it lasts the canary window. The API runs
it in a background thread; a sweep's driver may call it inline. If the server dies before
the end, the run stays RUNNING and the next server start finishes it (serving/recovery.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainyard.serving.endpoints import EndpointManager, EndpointState
from trainyard.serving.policy import Event, State, compare_metric, evaluate_gates, transition
from trainyard.serving.registry import CANDIDATE, CHAMPION, Registry
from trainyard.serving.stats import VersionStats, diff, merge
from trainyard.specs import EndpointSpec, PromotionPolicy, parse_promotion_policy

__all__ = ["Promoter", "PromotionResult", "promote"]

log = logging.getLogger("trainyard.serving")


@dataclass
class PromotionResult:
    model: str
    candidate: str | None
    champion_before: str | None
    state: State
    reason: str
    events: list[Event] = field(default_factory=list)
    run_id: str | None = None

    @property
    def champion_after(self) -> str | None:
        return self.candidate if self.state == State.PROMOTED else self.champion_before

    def to_dict(self) -> dict:
        return {"model": self.model, "candidate": self.candidate, "champion_before": self.champion_before,
                "champion_after": self.champion_after, "state": self.state.value, "reason": self.reason,
                "run_id": self.run_id, "events": [e.to_dict() for e in self.events]}


def _family_defaults(family: str | None) -> tuple[str | None, str | None]:
    """From the family's static metadata: the control plane imports no family."""
    from trainyard.families import registered, static_meta

    meta = static_meta(family) if family and family in registered() else None
    return (meta.metric, meta.mode) if meta is not None else (None, None)


def _stats_of(stats: Mapping) -> dict[str, VersionStats]:
    return merge([stats.get("versions") or {}])


class Promoter:
    def __init__(self, manager: EndpointManager, registry: Registry, *, poll_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 on_event: Callable[[Event], None] | None = None):
        self.manager, self.registry = manager, registry
        self.poll_s, self.sleep, self.clock = poll_s, sleep, clock
        self.on_event = on_event

    def promote(self, model: str, *, policy: PromotionPolicy | Mapping | None = None,
                candidate: str | None = None, endpoint: EndpointSpec | Mapping | None = None,
                tags: Mapping[str, str] | None = None) -> PromotionResult:
        if policy is None and isinstance(endpoint, EndpointSpec) and endpoint.promotion is not None:
            policy = endpoint.promotion
        if policy is None and isinstance(endpoint, Mapping) and endpoint.get("promotion"):
            policy = endpoint["promotion"]
        if not isinstance(policy, PromotionPolicy):
            policy = parse_promotion_policy(policy)
        cand = self.registry.resolve(model, version=candidate) if candidate is not None else \
            self.registry.resolve(model, alias=CANDIDATE)
        champ = self.registry.alias_version(model, CHAMPION)
        family = self.registry.family(model, cand)
        if endpoint is None:
            name = policy.endpoint or model
            spec = (self.manager.get(name).spec if self.manager.exists(name)  # keep its autoscaling etc.
                    else EndpointSpec(model=model, name=policy.endpoint))
            if policy == parse_promotion_policy(None) and spec.promotion is not None:
                policy = spec.promotion  # no explicit policy: the endpoint's own default
        elif isinstance(endpoint, EndpointSpec):
            spec = endpoint
        else:
            spec = EndpointSpec.model_validate({"model": model, **dict(endpoint)})
        metric, mode = _family_defaults(family)
        metric, mode = policy.metric or metric, policy.mode or mode or "max"
        if metric is None:
            from trainyard.errors import SpecError

            raise SpecError(f"cannot tell which metric to compare for model {model!r} (family {family!r})",
                            field="promote.metric", fix="set promote.metric (and promote.mode)")
        name = spec.endpoint_name()
        result = PromotionResult(model, cand, champ, State.PENDING, "")
        # what a restarted server needs to undo this promotion if it dies mid-way (serving/recovery.py)
        record_tags = {**dict(tags or {}), "trainyard.endpoint": name}
        if champ is None:  # no champion to fall back to: the version served by hand before, if any
            record_tags["trainyard.served_before"] = (self.manager.get(name).traffic.stable
                                                      if self.manager.exists(name) else "")
        result.run_id = self.registry.start_promotion(model, cand, champ, policy.model_dump(mode="json"),
                                                      tags=record_tags)
        seq = [0]

        def emit(kind: str, reason: str, evidence: dict | None = None) -> Event:
            event = Event(kind=kind, model=model, candidate=cand, champion=champ, reason=reason,
                          evidence=dict(evidence or {}, endpoint=name))
            result.events.append(event)
            seq[0] += 1
            try:
                self.registry.log_event(result.run_id, seq[0], event)
            except Exception as exc:  # the decision stands even if MLflow hiccups
                log.warning("could not log promotion event to MLflow: %s", exc)
            if self.on_event:
                self.on_event(event)
            log.info("promotion %s v%s: %s: %s", model, cand, kind, reason)
            return event

        def finish(state: State, reason: str) -> PromotionResult:
            result.state = transition(result.state, state)
            result.reason = reason
            self.registry.end_promotion(result.run_id, state.value)
            return result

        try:
            if champ is not None and champ == cand:
                emit("rejected", f"version {cand} is already the champion")
                return finish(State.REJECTED, f"version {cand} is already the champion")
            cmp = compare_metric(self.registry.metric(model, cand, metric),
                                 self.registry.metric(model, champ, metric) if champ else None,
                                 metric=metric, mode=mode, min_improvement=policy.min_improvement)
            emit("compared", cmp.reason, cmp.evidence)
            if not cmp.wins:
                emit("rejected", cmp.reason, cmp.evidence)
                return finish(State.REJECTED, cmp.reason)
            if champ is None:
                return self._direct(result, spec, name, cand, emit, finish, cmp.evidence)
            return self._canary(result, spec, name, cand, champ, policy, emit, finish)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            try:
                self._restore(name, champ)
            except Exception as exc2:
                reason += f"; restoring the champion's traffic also failed: {exc2}"
            emit("failed", reason)
            if result.state not in (State.PROMOTED, State.REJECTED, State.ROLLED_BACK, State.FAILED):
                finish(State.FAILED, reason)
            raise

    # ------------------------------------------------------------------ paths
    def _direct(self, result, spec, name, cand, emit, finish, evidence):
        before = None
        if self.manager.exists(name):  # served by hand before any champion: move it, keep its spec
            state = self.manager.get(name)
            before = state.traffic.stable
            self.manager.switch(state, cand)
        else:
            self.manager.deploy(spec, version=cand)
        self.registry.set_alias(result.model, CHAMPION, cand)
        reason = "no champion yet: the first candidate is promoted directly"
        # what a roll-back returns to (serving.policy.plan_rollback)
        emit("promoted", reason, {**evidence, "traffic": {cand: 1.0}, "served_before": before})
        return finish(State.PROMOTED, reason)

    def _canary(self, result, spec, name, cand, champ, policy: PromotionPolicy, emit, finish):
        if not self.manager.exists(name):
            self.manager.deploy(spec, version=champ)
        state = self.manager.get(name)
        if set(state.traffic.live()) != {champ} or state.traffic.canary is not None:
            # someone deployed another version by hand: serve the champion alone before the canary
            state = self.manager.switch(state, champ)
        state = self.manager.apply(state, state.traffic.with_canary(cand, policy.canary_weight))
        result.state = transition(result.state, State.CANARY)
        start = _stats_of(self.manager.stats(name))
        started = self.clock()
        emit("canary_started", f"version {cand} gets {policy.canary_weight:.0%} of the traffic for "
                               f"{policy.window_s:g}s", {"traffic": dict(state.traffic.weights)})
        while True:
            self.sleep(self.poll_s)
            window = diff(_stats_of(self.manager.stats(name)), start)
            verdict = evaluate_gates(window.get(cand) or VersionStats(), window.get(champ) or VersionStats(),
                                     policy.gates, elapsed_s=self.clock() - started, window_s=policy.window_s,
                                     wait_limit_s=policy.wait_limit())
            if verdict.status == "wait":
                continue
            if verdict.status == "pass":
                state = self.manager.apply(state, state.traffic.shift_all_to(cand))
                self.registry.set_alias(result.model, CHAMPION, cand)
                self.manager.drop_drained(state)
                emit("promoted", verdict.reason, verdict.evidence)
                return finish(State.PROMOTED, verdict.reason)
            state = self.manager.apply(state, state.traffic.shift_all_to(champ))
            self.manager.drop_drained(state)
            emit("rolled_back", verdict.reason, verdict.evidence)
            return finish(State.ROLLED_BACK, verdict.reason)

    def _restore(self, name: str, champ: str | None) -> None:
        if champ is None or not self.manager.exists(name):
            return
        state: EndpointState = self.manager.get(name)
        if state.traffic.live() != [champ] and champ in state.traffic.weights:
            state = self.manager.apply(state, state.traffic.shift_all_to(champ))
            self.manager.drop_drained(state)


def promote(model: str, *, dashboard_url: str, token: str | None, tracking_uri: str, http_port: int = 8000,
            policy: PromotionPolicy | Mapping | None = None, candidate: str | None = None,
            endpoint: Mapping | None = None) -> PromotionResult:
    """One call for sweeps and `make demo`: run the promotion of `model`'s candidate."""
    from trainyard.serving.client import ServeClient

    with ServeClient(dashboard_url, token=token, http_port=http_port) as serve:
        registry = Registry(tracking_uri)
        manager = EndpointManager(serve, registry, tracking_uri=tracking_uri)
        return Promoter(manager, registry).promote(model, policy=policy, candidate=candidate, endpoint=endpoint)

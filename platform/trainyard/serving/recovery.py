"""Promotions a restarted server finds unfinished: make each endpoint safe, close the record.

A promotion runs in a thread of the server for its canary window. If the process dies in
that window (crash, redeploy, SIGKILL), nothing finishes it: the endpoint keeps sending
canary traffic to a candidate that nobody vetted, and its MLflow run stays RUNNING. On
start the server reads back the runs that its deployment left RUNNING (tag
`trainyard.server`; the current process's own are skipped) and, for each (`plan_recovery`,
pure):

    outcome already recorded         only the run's status was left: close it as recorded
    endpoint (or cluster) gone       nothing to restore: rolled_back, saying so
    candidate not on the endpoint    nothing of this promotion serves: rolled_back
    alias champion now the candidate the gates had passed before the restart (only a pass moves
                                     it): finish forward, the candidate alone, promoted
    a champion                       the champion alone at 100%, the candidate drained and
                                     removed (a normal rollback): rolled_back
    no champion (first deployment)   the version the endpoint served before the promotion, if
                                     any; else the endpoint, which only this promotion created
                                     and which serves an unvetted version, is deleted: rolled_back

A roll-back asked for by hand (`kind: rollback`, run the same way) is an operator's decision,
so it is finished forward: its target version alone on the endpoint, `champion` moved to it,
and its `reverted` event logged; with the endpoint gone it is closed as `failed` (the history
then walks back nothing, and the roll-back can be asked for again once the endpoint is back).

The `candidate` alias is never touched, so the promotion can be submitted again. The
decision is logged as an event (evidence `interrupted: true`) before the run is closed:
a second restart finds the run FINISHED, or, if it died in between, the endpoint already
safe and the event already there, and only closes it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from trainyard.errors import NotFoundError
from trainyard.serving.policy import ROLLBACK_EVENT, Event
from trainyard.serving.registry import CHAMPION, PromotionRecord
from trainyard.serving.traffic import Traffic

__all__ = ["INTERRUPTED", "RecoveryPlan", "plan_recovery", "recover_promotion"]

log = logging.getLogger("trainyard.serving")

INTERRUPTED = "interrupted: the server restarted during the canary window; submit the promotion again"


@dataclass(frozen=True)
class RecoveryPlan:
    action: str  # "none" | "switch" (all traffic to `target`, the others drained and removed) | "delete"
    target: str | None
    outcome: str  # "rolled_back" | "promoted"
    reason: str


def _alone(traffic: Traffic, version: str) -> bool:
    return dict(traffic.weights) == {version: 1.0}


def plan_recovery(record: PromotionRecord, *, champion_now: str | None, traffic: Traffic | None,
                  gone: str | None = None) -> RecoveryPlan:
    """What to do with an unfinished promotion. `traffic`: the endpoint's split now (None: gone,
    with `gone` saying why); `champion_now`: the registry's `champion` alias now."""
    cand, name = record.candidate, record.endpoint
    if record.kind == "rollback":
        return _finish_rollback(record, traffic=traffic, gone=gone)
    if traffic is None:
        return RecoveryPlan("none", None, "rolled_back",
                            f"{INTERRUPTED} ({gone or f'endpoint {name!r} no longer exists'}: nothing to restore)")
    if cand is not None and champion_now == cand and record.champion != cand:
        action = "none" if _alone(traffic, cand) else "switch"
        return RecoveryPlan(action, cand, "promoted",
                            f"interrupted by a server restart after its decision to promote (alias champion "
                            f"already moved to version {cand}): finished on restart, version {cand} alone")
    if cand is None or cand not in traffic.weights or cand == record.champion:
        return RecoveryPlan("none", None, "rolled_back", INTERRUPTED)  # nothing of this promotion serves
    target = champion_now or record.champion
    if target is not None:
        return RecoveryPlan("none" if _alone(traffic, target) else "switch", target, "rolled_back", INTERRUPTED)
    # a first deployment: no vetted version to fall back to
    before = record.served_before
    keep = before if before and before != cand else None
    if keep is None and before is None:  # a record that did not say: whatever else the endpoint serves
        others = [v for v in traffic.versions() if v != cand]
        keep = traffic.stable if traffic.stable != cand else (others[-1] if others else None)
    if keep is not None:
        return RecoveryPlan("switch", keep, "rolled_back",
                            f"{INTERRUPTED} (no champion: back to version {keep}, served before the promotion)")
    return RecoveryPlan("delete", None, "rolled_back",
                        f"{INTERRUPTED} (no champion to fall back to: endpoint {name!r}, created by this "
                        "promotion, was deleted)")


def _finish_rollback(record: PromotionRecord, *, traffic: Traffic | None, gone: str | None) -> RecoveryPlan:
    target, name = record.candidate, record.endpoint
    if traffic is None or target is None:
        return RecoveryPlan("none", None, "failed",
                            f"roll-back interrupted by a server restart and not finished: "
                            f"{gone or f'endpoint {name!r} no longer exists'}; roll back again once it is deployed")
    return RecoveryPlan("none" if _alone(traffic, target) else "switch", target, ROLLBACK_EVENT,
                        f"roll-back interrupted by a server restart, finished on restart: "
                        f"v{record.rollback_from or '?'} -> v{target}")


def recover_promotion(record: PromotionRecord, *, registry, manager_for: Callable[[str | None], object]) -> dict:
    """Carry out `plan_recovery` for one record and close it. Raises on cluster or MLflow trouble
    (the record stays RUNNING, for a retry or the next start)."""
    logged = record.kind == "rollback" and record.last_event == ROLLBACK_EVENT  # all done but the close
    if record.outcome or logged:  # decided and logged; the process died before the status
        registry.end_promotion(record.run_id, record.outcome or ROLLBACK_EVENT)
        return {"run_id": record.run_id, "model": record.model, "outcome": record.outcome, "action": "none",
                "reason": "already decided before the restart"}
    state, gone = None, None
    try:
        manager = manager_for(record.cluster)
        state = manager.get(record.endpoint)
    except NotFoundError as exc:  # the endpoint was deleted meanwhile, or its cluster unregistered
        gone = f"{exc.kind} {exc.value!r} no longer exists"
    plan = plan_recovery(record, champion_now=registry.alias_version(record.model, CHAMPION),
                         traffic=state.traffic if state is not None else None, gone=gone)
    if plan.action == "switch":
        state = manager.switch(state, plan.target)
    elif plan.action == "delete":
        manager.delete(record.endpoint)
    if plan.outcome == ROLLBACK_EVENT:  # the endpoint serves the target alone: the alias follows
        registry.set_alias(record.model, CHAMPION, plan.target)
    after = None if plan.action == "delete" or state is None else dict(state.traffic.weights)
    evidence = {"endpoint": record.endpoint, "interrupted": True, "action": plan.action,
                "last_event": record.last_event, "traffic": after}
    if record.kind == "rollback":
        evidence["from_version"] = record.rollback_from
    if not record.recovered:
        registry.log_event(record.run_id, record.next_seq,
                           Event(kind=plan.outcome, model=record.model, candidate=record.candidate,
                                 champion=record.champion, reason=plan.reason, evidence=evidence))
    registry.end_promotion(record.run_id, plan.outcome)
    return {"run_id": record.run_id, "model": record.model, "candidate": record.candidate,
            "outcome": plan.outcome, "action": plan.action, "target": plan.target, "reason": plan.reason,
            "traffic": after}

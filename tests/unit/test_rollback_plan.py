"""Where a roll-back goes, from a model's promotion history (serving.policy.plan_rollback: pure)."""
from __future__ import annotations

import pytest

from trainyard.errors import ConflictError
from trainyard.serving.policy import ROLLBACK_EVENT, RollbackPlan, plan_rollback


def ev(kind: str, candidate: str | None, champion: str | None = None, **evidence) -> dict:
    return {"kind": kind, "model": "m", "candidate": candidate, "champion": champion, "reason": "",
            "evidence": {"endpoint": "m-ep", **evidence}, "time": 0}


def test_each_rollback_undoes_one_more_promotion():
    events = [ev("promoted", "1", served_before=None), ev("compared", "2", "1"), ev("canary_started", "2", "1"),
              ev("promoted", "2", "1"), ev("rejected", "3", "2"), ev("rolled_back", "4", "2"),  # a failed canary
              ev("promoted", "5", "2")]
    assert plan_rollback("m", events) == RollbackPlan("m-ep", "5", "2")
    events.append(ev(ROLLBACK_EVENT, "2", "5"))
    assert plan_rollback("m", events) == RollbackPlan("m-ep", "2", "1")
    events.append(ev(ROLLBACK_EVENT, "1", "2"))
    with pytest.raises(ConflictError, match="nothing served model 'm' before its last promotion") as exc:
        plan_rollback("m", events)
    assert exc.value.status == 409 and exc.value.field == "model"


def test_a_first_promotion_goes_back_to_what_was_served_by_hand():
    assert plan_rollback("m", [ev("promoted", "2", None, served_before="1")]) == RollbackPlan("m-ep", "2", "1")


def test_nothing_to_roll_back():
    for events in ([], [ev("compared", "1"), ev("rejected", "1")], [ev("promoted", "1"), ev(ROLLBACK_EVENT, "0")]):
        with pytest.raises(ConflictError, match="promotion"):
            plan_rollback("m", events)
    # a promotion that left the same version serving has nothing before it to return to
    with pytest.raises(ConflictError):
        plan_rollback("m", [ev("promoted", "3", None, served_before="3")])

"""Promotion policy: spec validation, metric comparison, gates and the state machine."""
from __future__ import annotations

import pytest

from trainyard.errors import ConflictError, SpecError
from trainyard.serving.policy import State, compare_metric, evaluate_gates, transition
from trainyard.serving.stats import VersionStats
from trainyard.specs import PromotionGates, parse_endpoint_spec, parse_promotion_policy


def _stats(n: int, *, errors: int = 0, ms: float = 5.0) -> VersionStats:
    s = VersionStats()
    for i in range(n):
        s.observe(ms, error=i < errors)
    return s


GATES = PromotionGates(max_error_rate=0.05, max_p99_latency_ratio=2.0, min_requests=20)


@pytest.mark.parametrize("text, field", [
    ("canary_weight: 0", "canary_weight"),
    ("canary_weight: 1", "canary_weight"),
    ("canary_weight: 1.5", "canary_weight"),
    ("gates: {max_error_rate: 1.0}", "gates.max_error_rate"),
    ("gates: {max_error_rate: -0.1}", "gates.max_error_rate"),
    ("gates: {max_p99_latency_ratio: 0.5}", "gates.max_p99_latency_ratio"),
    ("gates: {min_requests: 0}", "gates.min_requests"),
    ("window_s: 60\nmax_wait_s: 30", "max_wait_s"),
    ("min_improvement: -1", "min_improvement"),
    ("canary_wieght: 0.1", "canary_wieght"),
])
def test_policies_that_cannot_work_are_rejected_naming_the_field(text, field):
    with pytest.raises(SpecError) as err:
        parse_promotion_policy(text)
    assert err.value.issues[0].field == field


def test_unknown_policy_key_suggests_the_right_one():
    with pytest.raises(SpecError, match="did you mean 'canary_weight'"):
        parse_promotion_policy("canary_wieght: 0.1")


def test_endpoint_spec_validation():
    spec = parse_endpoint_spec("model: digits\nversion: 3\n")
    assert spec.version == "3" and spec.endpoint_name() == "digits"
    for text, field in [("model: m\nversion: 1\nalias: champion", "version"),
                        ("model: m\nautoscaling: {min_replicas: 3, max_replicas: 2}", "autoscaling.max_replicas"),
                        ("model: m\npromotion: {canary_weight: 2}", "promotion.canary_weight"),
                        ("model: m\nsplit: sideways", "split")]:
        with pytest.raises(SpecError) as err:
            parse_endpoint_spec(text)
        assert err.value.issues[0].field == field, text


def test_no_champion_promotes_directly():
    cmp = compare_metric(0.9, None, metric="accuracy", mode="max", min_improvement=0.05)
    assert cmp.wins and "directly" in cmp.reason


@pytest.mark.parametrize("cand, champ, mode, need, wins", [
    (0.91, 0.90, "max", 0.0, True),
    (0.90, 0.90, "max", 0.0, False),  # a tie never churns the endpoint
    (0.91, 0.90, "max", 0.02, False),
    (0.20, 0.30, "min", 0.05, True),
    (0.30, 0.20, "min", 0.0, False),
    (float("nan"), 0.2, "max", 0.0, False),
])
def test_metric_comparison(cand, champ, mode, need, wins):
    cmp = compare_metric(cand, champ, metric="m", mode=mode, min_improvement=need)
    assert cmp.wins is wins
    assert cmp.evidence["candidate_value"] == (None if cand != cand else cand)


def test_gates_wait_then_pass_when_canary_holds():
    kw = dict(window_s=10, wait_limit_s=30)
    assert evaluate_gates(_stats(30), _stats(200), GATES, elapsed_s=5, **kw).status == "wait"
    verdict = evaluate_gates(_stats(30), _stats(200), GATES, elapsed_s=10, **kw)
    assert verdict.status == "pass"
    assert verdict.evidence["canary"]["requests"] == 30 and verdict.evidence["p99_ratio"] == pytest.approx(1.0)


def test_error_rate_fails_early_once_min_requests_are_in():
    verdict = evaluate_gates(_stats(20, errors=5), _stats(100), GATES, elapsed_s=1, window_s=10, wait_limit_s=30)
    assert verdict.status == "fail" and "error rate" in verdict.reason
    assert verdict.evidence["canary"]["errors"] == 5


def test_slow_canary_fails_the_latency_gate():
    verdict = evaluate_gates(_stats(50, ms=30), _stats(100, ms=5), GATES, elapsed_s=10, window_s=10,
                             wait_limit_s=30)
    assert verdict.status == "fail" and "p99" in verdict.reason


def test_too_little_traffic_by_max_wait_rolls_back():
    verdict = evaluate_gates(_stats(3), _stats(10), GATES, elapsed_s=31, window_s=10, wait_limit_s=30)
    assert verdict.status == "fail" and "not enough evidence" in verdict.reason


def test_state_machine_allows_only_the_documented_transitions():
    assert transition(State.PENDING, State.CANARY) == State.CANARY
    assert transition(State.CANARY, State.ROLLED_BACK) == State.ROLLED_BACK
    with pytest.raises(ConflictError):
        transition(State.PROMOTED, State.CANARY)
    with pytest.raises(ConflictError):
        transition(State.PENDING, State.ROLLED_BACK)

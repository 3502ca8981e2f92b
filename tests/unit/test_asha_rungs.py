"""Promotion-based ASHA's rung logic (trainyard.sweeps.rungs), without Ray."""
from __future__ import annotations

import pytest

from trainyard.sweeps.rungs import PromotionRungs, milestones


def test_milestones_are_geometric_and_below_max_t():
    assert milestones(1, 3, 9) == [1, 3]
    assert milestones(1, 3, 27) == [1, 3, 9]
    assert milestones(2, 2, 20) == [2, 4, 8, 16]
    assert milestones(1, 1.5, 5) == [1, 2, 3]  # int() of 1.5, 2.25, 3.375; no duplicates
    assert milestones(9, 3, 9) == []


def test_no_trial_goes_past_a_rung_until_the_rung_can_rank_it():
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=9)
    # the first trials to reach rung 1 wait, however good: one or two results rank nothing
    assert r.on_result("a", 1, 0.9) == "pause"
    assert r.on_result("b", 1, 0.5) == "pause"
    assert r.promotable() == []
    # the third makes a quota of one: the best so far (a) may go on, c may not
    assert r.on_result("c", 1, 0.1) == "pause"
    assert r.promotable(waiting={"a", "b", "c"}) == [("a", 0)]


def test_a_trial_that_is_top_when_it_arrives_goes_on_at_once():
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=9)
    for t, v in (("a", 0.2), ("b", 0.3)):
        r.on_result(t, 1, v)
    assert r.on_result("c", 1, 0.95) == "continue"
    assert "c" in r.promoted[0]
    # below its next rung (3) it just trains on
    assert r.on_result("c", 2, 0.96) == "continue"
    assert r.next_rung("c") == 1


def test_min_mode_ranks_lower_values_first():
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=9, mode="min")
    for t, v in (("a", 2.0), ("b", 0.5), ("c", 1.0)):
        r.on_result(t, 1, v)
    assert r.promotable() == [("b", 0)]


def test_promotable_prefers_higher_rungs_and_skips_the_promoted():
    r = PromotionRungs(grace=1, reduction_factor=2, max_t=8)  # rungs 1, 2, 4
    for t, v in (("a", 0.9), ("b", 0.8)):
        r.on_result(t, 1, v)
    assert r.promotable() == [("a", 0)]
    r.promote("a", 0)
    assert r.on_result("a", 2, 0.91) == "pause"  # alone at rung 2
    assert r.on_result("b", 2, 0.5) == "pause"   # b reached 2 as well (say it was resumed)
    assert r.promotable() == [("a", 1)]
    assert r.promotable(waiting={"b"}) == []


def test_sparse_reports_are_recorded_at_every_rung_they_passed():
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=27)  # rungs 1, 3, 9
    assert r.on_result("a", 3, 0.7) == "pause"  # first report at t=3: rungs 1 and 3
    assert "a" in r.recorded[0] and "a" in r.recorded[1]
    assert "a" in r.promoted[0] and "a" not in r.promoted[1]


def test_a_missing_metric_and_a_trial_past_all_rungs_continue():
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=9)
    assert r.on_result("a", 1, None) == "continue"
    assert r.next_rung("a") == 0
    for t in ("x", "y", "z"):
        r.on_result(t, 1, 0.1)
    r.record("a", 0, 0.9)
    r.record("a", 1, 0.9)
    assert r.next_rung("a") is None
    assert r.on_result("a", 5, 0.9) == "continue"


def test_bad_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        PromotionRungs(grace=1, reduction_factor=3, max_t=9, mode="up")


def test_a_full_sweep_promotes_the_best_and_few_others():
    """27 configs of distinct quality, rf 3, rungs 1 and 3 below max_t 9. Asynchronous: a
    trial promoted while its rung was small stays promoted, so a few more than 9 and 3 may go
    on; but once every trial reported and every promotion was taken, the best 9 went past
    rung 1, the best 3 past rung 3, and the best config trained to the end."""
    r = PromotionRungs(grace=1, reduction_factor=3, max_t=9)
    quality = {f"t{i:02d}": (i * 7919 % 27) / 27 for i in range(27)}
    waiting: set[str] = set()
    at: dict[str, int] = {}

    def run(trial: str, start: int) -> None:
        for t in range(start, 10):
            at[trial] = t
            if t == 9:
                return
            if r.on_result(trial, t, quality[trial]) == "pause":
                waiting.add(trial)
                return

    for trial in quality:
        run(trial, 1)
        while True:  # a free slot resumes a promotable trial before sampling a new one
            ready = r.promotable(waiting=waiting)
            if not ready:
                break
            trial_id, k = ready[0]
            r.promote(trial_id, k)
            waiting.discard(trial_id)
            run(trial_id, at[trial_id] + 1)
    best = sorted(quality, key=lambda t: -quality[t])
    assert set(best[:9]) <= r.promoted[0] and len(r.promoted[0]) <= 11
    assert set(best[:3]) <= r.promoted[1] and len(r.promoted[1]) <= 4
    assert at[best[0]] == 9
    steps = sum(at.values())
    assert steps <= 0.3 * 27 * 9  # against 243 evaluations for every config to the end


class _FakeTrial:
    def __init__(self, trial_id, status, last_result=None):
        self.trial_id, self.status, self.last_result = trial_id, status, last_result or {}

    def set_status(self, status):
        self.status = status


def _scheduler(**kw):
    from trainyard.runner.asha import PromotingASHA

    return PromotingASHA(metric="accuracy", mode="max", grace_period=1, reduction_factor=3, max_t=9,
                         max_concurrent=2, num_trials=kw.get("num_trials", 6))


def test_scheduler_pauses_resumes_and_holds_the_concurrency_limit():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers.trial_scheduler import TrialScheduler

    s = _scheduler()
    trials = [_FakeTrial(f"t{i}", Trial.PENDING) for i in range(3)]
    for t in trials[:2]:
        s.on_trial_add(None, t)
        t.status = Trial.RUNNING
    assert not s.allow_new_trial()  # two running: the limit
    assert s.on_trial_result(None, trials[0], {"training_iteration": 1, "accuracy": 0.9}) == TrialScheduler.PAUSE
    trials[0].status = Trial.PAUSED
    assert s.allow_new_trial()  # a paused trial does not hold a slot
    assert s.on_trial_result(None, trials[1], {"training_iteration": 1, "accuracy": 0.2}) == TrialScheduler.PAUSE
    trials[1].status = Trial.PAUSED
    s.on_trial_add(None, trials[2])
    trials[2].status = Trial.RUNNING
    assert s.on_trial_result(None, trials[2], {"training_iteration": 1, "accuracy": 0.1}) == TrialScheduler.PAUSE
    trials[2].status = Trial.PAUSED
    # t0 is now the rung's top third: it goes first, and no new config while it waits
    assert not s.allow_new_trial()
    assert s.choose_trial_to_run(None) is trials[0]
    assert s.promotions == 1
    # the loop's last report is never paused; a report at max_t stops
    assert s.on_trial_result(None, trials[0], {"training_iteration": 3, "accuracy": 0.9,
                                                "trainyard_done": 1}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, trials[0], {"training_iteration": 9, "accuracy": 0.9}) == TrialScheduler.STOP


def test_scheduler_stops_the_waiting_trials_when_nothing_else_can_run():
    from ray.tune.experiment import Trial

    class _Controller:
        def __init__(self):
            self.stopped = []

        def stop_trial(self, trial):
            self.stopped.append(trial.trial_id)
            trial.status = Trial.TERMINATED

    s = _scheduler(num_trials=2)
    a, b = _FakeTrial("a", Trial.PENDING), _FakeTrial("b", Trial.PENDING)
    for t, v in ((a, 0.5), (b, 0.4)):
        s.on_trial_add(None, t)
        s.on_trial_result(None, t, {"training_iteration": 1, "accuracy": v})
        t.status = Trial.PAUSED
    controller = _Controller()
    assert s.choose_trial_to_run(controller) is None
    assert sorted(controller.stopped) == ["a", "b"] and s.stopped_at_end == 2
    assert s.stats()["pauses"] == 2


def test_scheduler_rebuilds_rungs_from_restored_trials():
    from ray.tune.experiment import Trial

    s = _scheduler()
    s.on_trial_add(None, _FakeTrial("far", Trial.PENDING, {"training_iteration": 5, "accuracy": 0.8}))
    s.on_trial_add(None, _FakeTrial("at1", Trial.PENDING, {"training_iteration": 1, "accuracy": 0.3}))
    s.on_trial_add(None, _FakeTrial("new", Trial.PENDING))
    assert s.rungs.recorded[0] == {"far": 0.8, "at1": 0.3} and s.rungs.recorded[1] == {"far": 0.8}
    assert "far" in s.rungs.promoted[0] and "far" in s.rungs.promoted[1]  # it went past both
    assert "at1" not in s.rungs.promoted[0]
    assert s.started == 3


def test_gated_variants_state_leaves_the_scheduler_out():
    from trainyard.runner.asha import GatedVariants

    s = _scheduler()
    gen = GatedVariants(s, random_state=0)
    state = gen.get_state()
    assert "_scheduler" not in state
    other = _scheduler()
    gen2 = GatedVariants(other, random_state=0)
    gen2.set_state(state)
    assert gen2._scheduler is other


def _waiting_sweep():
    """Three trials at the first rung (t0 promoted and running on, t1 and t2 waiting) and one
    sampled but not yet reported."""
    from ray.tune.experiment import Trial

    s = _scheduler()
    trials = {f"t{i}": _FakeTrial(f"t{i}", Trial.PENDING) for i in range(4)}
    for trial_id, v in (("t1", 0.2), ("t2", 0.1), ("t0", 0.9)):
        s.on_trial_add(None, trials[trial_id])
        trials[trial_id].status = Trial.RUNNING
        if s.on_trial_result(None, trials[trial_id], {"training_iteration": 1, "accuracy": v}) == "PAUSE":
            trials[trial_id].status = Trial.PAUSED
    s.on_trial_add(None, trials["t3"])
    return s, trials


def test_a_resumed_sweep_gets_its_rungs_back_and_waiting_trials_wait_again():
    from ray.tune.experiment import Trial

    s, _ = _waiting_sweep()
    assert s.paused_by_us == {"t1", "t2"} and s.rungs.promoted[0] == {"t0"}
    snap = s.snapshot()
    import json

    snap = json.loads(json.dumps(snap))  # plain data: it is saved with the searcher's state

    # the resumed driver: a fresh scheduler, the snapshot loaded, then Tune re-adds every
    # unfinished trial as PENDING with its last result
    r = _scheduler()
    r.load(snap)
    restored = {"t0": _FakeTrial("t0", Trial.PENDING, {"training_iteration": 2, "accuracy": 0.95}),
                "t1": _FakeTrial("t1", Trial.PENDING, {"training_iteration": 1, "accuracy": 0.2}),
                "t2": _FakeTrial("t2", Trial.PENDING, {"training_iteration": 1, "accuracy": 0.1}),
                "t3": _FakeTrial("t3", Trial.PENDING)}
    for t in restored.values():
        r.on_trial_add(None, t)
    assert {k: t.status for k, t in restored.items()} == {
        "t0": Trial.PENDING, "t1": Trial.PAUSED, "t2": Trial.PAUSED, "t3": Trial.PENDING}
    # the rung values are the ones recorded at the rung, not the trials' last results
    assert r.rungs.recorded[0] == {"t1": 0.2, "t2": 0.1, "t0": 0.9}
    assert r.rungs.promoted[0] == {"t0"} and r.started == 4 and r.pauses == s.pauses
    assert r.stats() == s.stats()
    # t1 is promoted once three more trials rank below it: it is ranked at its rung again
    for i, v in enumerate((0.05, 0.05, 0.05)):
        t = _FakeTrial(f"n{i}", Trial.PENDING)
        r.on_trial_add(None, t)
        r.on_trial_result(None, t, {"training_iteration": 1, "accuracy": v})
        t.status = Trial.PAUSED
    restored["t0"].status, restored["t3"].status = Trial.RUNNING, Trial.TERMINATED
    assert r.choose_trial_to_run(None) is restored["t1"]


def test_a_snapshot_of_other_rungs_is_ignored_and_the_rungs_are_rebuilt():
    from ray.tune.experiment import Trial

    s, _ = _waiting_sweep()
    snap = s.snapshot()
    snap["rungs"] = [2, 6]  # the spec's asha settings changed between the runs
    r = _scheduler()
    r.load(snap)
    t1 = _FakeTrial("t1", Trial.PENDING, {"training_iteration": 1, "accuracy": 0.2})
    r.on_trial_add(None, t1)
    assert r.rungs.recorded[0] == {"t1": 0.2} and t1.status == Trial.PENDING and r.started == 1


def test_gated_searchers_save_the_rungs_and_keep_the_live_scheduler():
    from ray.tune.search.optuna import OptunaSearch

    from trainyard.runner.asha import GatedSearcher, GatedVariants

    s, _ = _waiting_sweep()
    for make in (lambda sch: GatedVariants(sch, random_state=0),
                 lambda sch: GatedSearcher(OptunaSearch(metric="accuracy", mode="max"), sch)):
        state = make(s).get_state()
        assert "_scheduler" not in state and state["_trainyard_asha"]["waiting"] == ["t1", "t2"]
        live = _scheduler()
        gen = make(live)
        gen.set_state(state)
        assert gen._scheduler is live and live.paused_by_us == {"t1", "t2"}
        assert live.rungs.recorded[0] == s.rungs.recorded[0]

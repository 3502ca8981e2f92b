"""Promotion-based ASHA as a Ray Tune trial scheduler (sweep.asha.strategy: promote).

The rung logic is trainyard.sweeps.rungs.PromotionRungs; this module wires it into Tune:

- on_trial_result: CONTINUE below a rung; at a rung, CONTINUE when the trial is among the top
  1/rf recorded there, else PAUSE. Tune then saves the trial's last reported checkpoint (every
  evaluation checkpoints under this strategy) and frees its actor for the next trial.
- choose_trial_to_run: a paused trial that has become promotable is resumed first (from its
  checkpoint; the worker loop restores the DeepSpeed state and goes on at the same step).
- New trials: Tune starts every PENDING trial it has resources for, so the number of trials
  in flight is held by gating the searcher (`gate`): it hands out a new config only while
  fewer than max_concurrent_trials trials are running or pending and no paused trial is
  waiting to be promoted. Tune's own max_concurrent_trials counts paused trials as live and
  would deadlock here; the sweep passes None to Tune and the limit to this scheduler.
- The end: once the searcher has handed out num_trials configs and nothing runs, the paused
  trials that were never promoted are stopped (their rung results are their last).
- Resume: Tune does not save schedulers, but it saves the searcher's state with every
  experiment checkpoint, in the same snapshot as the trials'. The gated searchers carry the
  scheduler's rungs (every value recorded at every rung, the promotions, the waiting trials,
  the counters) in that state, and a resumed sweep loads them back: a trial that was waiting
  at a rung comes back waiting (PAUSED) and is ranked there again, not sent on. A sweep saved
  without that state (an older one) falls back to rebuilding the rungs from each trial's last
  result.
"""
from __future__ import annotations

import logging

from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.concurrency_limiter import ConcurrencyLimiter

from trainyard.sweeps.rungs import PromotionRungs

__all__ = ["PromotingASHA", "GatedVariants", "GatedSearcher"]

log = logging.getLogger("trainyard.sweep")

_LIVE = (Trial.RUNNING, Trial.PENDING)


class PromotingASHA(TrialScheduler):
    def __init__(self, *, metric: str, mode: str, grace_period: int, reduction_factor: float, max_t: int,
                 max_concurrent: int, num_trials: int, time_attr: str = "training_iteration"):
        super().__init__()
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self.max_concurrent, self.num_trials = max_concurrent, num_trials
        self.rungs = PromotionRungs(grace=grace_period, reduction_factor=reduction_factor, max_t=max_t, mode=mode)
        self.trials: dict[str, Trial] = {}
        self.seen: set[str] = set()  # trials the searcher handed out (counted in on_trial_add)
        self.paused_by_us: set[str] = set()
        self.pauses = 0  # times a trial waited at a rung
        self.promotions = 0  # times a waiting trial was resumed
        self.stopped_at_end = 0  # waiting trials stopped when the sweep ran out of work

    # ------------------------------------------------------------------ Tune hooks

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # ours come from the sweep spec

    @property
    def started(self) -> int:
        return len(self.seen)

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        trial_id = trial.trial_id
        if trial_id not in self.seen:
            self.seen.add(trial_id)
            self._rebuild(trial)
        elif trial_id in self.paused_by_us and trial.status == Trial.PENDING:
            # a resumed sweep: it was waiting at a rung when the state was saved, and waits
            # again (Tune re-queues every unfinished trial as PENDING and files it under the
            # status it has once this hook returns)
            trial.set_status(Trial.PAUSED)
        self.trials[trial_id] = trial

    # ------------------------------------------------------------------ saved with the searcher

    def snapshot(self) -> dict:
        """The rung state, in plain data, for the searcher's saved state."""
        return {"version": 1, "rungs": list(self.rungs.rungs),
                "recorded": [dict(r) for r in self.rungs.recorded],
                "promoted": [sorted(p) for p in self.rungs.promoted],
                "waiting": sorted(self.paused_by_us), "seen": sorted(self.seen),
                "pauses": self.pauses, "promotions": self.promotions, "stopped_at_end": self.stopped_at_end}

    def load(self, snap: dict | None) -> None:
        """Take back a snapshot() saved by the sweep being resumed (before Tune re-adds its trials).
        One taken with other rungs (the spec's asha settings changed) is ignored: the rungs are
        rebuilt from the trials' last results instead."""
        if not snap or snap.get("version") != 1 or list(snap.get("rungs", [])) != list(self.rungs.rungs):
            if snap:
                log.warning("promotion ASHA: the saved rung state does not match this sweep's rungs; "
                            "rebuilding them from the trials' last results")
            return
        self.rungs.recorded = [dict(r) for r in snap["recorded"]]
        self.rungs.promoted = [set(p) for p in snap["promoted"]]
        self.paused_by_us = set(snap["waiting"])
        self.seen = set(snap["seen"])
        self.pauses, self.promotions = int(snap["pauses"]), int(snap["promotions"])
        self.stopped_at_end = int(snap["stopped_at_end"])

    def _rebuild(self, trial: Trial) -> None:
        """A trial restored with a resumed sweep (Tune does not save schedulers): record it at
        the rungs its last result passed, with that result's value (the per-rung values are
        not kept), and as promoted past every rung it went beyond. A trial that was waiting
        exactly at a rung comes back PENDING and goes on to its next rung, where it is ranked
        again."""
        last = getattr(trial, "last_result", None) or {}
        t = int(last.get(self._time_attr) or 0)
        value = last.get(self._metric)
        if t <= 0 or value is None:
            return
        passed = [k for k, m in enumerate(self.rungs.rungs) if t >= m]
        for k in passed:
            self.rungs.record(trial.trial_id, k, float(value))
            if k < passed[-1] or t > self.rungs.rungs[k]:
                self.rungs.promote(trial.trial_id, k)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.paused_by_us.discard(trial.trial_id)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if result.get("trainyard_done"):
            return TrialScheduler.CONTINUE  # the loop's last report: it ends by itself
        t = int(result.get(self._time_attr) or 0)
        if t >= self.rungs.max_t:
            return TrialScheduler.STOP
        value = result.get(self._metric)
        if value is not None:
            value = float(value)
        decision = self.rungs.on_result(trial.trial_id, t, value)
        if decision == "pause":
            self.paused_by_us.add(trial.trial_id)
            self.pauses += 1
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.paused_by_us.discard(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.paused_by_us.discard(trial.trial_id)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = list(self.trials.values())
        live = sum(1 for t in trials if t.status in _LIVE)
        paused = {t.trial_id for t in trials if t.status == Trial.PAUSED}
        if live < self.max_concurrent:
            for trial_id, k in self.rungs.promotable(waiting=paused & self.paused_by_us):
                self.rungs.promote(trial_id, k)
                self.paused_by_us.discard(trial_id)
                self.promotions += 1
                return self.trials[trial_id]
        for trial in trials:  # Tune starts PENDING trials itself; name one as FIFO does
            if trial.status == Trial.PENDING:
                return trial
        if live == 0 and paused and self.started >= self.num_trials:
            # nothing left to sample, nothing running whose results could promote a waiting
            # trial: the sweep is over for the paused ones
            for trial in trials:
                if trial.status == Trial.PAUSED:
                    self.stopped_at_end += 1
                    self.paused_by_us.discard(trial.trial_id)
                    tune_controller.stop_trial(trial)
        return None

    # ------------------------------------------------------------------ the searcher's gate

    def allow_new_trial(self) -> bool:
        trials = list(self.trials.values())
        if sum(1 for t in trials if t.status in _LIVE) >= self.max_concurrent:
            return False
        paused = {t.trial_id for t in trials if t.status == Trial.PAUSED}
        return not self.rungs.promotable(waiting=paused & self.paused_by_us)

    def stats(self) -> dict:
        return {"strategy": "promote", "rungs": list(self.rungs.rungs), "pauses": self.pauses,
                "promotions": self.promotions, "stopped_at_end": self.stopped_at_end,
                "recorded": [len(r) for r in self.rungs.recorded],
                "promoted": [len(p) for p in self.rungs.promoted]}

    def debug_string(self) -> str:
        return (f"promotion ASHA: {self.rungs.summary()}; {self.promotions} resumed, "
                f"{self.stopped_at_end} stopped at the end")

    def __getstate__(self):
        # Tune pickles the scheduler with the experiment; Trial objects come back on restore
        state = dict(self.__dict__)
        state["trials"] = {}
        return state


class _CarriesRungs:
    """Tune saves the searcher's state with every experiment checkpoint and restores it over a
    resumed sweep's searcher. Both gated searchers keep their state's own contents, leave the
    scheduler object out of it (BasicVariantGenerator and ConcurrencyLimiter save their whole
    __dict__; restored, that stale copy would replace the live scheduler the restored Tuner
    runs), and carry the scheduler's rungs in it as plain data."""

    _STATE_KEY = "_trainyard_asha"
    _scheduler: PromotingASHA

    def get_state(self):
        state = super().get_state()
        if state:
            state.pop("_scheduler", None)
            state[self._STATE_KEY] = self._scheduler.snapshot()
        return state

    def set_state(self, state):
        scheduler = self._scheduler
        snap = state.pop(self._STATE_KEY, None)
        super().set_state(state)
        self._scheduler = scheduler
        scheduler.load(snap)


class GatedVariants(_CarriesRungs, BasicVariantGenerator):
    """Random/grid configs, handed out only while the scheduler lets a new trial in."""

    def __init__(self, scheduler: PromotingASHA, **kwargs):
        super().__init__(**kwargs)
        self._scheduler = scheduler

    def next_trial(self):
        if not self._scheduler.allow_new_trial():
            return None
        return super().next_trial()


class GatedSearcher(_CarriesRungs, ConcurrencyLimiter):
    """A Searcher (Optuna) behind the same gate; no concurrency limit of its own."""

    def __init__(self, searcher, scheduler: PromotingASHA):
        super().__init__(searcher, max_concurrent=1_000_000)
        self._scheduler = scheduler

    def suggest(self, trial_id: str):
        if not self._scheduler.allow_new_trial():
            return None
        return super().suggest(trial_id)

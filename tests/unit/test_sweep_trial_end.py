"""How a sweep trial starts and ends, as pure logic: the first report's flags (restore, PBT
clone), the trial's outcome when Tune stops it, how its MLflow child run is closed, and the
environment an inline trial borrows and gives back."""
from __future__ import annotations

import os

import pytest

from trainyard.runner import sweep


@pytest.mark.parametrize("restored, source, expected", [
    (False, None, (0.0, 0.0)),  # a fresh start
    (True, "t1", (1.0, 0.0)),  # restored from its own checkpoint: a retry, a resumed sweep
    (True, "t2", (1.0, 1.0)),  # PBT cloned another trial's checkpoint
    (True, None, (1.0, 0.0)),  # restored, the source unknown (a pointer without trial id)
    (False, "t2", (0.0, 0.0)),  # nothing restored: nothing cloned either
])
def test_first_flags(restored, source, expected):
    assert sweep._first_flags(restored, source, "t1") == {"trainyard_restored": expected[0],
                                                          "trainyard_cloned": expected[1]}


def test_trial_outcome_tells_a_stop_from_a_failure():
    assert sweep._trial_outcome(None) == "finished"
    assert sweep._trial_outcome(SystemExit(0)) == "stopped"  # what tune.report raises on a stop
    assert sweep._trial_outcome(SystemExit()) == "stopped"
    assert sweep._trial_outcome(SystemExit(3)) == "failed"
    assert sweep._trial_outcome(RuntimeError("boom")) == "failed"
    assert sweep._trial_outcome(KeyboardInterrupt()) == "failed"


class FakeClient:
    def __init__(self):
        self.calls: list[tuple] = []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.calls.append(("tags", run_id, {t.key: t.value for t in tags}))

    def set_terminated(self, run_id, status=None):
        self.calls.append(("end", run_id, status))


def test_a_stopped_trial_ends_finished_and_tagged():
    client = FakeClient()
    sweep._end_child(client, "r1", "stopped")
    assert client.calls == [("tags", "r1", {"trainyard.stopped_early": "true"}), ("end", "r1", "FINISHED")]


def test_a_finished_trial_keeps_its_model_and_says_it_was_not_stopped():
    client = FakeClient()
    sweep._end_child(client, "r1", "finished", model_uri="models:/m-1")
    assert client.calls == [("tags", "r1", {"trainyard.model_uri": "models:/m-1", "trainyard.stopped_early": "false"}),
                            ("end", "r1", "FINISHED")]


def test_a_failed_trial_and_a_run_the_driver_closes():
    client = FakeClient()
    sweep._end_child(client, "r1", "failed")
    sweep._end_child(client, "r2", "stopped", closed_by="driver")
    assert client.calls == [("end", "r1", "FAILED"),
                            ("tags", "r2", {"trainyard.stopped_early": "true", "trainyard.closed_by": "driver"}),
                            ("end", "r2", "FINISHED")]


def test_inline_environment_is_given_back_even_when_the_trial_is_stopped(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit):
        with sweep._environ({"RANK": "0", "OMP_NUM_THREADS": "1"}):
            assert os.environ["RANK"] == "0" and os.environ["OMP_NUM_THREADS"] == "1"
            raise SystemExit(0)
    assert "RANK" not in os.environ and os.environ["OMP_NUM_THREADS"] == "7"

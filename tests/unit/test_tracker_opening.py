"""A worker's start: rank 0's MLflow client opens in the background (runner.tracker) while the
engines are built and the first steps run, without reordering or losing anything."""
from __future__ import annotations

import threading
import types

import pytest

from trainyard.runner import tracker as tracker_mod


class _Logger:
    max_batch = 1000

    def __init__(self, calls, gate=None):
        self.calls, self.gate = calls, gate

    def log_params(self, params):
        self.calls.append(("params", sorted(params)))

    def set_tags(self, tags):
        self.calls.append(("tags", sorted(tags)))

    def log_metric_rows(self, rows):
        self.calls.append(("metrics", [step for _, step, *_ in rows]))

    def log_metrics(self, metrics, *, step):
        self.calls.append(("metrics", [step]))

    def flush(self, timeout=None):
        self.calls.append(("flush",))

    def close(self, timeout=None):
        self.calls.append(("close",))


def _spec():
    from trainyard.specs import parse_job_spec

    return parse_job_spec({"name": "p", "workload": "cnn"})


class _Plan:
    zero_stage = 0

    def as_params(self):
        return {"deepspeed.zero_stage": 0}


def test_steps_never_wait_for_the_opening_and_the_run_gets_params_first(monkeypatch):
    calls: list = []
    gate = threading.Event()

    def slow_logger(*, run_id, tracking_uri=None):
        assert gate.wait(60)
        return _Logger(calls)

    monkeypatch.setitem(__import__("sys").modules, "trainyard.tracking.logger",
                        types.SimpleNamespace(RunLogger=slow_logger))
    tracking = {"run_id": "r", "tracking_uri": "sqlite:///x.db"}
    opening = tracker_mod.open_logger(rank=0, tracking=tracking)
    tracker = tracker_mod.Tracker(rank=0, tracking=tracking, queue=None, total_steps=5, opening=opening)
    tracker.start(spec=_spec(), hparams={"channels": 8}, plan=_Plan(), world=2, resumed_from=None, resumed_step=0)
    for step in (1, 2, 3):
        tracker.log_metrics({"loss": 1.0}, step=step)  # returns while the client is still opening
    assert calls == [] and not opening.done
    gate.set()
    tracker.flush()  # waits for the opening, then sends every held step
    kinds = [c[0] for c in calls]
    assert kinds[:3] == ["params", "params", "tags"] and ("metrics", [1, 2, 3]) in calls and kinds[-1] == "flush"
    tracker.close()
    assert tracker.logger is None and calls[-1] == ("close",)


def test_no_opening_on_other_ranks_or_without_a_run():
    assert tracker_mod.open_logger(rank=1, tracking={"run_id": "r"}) is None
    assert tracker_mod.open_logger(rank=0, tracking=None) is None
    tracker = tracker_mod.Tracker(rank=1, tracking={"run_id": "r"}, queue=None, total_steps=1)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.close()
    assert tracker.logger is None


def test_a_client_that_cannot_open_fails_where_the_run_is_needed(monkeypatch):
    def broken(**_):
        raise RuntimeError("no such tracking store")

    monkeypatch.setitem(__import__("sys").modules, "trainyard.tracking.logger",
                        types.SimpleNamespace(RunLogger=broken))
    tracker = tracker_mod.Tracker(rank=0, tracking={"run_id": "r"}, queue=None, total_steps=1)
    with pytest.raises(RuntimeError, match="no such tracking store"):  # as where the client was built before
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.flush()
    tracker.close()  # raised once; closing afterwards is quiet
    assert tracker.logger is None

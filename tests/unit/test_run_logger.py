"""RunLogger: metrics go through MLflow's asynchronous log_batch, in batches of at most 1000,
and no tracking failure (raised at once, or found when a flush waits) reaches training."""
from __future__ import annotations

import concurrent.futures
import logging

import pytest

from trainyard.tracking import logger as logger_mod


class _Ops:
    """What MlflowClient.log_batch(synchronous=False) returns: RunOperations over futures."""

    def __init__(self, error: Exception | None = None, done: bool = True):
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        if done:
            self.future.set_exception(error) if error else self.future.set_result(None)
        self._operation_futures = [self.future]


class _Client:
    def __init__(self, *, raise_now: bool = False, fail_later: bool = False, pending: bool = False):
        self.calls: list[dict] = []
        self.raise_now, self.fail_later, self.pending = raise_now, fail_later, pending

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self.calls.append({"metrics": list(metrics), "params": list(params), "tags": list(tags),
                           "synchronous": synchronous})
        if self.raise_now:
            raise ConnectionError("tracking server down")
        if synchronous is False:
            return _Ops(RuntimeError("rejected") if self.fail_later else None, done=not self.pending)
        return None

    def get_run(self, run_id):
        raise ConnectionError("tracking server down")


def _logger(client) -> logger_mod.RunLogger:
    run_logger = logger_mod.RunLogger.__new__(logger_mod.RunLogger)
    run_logger.run_id, run_logger.tracking_uri, run_logger.client = "r1", None, client
    run_logger._flush_timeout, run_logger._pending = 0.05, []
    return run_logger


def test_metrics_are_logged_asynchronously_in_batches_of_at_most_1000():
    client = _Client()
    run_logger = _logger(client)
    run_logger.log_metrics({f"m{i}": float(i) for i in range(2500)}, step=3)
    run_logger.log_metrics({"loss": "not a number", "acc": 0.5}, step=4)
    assert [len(c["metrics"]) for c in client.calls] == [1000, 1000, 500, 1]
    assert all(c["synchronous"] is False for c in client.calls)
    assert client.calls[-1]["metrics"][0].key == "acc" and client.calls[-1]["metrics"][0].step == 4
    run_logger.close()
    assert run_logger._pending == []


@pytest.mark.parametrize("client", [_Client(raise_now=True), _Client(fail_later=True), _Client(pending=True)],
                         ids=["raises-at-once", "fails-in-the-background", "never-answers"])
def test_no_tracking_failure_reaches_training(client, caplog):
    run_logger = _logger(client)
    with caplog.at_level(logging.WARNING, logger="trainyard.tracking"):
        run_logger.log_metrics({"loss": 1.0}, step=1)
        run_logger.log_params({"training": {"lr": 0.1}})
        run_logger.set_tags({"a": 1})
        run_logger.flush()
        run_logger.close()
    assert caplog.records, "a failure is logged as a warning"


def test_a_long_run_without_flushes_keeps_only_unsent_batches():
    run_logger = _logger(_Client())
    for step in range(3 * logger_mod.MAX_BATCH):
        run_logger.log_metrics({"loss": 1.0}, step=step)
    assert len(run_logger._pending) <= logger_mod.MAX_BATCH + 1


def test_the_tracker_sends_held_steps_as_one_batch_each_second_and_everything_at_a_flush(monkeypatch):
    from trainyard.runner import tracker as tracker_mod

    client = _Client()
    tracker = tracker_mod.Tracker(rank=0, tracking=None, queue=None, total_steps=10)
    tracker.logger = _logger(client)
    clock = [50.0]
    monkeypatch.setattr(tracker_mod.time, "monotonic", lambda: clock[0])
    for step in range(1, 4):
        tracker.log_metrics({"loss": float(step)}, step=step)
        clock[0] += 0.2
    assert client.calls == []  # held: no MLflow work inside these steps
    clock[0] += 0.5
    tracker.log_metrics({"loss": 4.0}, step=4)  # a second after the first held value
    assert [[(m.key, m.value, m.step) for m in c["metrics"]] for c in client.calls] == [
        [("loss", 1.0, 1), ("loss", 2.0, 2), ("loss", 3.0, 3), ("loss", 4.0, 4)]]
    tracker.log_metrics({"loss": 5.0, "lr": "n/a"}, step=5)
    tracker.flush()  # before a checkpoint: what it covers is on record
    assert [(m.key, m.step) for m in client.calls[-1]["metrics"]] == [("loss", 5)]
    tracker.log_metrics({"loss": 6.0}, step=6)
    tracker.close()
    assert [(m.key, m.step) for m in client.calls[-1]["metrics"]] == [("loss", 6)]
    assert tracker.logger is None and len(client.calls) == 3

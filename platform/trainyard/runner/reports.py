"""How reports travel: Ray queues drained in order, Train reports forwarded to Tune, first-report flags."""
from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["take_available", "reportable", "first_flags", "forward_reports", "make_forwarder", "SENTINEL"]

SENTINEL = "__trainyard_done__"


def take_available(queue) -> list:
    """Every item in a ray.util.queue.Queue now, in order, for its only consumer (qsize is
    then a lower bound: nobody else takes items). Never `queue.get(timeout=...)`: the queue
    actor's `asyncio.wait_for(queue.get(), timeout)` can drop the item it took when the
    timeout races the get (Python 3.11)."""
    n = queue.qsize()
    return queue.get_nowait_batch(n) if n else []


def reportable(metrics: dict) -> dict:
    """Tune keeps numbers; Train's strings (model uris) go to the child run, not to Tune."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def first_flags(restored: bool, source_trial: str | None, trial_id: str) -> dict:
    """What the first report of a trial's start says about how it began, for the driver to
    count restores and PBT clones: restored from a checkpoint, and cloned when that
    checkpoint is another trial's (a trial restored from its own is a restore, not a clone)."""
    return {"trainyard_restored": 1.0 if restored else 0.0,
            "trainyard_cloned": 1.0 if restored and source_trial not in (None, trial_id) else 0.0}


def make_forwarder(queue):
    """A Train v2 UserCallback (built lazily: ray.train.v2 is heavy) that hands each report's
    rank-0 metrics and checkpoint path to the trial function through `queue`."""
    from ray.train.v2.api.callback import UserCallback

    class _ForwardReports(UserCallback):
        def __init__(self, q):
            self.q = q

        def after_report(self, run_context, metrics, checkpoint):
            item = {"metrics": dict(metrics[0]) if metrics else {},
                    "checkpoint": getattr(checkpoint, "path", None) if checkpoint else None}
            self.q.put(item)  # blocks (maxsize 1): Train waits until Tune took it, like TuneReportCallback

    return _ForwardReports(queue)


def forward_reports(queue, send: Callable[[dict, dict, str | None], None], *, first_flags: dict,
                    poll_s: float = 0.05) -> dict[str, Any]:
    """The trial side of the gang's hand-off: each item the Train run queues goes, in order,
    to send(report for Tune, metrics, checkpoint path), the first with first_flags, until
    SENTINEL; returns the last metrics.

    Polls (take_available, the sole consumer) instead of `queue.get(timeout=...)`, whose
    timeout can drop the item it raced: a lost report, or a lost SENTINEL that leaves the
    trial waiting forever. The poll is short: Train's controller waits in put() (maxsize 1)
    until the item is taken."""
    last: dict = {}
    while True:
        items = take_available(queue)
        if not items:
            time.sleep(poll_s)
            continue
        for item in items:
            if isinstance(item, str) and item == SENTINEL:
                return last
            metrics = dict(item["metrics"])
            last = metrics
            report = {**reportable(metrics), **first_flags}
            first_flags = {}
            send(report, metrics, item.get("checkpoint"))

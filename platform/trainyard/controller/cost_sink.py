"""The cost record into the job's MLflow run, off the controller's tick.

When a job ends, the controller's record (trainyard.costs.JobCost: time held, CPU- and
GPU-hours, money, busy fraction, goodput, MFU, losses) goes to the run the runner made, as
`cost.*` params and metrics (JobCost.mlflow_params / mlflow_metrics). MLflow may be slow or
down: one daemon thread sends, from a bounded queue, and a record that cannot be sent is
logged and dropped. The store's record is the source of truth; MLflow's is a copy.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

__all__ = ["CostSink"]

log = logging.getLogger("trainyard.controller")


class CostSink:
    def __init__(self, tracking_uri: str, *, max_pending: int = 1000):
        self.tracking_uri = tracking_uri
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri)

    def submit(self, run_id: str | None, record: Any) -> None:
        """Queue `record` (a JobCost) for run `run_id`; never blocks, never raises."""
        if not (self.enabled and run_id and record is not None):
            return
        try:
            self._queue.put_nowait((run_id, record.mlflow_params(), record.mlflow_metrics()))
        except queue.Full:
            self.dropped += 1
            log.warning("cost record of MLflow run %s dropped: %d records wait to be sent", run_id,
                        self._queue.qsize())
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                # daemon: a server stopping never waits on an MLflow that does not answer
                self._thread = threading.Thread(target=self._run, name="trainyard-cost-sink", daemon=True)
                self._thread.start()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until what is queued was sent (tests); True when the queue emptied in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        while True:
            run_id, params, metrics = self._queue.get()
            try:
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                                 params=[Param(k, str(v)[:500]) for k, v in params.items()])
                self.sent += 1
            except Exception as exc:  # MLflow down, the run deleted: the store keeps the record
                self.dropped += 1
                log.warning("cost record not sent to MLflow run %s: %s", run_id, str(exc).splitlines()[0][:300])
            finally:
                self._queue.task_done()

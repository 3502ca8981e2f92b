"""RunLogger: what rank 0 uses to log to the job's MLflow run.

Metrics are queued and sent by a daemon thread in `log_batch` calls of at most 1000,
so the training loop never waits on the tracking server (one log_metric call is ~12 ms,
a 1000-metric batch ~0.15 s). Tracking trouble is logged as a warning and never stops
training: the model is worth more than its curves.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Mapping

__all__ = ["RunLogger", "flatten"]

log = logging.getLogger("trainyard.tracking")

MAX_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE = 6000


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class RunLogger:
    def __init__(self, *, run_id: str, tracking_uri: str | None = None, flush_interval_s: float = 2.0):
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_interval = flush_interval_s
        self._closed = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainyard-mlflow", daemon=True)
        self._thread.start()

    # -- params, tags, artifacts: rare, synchronous
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(str(k)[:250], str(v)[:MAX_PARAM_VALUE]) for k, v in flat.items()]
        existing = self._existing_params()
        # a restarted worker group logs the same params again; MLflow rejects re-logging
        # a key, even with the same value, inside one batch on some backends
        items = [p for p in items if existing.get(p.key) != p.value]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._safe(self.client.log_batch, self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def _existing_params(self) -> dict[str, str]:
        try:
            return dict(self.client.get_run(self.run_id).data.params)
        except Exception:
            return {}

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        if items:
            self._safe(self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        self._safe(self.client.log_artifact, self.run_id, path, artifact_path)

    # -- metrics: frequent, queued
    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        ts = int(time.time() * 1000)
        for key, value in metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            self._queue.put((str(key), value, ts, int(step)))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far has been sent."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        self._closed.set()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        from mlflow.entities import Metric

        pending: list = []
        last = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self._flush_interval)
            except queue.Empty:
                item = ...
            if item is None:
                self._send(pending)
                return
            if isinstance(item, threading.Event):
                self._send(pending)
                pending = []
                item.set()
                continue
            if item is not ...:
                pending.append(Metric(*item))
            if len(pending) >= MAX_BATCH or (pending and time.monotonic() - last >= self._flush_interval):
                self._send(pending)
                pending = []
                last = time.monotonic()

    def _send(self, metrics: list) -> None:
        for i in range(0, len(metrics), MAX_BATCH):
            self._safe(self.client.log_batch, self.run_id, metrics=metrics[i:i + MAX_BATCH])

    @staticmethod
    def _safe(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # tracking must not kill training
            log.warning("MLflow call %s failed: %s", getattr(fn, "__name__", fn), exc)
            return None

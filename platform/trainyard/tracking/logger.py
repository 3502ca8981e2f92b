"""RunLogger: rank 0's logging into the job's MLflow run; tracking trouble never stops training.

Metrics go through MLflow's asynchronous logging (`log_batch(..., synchronous=False)`): the
training loop never waits on the tracking server (one log_metric call is ~12 ms, a
1000-metric batch ~0.15 s), and MLflow's logging thread merges what is queued into
`log_batch` calls of at most 1000 metrics. Every failure, raised at once or found when a
flush waits on the pending operations, is logged as a warning and swallowed: the model is
worth more than its curves.
"""
from __future__ import annotations

import concurrent.futures
import logging
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
    def __init__(self, *, run_id: str, tracking_uri: str | None = None, flush_timeout_s: float = 30.0):
        from mlflow.tracking import MlflowClient

        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._flush_timeout = flush_timeout_s
        self._pending: list = []  # RunOperations of metrics not yet known to be sent

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

    # -- metrics: frequent, asynchronous
    max_batch = MAX_BATCH

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self.log_metric_rows([(metrics, step)])

    def log_metric_rows(self, rows) -> None:
        """Several steps' metrics in as few log_batch calls as fit: rows of (metrics, step) or
        (metrics, step, timestamp_ms), the time each was taken (default now). Values that are
        not numbers are skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = []
        for metrics, step, *when in rows:
            ts = int(when[0]) if when else now
            for key, value in metrics.items():
                try:
                    items.append(Metric(str(key), float(value), ts, int(step)))
                except (TypeError, ValueError):
                    continue
        for i in range(0, len(items), MAX_BATCH):
            ops = self._safe(self.client.log_batch, self.run_id, metrics=items[i:i + MAX_BATCH], synchronous=False)
            if ops is not None:
                self._pending.append(ops)
        if len(self._pending) > MAX_BATCH:
            self._settle(timeout=0)

    def flush(self, timeout: float | None = None) -> None:
        """Wait (at most `timeout`, default flush_timeout_s) until every metric logged so far
        has been sent; what failed is logged. A tracking server that does not answer delays a
        flush by the timeout, never more."""
        self._settle(timeout=self._flush_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def _settle(self, *, timeout: float) -> None:
        """Drop the pending operations that are done (warning about failures); with a timeout,
        first wait that long for the rest."""
        futures = [f for ops in self._pending for f in getattr(ops, "_operation_futures", None) or []]
        if timeout and futures:
            concurrent.futures.wait(futures, timeout=timeout)
        still = []
        for ops in self._pending:
            op_futures = getattr(ops, "_operation_futures", None)
            if op_futures is None:  # another MLflow: only its own wait() is known to work
                self._safe(ops.wait)
                continue
            if not all(f.done() for f in op_futures):
                still.append(ops)
                continue
            for future in op_futures:
                if future.exception() is not None:
                    log.warning("MLflow call log_batch failed: %s", future.exception())
        if timeout and still:
            log.warning("MLflow: %d metric batch(es) still unsent after %.0f s", len(still), timeout)
        self._pending = still

    @staticmethod
    def _safe(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # tracking must not kill training
            log.warning("MLflow call %s failed: %s", getattr(fn, "__name__", fn), exc)
            return None

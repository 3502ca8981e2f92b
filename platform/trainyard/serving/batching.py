"""Request batching: stacked requests run as one predictor call.

How a family's requests stack is the family's own `Workload.batch` adapter (the contract's
BatchAdapter); this module only groups, chunks and splits. Pure (no ray): the Serve
replicas call `predict_batch` from their serve.batch method, and unit tests call it
directly to check that batched and unbatched predictions agree.
"""
from __future__ import annotations

from typing import Any

from trainyard.workload import BatchAdapter

__all__ = ["BatchAdapter", "adapter_of", "predict_batch", "split_response", "chunks"]


def adapter_of(workload) -> BatchAdapter | None:
    """The family's batch adapter, or None when its requests run one by one."""
    return getattr(workload, "batch", None)



def split_response(result: dict, counts: list[int]) -> list[dict]:
    """Cut a batched response (lists per item) back into one response per request."""
    out: list[dict] = [{} for _ in counts]
    for key, value in result.items():
        start = 0
        for i, n in enumerate(counts):
            out[i][key] = value[start:start + n] if isinstance(value, list) else value
            start += n
    return out


def chunks(idx: list[int], counts: list[int], limit: int) -> list[list[int]]:
    """Consecutive runs of requests whose items add up to at most `limit` (at least one each)."""
    out: list[list[int]] = []
    total = 0
    for i, n in zip(idx, counts):
        if out and total + n <= limit:
            out[-1].append(i)
            total += n
        else:
            out.append([i])
            total = n
    return out


def predict_batch(requests: list[tuple[Any, Any]]) -> list:
    """[(loaded version, items)] -> one result (or the exception) per request.

    `loaded` has .adapter, .hparams and .predict(payload). Requests of the same version
    are stacked (in chunks of at most adapter.max_items) and run as one predictor call."""
    results: list[Any] = [None] * len(requests)
    groups: dict[int, list[int]] = {}
    for i, (loaded, _) in enumerate(requests):
        groups.setdefault(id(loaded), []).append(i)
    for same_version in groups.values():
        loaded = requests[same_version[0]][0]
        adapter = loaded.adapter
        counts = [len(requests[i][1]) for i in same_version]
        for idx in chunks(same_version, counts, adapter.max_items):
            items = [requests[i][1] for i in idx]
            try:
                merged = loaded.predict(adapter.merge(items, loaded.hparams))
                for i, part in zip(idx, split_response(merged, [len(it) for it in items])):
                    results[i] = part
            except Exception as exc:  # the batch failed: every request of it fails alike
                for i in idx:
                    results[i] = exc
    return results

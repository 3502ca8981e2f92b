"""Request batching: how a family's requests stack into one forward pass.

Pure (numpy and the families' own payload parsers; no ray): the Serve replicas call
`predict_batch` from their serve.batch method, and unit tests call it directly to check
that batched and unbatched predictions agree.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BatchAdapter", "BATCH_ADAPTERS", "predict_batch", "split_response", "chunks"]


class BatchAdapter:
    """How one family's requests stack into one forward pass (serve.batch).

    `items(payload, hparams)` validates one request into an array of N items (a SpecError
    here is that request's own 422), or returns None when the request cannot be stacked
    (it asks for a PNG grid, or for samples): it then runs alone. `merge(arrays, hparams)`
    is the one payload for the stacked items; the family answers lists per item, which
    `split_response` cuts back per request. `max_items` bounds one merged payload (the family's
    own limit on items per request).
    """

    def __init__(self, items, merge, max_items: int = 1 << 30):
        self.items, self.merge, self.max_items = items, merge, max_items


def _concat(arrays):
    import numpy as np

    return np.concatenate(arrays, axis=0)


def _cnn_items(payload: Any, hparams: dict):
    from workloads.cnn.workload import _images_from_payload

    return _images_from_payload(payload)  # (n, 1, 8, 8), already scaled; SpecError when malformed


def _scaled_images_merge(arrays, hparams: dict) -> dict:
    # the items are already divided by their own request's scale
    return {"inputs": _concat(arrays).reshape(-1, 8, 8), "scale": 1.0}


def _rnn_task(hparams: dict, default: str) -> str:
    from workloads.rnn.workload import _hparams

    return _hparams(hparams, task_default=default)["task"]


def _rnn_items(default_task: str):
    def items(payload: Any, hparams: dict):
        from workloads.common.images import check_keys, images_from_payload

        if _rnn_task(hparams, default_task) == "classify":
            check_keys(payload, ("inputs", "scale"))
            return images_from_payload(payload)  # (n, 1, 8, 8) in [0, 1]
        from workloads.rnn.workload import _hparams, _series_from_payload

        check_keys(payload, ("inputs",))
        window = int(_hparams(hparams, task_default=default_task)["window"])
        arr = _series_from_payload(payload, window)
        if arr.shape[1] < window:
            return None  # the family's own message (422) comes from running it alone
        return arr[:, -window:]  # the predictor reads only the last `window` values

    return items


def _rnn_merge(default_task: str):
    def merge(arrays, hparams: dict) -> dict:
        if _rnn_task(hparams, default_task) == "classify":
            return _scaled_images_merge(arrays, hparams)
        return {"inputs": _concat(arrays)}

    return merge


def _autoencoder_items(payload: Any, hparams: dict):
    from workloads.common.images import check_keys, images_from_payload

    check_keys(payload, ("inputs", "scale", "n", "seed", "png"))
    if "inputs" not in payload or "n" in payload or payload.get("png"):
        return None  # sampling, a PNG grid of this request's images, or an error: alone
    return images_from_payload(payload)


# family (Workload.name) -> how its requests stack. Requests of different versions never mix.
BATCH_ADAPTERS: dict[str, BatchAdapter] = {
    "cnn": BatchAdapter(_cnn_items, _scaled_images_merge),
    "rnn": BatchAdapter(_rnn_items("classify"), _rnn_merge("classify"), max_items=256),
    "rnn-forecast": BatchAdapter(_rnn_items("forecast"), _rnn_merge("forecast"), max_items=256),
    "autoencoder": BatchAdapter(_autoencoder_items, _scaled_images_merge, max_items=256),
}


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

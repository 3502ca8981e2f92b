"""The Ray Serve application of an endpoint. Imported only inside Serve (it imports ray.serve).

`build_app(args)` is the import_path of every endpoint application (see config.py):

    POST <route>/predict        the family's predictor, JSON in, JSON out
    GET  <route>/openapi.json   the family's request and response schema
    GET  <route>/-/stats        per-version counters and latency histograms (all replicas)
    GET  <route>/-/healthz      200 when every live version is loaded

Responses carry `x-trainyard-version` (the model version that answered) and
`x-trainyard-generation` (the traffic config the replica applied).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trainyard.errors import SpecError, TrainyardError
from trainyard.serving.stats import VersionStats, merge
from trainyard.serving.traffic import Traffic, WeightedPicker

log = logging.getLogger("trainyard.serving")

PUSH_INTERVAL_S = 0.5


def _json(body: Any, status: int = 200, headers: dict | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _error(exc: Exception) -> Response:
    if isinstance(exc, TrainyardError):
        return _json(exc.to_dict(), exc.status)
    return _json({"error": "predictor_error", "message": f"{type(exc).__name__}: {exc}"}, 500)


def _sub_path(request: Request) -> str:
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return "/" + path.strip("/")


# ----------------------------------------------------------------------------- one loaded version


class LoadedVersion:
    """A model version in memory, with the family's predictor (and batch adapter, if any)."""

    def __init__(self, uri: str, version: str):
        from trainyard.tracking.model import load_trainyard_model

        self.uri, self.version = uri, version
        self.workload, self.models, self.hparams = load_trainyard_model(uri)
        self.adapter = BATCH_ADAPTERS.get(self.workload.name)

    def predict(self, payload: Any) -> dict:
        return self.workload.predictor(self.models, payload, self.hparams)


def _cnn_items(payload: Any):
    from workloads.cnn.workload import _images_from_payload

    return _images_from_payload(payload)  # (n, 1, 8, 8), already scaled; SpecError when malformed


def _cnn_merge(items):
    import numpy as np

    stacked = np.concatenate(items, axis=0)
    return {"inputs": stacked.reshape(-1, 8, 8), "scale": 1.0}


# family -> (validate one payload into stackable items, merge items into one payload)
BATCH_ADAPTERS = {"cnn": (_cnn_items, _cnn_merge)}


def _split(result: dict, counts: list[int]) -> list[dict]:
    """Cut a batched response (lists per item) back into one response per request."""
    out: list[dict] = [{} for _ in counts]
    for key, value in result.items():
        start = 0
        for i, n in enumerate(counts):
            out[i][key] = value[start:start + n] if isinstance(value, list) else value
            start += n
    return out


# ----------------------------------------------------------------------------- stats collector


@serve.deployment(name="EndpointStats", num_replicas=1, ray_actor_options={"num_cpus": 0})
class EndpointStats:
    """Keeps the last cumulative snapshot of every replica (dead ones too, so sums never drop)."""

    def __init__(self):
        self._replicas: dict[str, dict] = {}
        self._ring: deque = deque(maxlen=120)

    def push(self, replica: str, generation: int, versions: dict, pid: int) -> None:
        self._replicas[replica] = {"generation": generation, "versions": versions, "time": time.time(),
                                   "pid": pid}
        now = time.time()
        if not self._ring or now - self._ring[-1][0] >= 1.0:
            self._ring.append((now, merge([r["versions"] for r in self._replicas.values()])))

    def get(self) -> dict:
        now = time.time()
        totals = merge([r["versions"] for r in self._replicas.values()])
        recent = {}
        # rates and latencies over (about) the last 10 s, from the ring of totals
        base = next(((t, s) for t, s in self._ring if now - t <= 11.0), None)
        if base is not None:
            span = max(now - base[0], 1e-3)
            for version, stats in totals.items():
                before = base[1].get(version) or VersionStats()
                window = VersionStats(stats.requests - before.requests, stats.errors - before.errors,
                                      stats.rejected - before.rejected, stats.fallbacks - before.fallbacks,
                                      [a - b for a, b in zip(stats.hist, before.hist)])
                recent[version] = {**window.summary(), "request_rate": round(window.requests / span, 3),
                                   "span_s": round(span, 2)}
        return {"time": now, "versions": {v: s.to_dict() for v, s in totals.items()},
                "summary": {v: s.summary() for v, s in totals.items()}, "recent": recent,
                "replicas": {k: {"generation": r["generation"], "age_s": round(now - r["time"], 2)}
                             for k, r in self._replicas.items()}}


# ----------------------------------------------------------------------------- the endpoint


class _Base:
    """Request routing, stats, traffic; shared by the in-replica split and the router."""

    def _init_base(self, stats, endpoint: str, family: str | None, fallback_on_error: bool):
        self._stats_handle = stats
        self._endpoint = endpoint
        self._family = family
        self._fallback = fallback_on_error
        self._traffic: Traffic | None = None
        self._picker: WeightedPicker | None = None
        self._counters: dict[str, VersionStats] = {}
        self._dirty = True
        self._pusher: asyncio.Task | None = None
        try:
            self._replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside Serve (unit use)
            self._replica_id = f"pid-{os.getpid()}"

    def _apply_traffic(self, traffic: Traffic) -> None:
        self._picker = WeightedPicker(traffic.weights)
        self._traffic = traffic
        for version in traffic.versions():
            self._counters.setdefault(version, VersionStats())
        self._dirty = True

    def _observe(self, version: str, started: float, **flags) -> None:
        self._counters.setdefault(version, VersionStats()).observe((time.perf_counter() - started) * 1e3, **flags)
        self._dirty = True

    def _ensure_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.get_running_loop().create_task(self._push_loop())

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(PUSH_INTERVAL_S)
            await self._push()

    async def _push(self) -> None:
        if not self._dirty or self._traffic is None:
            return
        self._dirty = False
        snapshot = {v: s.to_dict() for v, s in self._counters.items()}
        try:
            await self._stats_handle.push.remote(self._replica_id, self._traffic.generation, snapshot, os.getpid())
        except Exception as exc:  # stats must never break serving
            self._dirty = True
            log.warning("stats push failed: %s", exc)

    def _openapi(self) -> dict:
        from trainyard.serving.openapi import endpoint_openapi

        return endpoint_openapi(self._endpoint, self._family)

    async def __call__(self, request: Request) -> Response:
        self._ensure_pusher()
        path = _sub_path(request)
        if path == "/predict":
            if request.method != "POST":
                return _json({"error": "method_not_allowed", "message": "use POST"}, 405)
            try:
                payload = await request.json()
            except Exception:
                return _json(SpecError("the body must be a JSON object", field="body",
                                       fix='send e.g. {"inputs": [...]}').to_dict(), 422)
            return await self._predict(payload)
        if path == "/-/stats":
            await self._push()
            return _json(await self._stats_handle.get.remote())
        if path == "/-/healthz":
            ok = self._traffic is not None
            return _json({"ok": ok, "generation": self._traffic.generation if ok else None}, 200 if ok else 503)
        if path == "/openapi.json":
            return _json(self._openapi())
        return _json({"error": "not_found", "message": f"no route {path!r} on endpoint {self._endpoint!r}",
                      "fix": "POST /predict, GET /openapi.json"}, 404)

    async def _predict(self, payload: Any) -> Response:
        started = time.perf_counter()
        traffic = self._traffic  # one consistent view for this request
        version = self._picker.pick()
        try:
            result = await self._run(version, payload)
        except SpecError as exc:
            self._observe(version, started, rejected=True)
            return _json(exc.to_dict(), 422, self._headers(version, traffic))
        except Exception as exc:
            if self._fallback and version != traffic.stable:
                log.warning("version %s failed (%s); answered by stable %s", version, exc, traffic.stable)
                self._observe(version, started, error=True, fallback=True)
                started = time.perf_counter()
                try:
                    result = await self._run(traffic.stable, payload)
                except SpecError as exc2:
                    self._observe(traffic.stable, started, rejected=True)
                    return _json(exc2.to_dict(), 422, self._headers(traffic.stable, traffic))
                except Exception as exc2:
                    self._observe(traffic.stable, started, error=True)
                    return _error(exc2)
                self._observe(traffic.stable, started)
                return _json(result, 200, self._headers(traffic.stable, traffic))
            self._observe(version, started, error=True)
            return _error(exc)
        self._observe(version, started)
        return _json(result, 200, self._headers(version, traffic))

    @staticmethod
    def _headers(version: str, traffic: Traffic) -> dict:
        return {"x-trainyard-version": version, "x-trainyard-generation": str(traffic.generation)}


class _Batcher:
    """serve.batch over (version, items) pairs: one forward pass per version per batch."""

    def _init_batching(self, batching: dict):
        self._batching = bool(batching.get("enabled"))
        if self._batching:
            self._batched.set_max_batch_size(int(batching.get("max_batch_size", 16)))
            self._batched.set_batch_wait_timeout_s(float(batching.get("batch_wait_timeout_s", 0.0)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, requests: list[tuple]) -> list:
        results: list[Any] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, (loaded, _) in enumerate(requests):
            groups.setdefault(id(loaded), []).append(i)
        for idx in groups.values():
            loaded = requests[idx[0]][0]
            _, merge_items = loaded.adapter
            items = [requests[i][1] for i in idx]
            try:
                merged = loaded.predict(merge_items(items))
                for i, part in zip(idx, _split(merged, [len(it) for it in items])):
                    results[i] = part
            except Exception as exc:  # the batch failed: every request of it fails alike
                for i in idx:
                    results[i] = exc
        return results

    async def _predict_local(self, loaded: "LoadedVersion", payload: Any) -> dict:
        if self._batching and loaded.adapter is not None:
            items = loaded.adapter[0](payload)  # SpecError here is this request's own
            result = await self._batched((loaded, items))
            if isinstance(result, Exception):
                raise result
            return result
        return loaded.predict(payload)


class EndpointReplica(_Base, _Batcher):
    """split: replica. Every replica holds every live version; no extra hop."""

    def __init__(self, stats, endpoint: str, model: str, tracking_uri: str, family: str | None = None,
                 split: str = "replica", fallback_on_error: bool = True, batching: dict | None = None,
                 spec: dict | None = None, versions: list | None = None):
        _set_env(tracking_uri)
        self._init_base(stats, endpoint, family, fallback_on_error)
        self._init_batching(batching or {})
        self._models: dict[str, LoadedVersion] = {}

    def reconfigure(self, user_config: dict) -> None:
        traffic = Traffic.from_dict(user_config["traffic"])
        uris = user_config.get("uris") or {}
        # load what is new first: the replica keeps serving the old set meanwhile
        loaded = dict(self._models)
        for version in traffic.versions():
            uri = uris[version]
            if version not in loaded or loaded[version].uri != uri:
                loaded[version] = LoadedVersion(uri, version)
        self._models = loaded
        self._apply_traffic(traffic)
        # versions that left the config: nothing picks them any more; drop them
        self._models = {v: m for v, m in loaded.items() if v in traffic.weights}

    async def _run(self, version: str, payload: Any) -> dict:
        # looked up before the first await: a reconfigure cannot pull it away mid-request
        return await self._predict_local(self._models[version], payload)


class VersionModel(_Batcher):
    """split: deployments. One version per deployment (for models too large to hold twice)."""

    def __init__(self, tracking_uri: str, batching: dict | None = None):
        _set_env(tracking_uri)
        self._init_batching(batching or {})
        self._models: dict[str, LoadedVersion] = {}
        self._version: str | None = None

    def reconfigure(self, user_config: dict) -> None:
        version = str(user_config["version"])
        if self._version != version:
            self._models = {version: LoadedVersion(user_config["uri"], version)}
            self._version = version

    async def predict(self, payload: Any) -> dict:
        try:
            return await self._predict_local(self._models[self._version], payload)
        except SpecError as exc:  # keep the type across the handle: 422, not 500
            return {"__spec_error__": exc.to_dict()}


class Router(_Base):
    """split: deployments. Picks a version by weight and forwards through its handle."""

    def __init__(self, stats, endpoint: str, model: str, tracking_uri: str, family: str | None = None,
                 split: str = "deployments", fallback_on_error: bool = True, batching: dict | None = None,
                 spec: dict | None = None, versions: list | None = None, handles: dict | None = None):
        self._init_base(stats, endpoint, family, fallback_on_error)
        self._handles = dict(handles or {})

    def reconfigure(self, user_config: dict) -> None:
        self._apply_traffic(Traffic.from_dict(user_config["traffic"]))

    async def _run(self, version: str, payload: Any) -> dict:
        result = await self._handles[version].predict.remote(payload)
        if isinstance(result, dict) and "__spec_error__" in result:
            body = result["__spec_error__"]
            raise SpecError(body.get("message", "invalid"), field=body.get("field"), value=body.get("value"),
                            fix=body.get("fix"))
        return result


def _set_env(tracking_uri: str) -> None:
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:  # small models on shared CPUs: one intra-op thread per replica avoids oversubscription
        import torch

        torch.set_num_threads(int(os.environ.get("TRAINYARD_SERVE_TORCH_THREADS", "1")))
    except ImportError:
        pass


def build_app(args: dict):
    """Application builder (the import_path of every endpoint app)."""
    args = dict(args)
    stats = EndpointStats.bind()
    if args.get("split", "replica") == "replica":
        return serve.deployment(name="Endpoint")(EndpointReplica).bind(stats, **args)
    handles = {}
    for version in args.get("versions") or []:
        dep = serve.deployment(name=f"Version{version}")(VersionModel)
        handles[str(version)] = dep.bind(args["tracking_uri"], args.get("batching"))
    return serve.deployment(name="Router")(Router).bind(stats, handles=handles, **args)

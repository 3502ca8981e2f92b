"""The Ray Serve application of an endpoint. Imported only inside Serve (it imports ray.serve).

`build_app(args)` is the import_path of every endpoint application (see config.py):

    POST <route>/predict        the family's predictor, JSON in, JSON out
    GET  <route>/openapi.json   the family's request and response schema
    GET  <route>/-/stats        per-version counters and latency histograms (all replicas)
    GET  <route>/-/healthz      200 when every live version is loaded

Responses carry `x-trainyard-version` (the model version that answered) and
`x-trainyard-generation` (the traffic config the replica applied).

Who may call (serving/keys.py): unless the endpoint is public, every route but
`/-/healthz` needs `Authorization: Bearer <endpoint key>`: 401 without one, 403 with a wrong
or revoked one. That includes `/openapi.json`: the schema says which model family answers,
which is the endpoint owner's to share (the Trainyard server shows it to project members at
`GET /v1/endpoints/{name}/openapi.json`). A public endpoint serves `/predict` and
`/openapi.json` to anyone; its `/-/stats` still needs a key (the control plane's route).
`/-/healthz` is open everywhere: it says only whether the replica is ready.

`build_version_app(args)` is the import_path of one version's own application (split:
deployments); it has no HTTP route, only the endpoint's router calls it.
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
from trainyard.serving.batching import adapter_of, predict_batch
from trainyard.serving.keys import EndpointAuth
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
        self.adapter = adapter_of(self.workload)

    def predict(self, payload: Any) -> dict:
        return self.workload.predictor(self.models, payload, self.hparams)


# ----------------------------------------------------------------------------- stats collector


@serve.deployment(name="EndpointStats", num_replicas=1, ray_actor_options={"num_cpus": 0})
class EndpointStats:
    """Keeps the last cumulative snapshot of every replica (dead ones too, so sums never drop)."""

    def __init__(self):
        self._replicas: dict[str, dict] = {}
        self._ring: deque = deque(maxlen=120)

    def push(self, replica: str, generation: int, versions: dict, pid: int,
             oldest_in_flight: int | None = None) -> None:
        self._replicas[replica] = {"generation": generation, "versions": versions, "time": time.time(),
                                   "pid": pid, "oldest_in_flight": oldest_in_flight}
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
                "replicas": {k: {"generation": r["generation"], "age_s": round(now - r["time"], 2),
                                 "oldest_in_flight": r.get("oldest_in_flight")}
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
        self._auth = EndpointAuth()  # closed until the first user_config says otherwise
        self._picker: WeightedPicker | None = None
        self._counters: dict[str, VersionStats] = {}
        self._dirty = True
        self._pusher: asyncio.Task | None = None
        # requests in flight per traffic generation they were routed under: a version that
        # left the traffic at generation G has drained once nothing older than G is in flight
        self._in_flight: dict[int, int] = {}
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

    def _apply_auth(self, user_config: dict) -> None:
        self._auth = EndpointAuth.from_user_config(user_config.get("auth"))

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
        oldest = min(self._in_flight) if self._in_flight else None
        try:
            await self._stats_handle.push.remote(self._replica_id, self._traffic.generation, snapshot, os.getpid(),
                                                 oldest)
        except Exception as exc:  # stats must never break serving
            self._dirty = True
            log.warning("stats push failed: %s", exc)

    def _openapi(self) -> dict:
        from trainyard.serving.openapi import endpoint_openapi

        return endpoint_openapi(self._endpoint, self._family)

    async def __call__(self, request: Request) -> Response:
        self._ensure_pusher()
        path = _sub_path(request)
        if path != "/-/healthz":
            refused = self._auth.check(request.headers.get("authorization"), endpoint=self._endpoint,
                                       open_path=path in ("/predict", "/openapi.json"))
            if refused is not None:
                status, body = refused
                return _json(body, status, {"www-authenticate": "Bearer"})
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
        traffic = self._traffic  # one consistent view for this request
        generation = traffic.generation
        self._in_flight[generation] = self._in_flight.get(generation, 0) + 1
        try:
            # the traffic, picker and routes (models or handles) of one view: reconfigure
            # replaces them whole, so a request never sees half of a change
            return await self._predict_with(traffic, self._picker, self._routes(), payload)
        finally:
            left = self._in_flight[generation] - 1
            if left:
                self._in_flight[generation] = left
            else:
                del self._in_flight[generation]
            self._dirty = True

    async def _predict_with(self, traffic: Traffic, picker: WeightedPicker, routes: dict, payload: Any) -> Response:
        started = time.perf_counter()
        version = picker.pick()
        try:
            result = await self._run(routes, version, payload)
        except SpecError as exc:
            self._observe(version, started, rejected=True)
            return _json(exc.to_dict(), 422, self._headers(version, traffic))
        except Exception as exc:
            if self._fallback and version != traffic.stable:
                log.warning("version %s failed (%s); answered by stable %s", version, exc, traffic.stable)
                self._observe(version, started, error=True, fallback=True)
                started = time.perf_counter()
                try:
                    result = await self._run(routes, traffic.stable, payload)
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
        return predict_batch(requests)

    async def _predict_local(self, loaded: "LoadedVersion", payload: Any) -> dict:
        if self._batching and loaded.adapter is not None:
            items = loaded.adapter.items(payload, loaded.hparams)  # SpecError here is this request's own
            if items is not None:
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
        self._apply_auth(user_config)
        self._apply_traffic(traffic)
        # versions that left the config: nothing picks them any more; drop them
        self._models = {v: m for v, m in loaded.items() if v in traffic.weights}

    def _routes(self) -> dict:
        return self._models

    async def _run(self, routes: dict, version: str, payload: Any) -> dict:
        return await self._predict_local(routes[version], payload)


class VersionModel(_Batcher):
    """split: deployments. One version per Serve application (for models too large to hold twice)."""

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
    """split: deployments. Picks a version by weight and forwards to that version's app.

    Weights and the version -> application map come in user_config (no restart): the
    manager deploys a version's app and waits until it runs before giving it weight, and
    deletes it only after its weight is gone and the requests routed to it have drained.
    """

    def __init__(self, stats, endpoint: str, model: str, tracking_uri: str, family: str | None = None,
                 split: str = "deployments", fallback_on_error: bool = True, batching: dict | None = None,
                 spec: dict | None = None, **_ignored):
        self._init_base(stats, endpoint, family, fallback_on_error)
        self._handles: dict[str, tuple[str, Any]] = {}  # version -> (app name, handle)

    async def reconfigure(self, user_config: dict) -> None:
        traffic = Traffic.from_dict(user_config["traffic"])
        apps = user_config.get("apps") or {}
        handles = {}
        for version in traffic.versions():
            app = apps[version]
            known = self._handles.get(version)
            if known is not None and known[0] == app:
                handles[version] = known
            else:  # get_app_handle asks the controller (a blocking call): off the event loop
                handles[version] = (app, await asyncio.to_thread(serve.get_app_handle, app))
        # in-flight requests keep the handle they took; new ones see only the new set
        self._handles = handles
        self._apply_auth(user_config)
        self._apply_traffic(traffic)

    def _routes(self) -> dict:
        return self._handles

    async def _run(self, routes: dict, version: str, payload: Any) -> dict:
        result = await routes[version][1].predict.remote(payload)
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
    return serve.deployment(name="Router")(Router).bind(stats, **args)


def build_version_app(args: dict):
    """Application builder of one version's app (split: deployments)."""
    from trainyard.serving.config import VERSION_DEPLOYMENT

    return serve.deployment(name=VERSION_DEPLOYMENT)(VersionModel).bind(args["tracking_uri"], args.get("batching"))

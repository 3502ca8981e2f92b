"""Endpoints on a cluster: deploy, list, show, predict, delete, and traffic changes.

The cluster is the source of truth for an endpoint: its Serve application carries the
endpoint spec (in `args`) and the traffic split (in the deployment's `user_config`), so
the manager keeps no state of its own and a restarted server sees what runs.
Every traffic change is applied in steps that never route a request to a version that
is not loaded everywhere, nor remove a version that may still get new requests:
load (weight 0) -> shift weights -> drop the version that has drained.

split: deployments keeps each version in its own Serve application (config.py). A change
of the version set is then: deploy the new versions' apps and wait until they run; put
the new weights and version -> app map in the router's user_config (no restart) and wait
until every router replica applied it; wait until the router replicas have no request in
flight that was routed under an older split; delete the apps of the versions that left.

Endpoint keys (serving/keys.py) live in the same user_config ("auth"), so a key added or
revoked reaches every replica with no restart, through the same put-and-wait as a traffic
change. Every PUT of an endpoint app carries the keys as deployed at that moment (read and
written under one lock), so that a promotion that applies a traffic split it computed
earlier never drops a key created meanwhile; and a traffic generation only ever grows.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import tenacity

from trainyard.errors import ClusterError, ConflictError, NotFoundError, SpecError
from trainyard.serving.client import ServeClient, raise_for_endpoint
from trainyard.serving.config import (APP_IMPORT_PATH, ROUTE_ROOT, VERSION_DEPLOYMENT, VERSION_IMPORT_PATH,
                                      auth_of, build_app_config, build_version_app_config, merge_serve_config,
                                      route_prefix, version_app_name)
from trainyard.serving.keys import MAX_KEYS, EndpointAuth, hash_key, internal_key, new_key, server_secret
from trainyard.serving.traffic import Traffic
from trainyard.specs import EndpointSpec, parse_endpoint_spec

__all__ = ["EndpointManager", "EndpointState", "deploy_endpoint"]

log = logging.getLogger("trainyard.serving")


@dataclass
class EndpointState:
    name: str
    spec: EndpointSpec
    traffic: Traffic
    family: str | None
    status: str
    app: dict
    # split: deployments: version -> that version's Serve application (details, as listed)
    version_apps: dict = field(default_factory=dict)
    auth: EndpointAuth = field(default_factory=EndpointAuth)

    def replicas(self) -> dict[str, Any]:
        out = {}
        deployments = [(name, dep) for name, dep in (self.app.get("deployments") or {}).items()]
        for version, app in sorted(self.version_apps.items()):
            dep = (app.get("deployments") or {}).get(VERSION_DEPLOYMENT)
            if dep is not None:
                deployments.append((f"{VERSION_DEPLOYMENT}{version}", dep))
        for dep_name, dep in deployments:
            if dep_name == "EndpointStats":
                continue
            running = [r for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"]
            out[dep_name] = {"running": len(running), "target": dep.get("target_num_replicas"),
                             "status": dep.get("status")}
        return out


def _is_endpoint(app: Mapping) -> bool:
    cfg = app.get("deployed_app_config") or {}
    return cfg.get("import_path") == APP_IMPORT_PATH and str(cfg.get("route_prefix", "")).startswith(ROUTE_ROOT)


def _version_apps(name: str, apps: Mapping[str, Mapping]) -> dict[str, dict]:
    """The per-version applications of endpoint `name`: {version: app details}."""
    out = {}
    for app in apps.values():
        cfg = app.get("deployed_app_config") or {}
        args = cfg.get("args") or {}
        if cfg.get("import_path") == VERSION_IMPORT_PATH and args.get("endpoint") == name:
            out[str(args.get("version"))] = dict(app)
    return out


def _traffic_of(cfg: Mapping) -> Traffic:
    for dep in cfg.get("deployments") or []:
        user = dep.get("user_config") or {}
        if "traffic" in user:
            return Traffic.from_dict(user["traffic"])
    raise ClusterError(f"endpoint app {cfg.get('name')!r} has no traffic config", fix="redeploy it")


class EndpointManager:
    """Endpoints of one cluster. `registry` (trainyard.serving.registry.Registry) resolves versions."""

    def __init__(self, serve: ServeClient, registry=None, *, tracking_uri: str = "",
                 env: Mapping[str, str] | None = None, timeout: float = 180.0, key_secret: bytes | None = None):
        """`key_secret`: what the internal keys derive from (serving/keys.py); default the server's
        secret key, so that every manager of one Trainyard home reaches the endpoints it deployed."""
        self.serve = serve
        self.registry = registry
        self.tracking_uri = tracking_uri or (registry.tracking_uri if registry is not None else "")
        self.env = dict(env or {})
        self.timeout = timeout
        self._key_secret = key_secret
        # read-modify-PUT of an endpoint app (its keys, its generation) is one step per manager
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the server's own key
    def internal_key(self, name: str) -> str:
        if self._key_secret is None:
            self._key_secret = server_secret()
        return internal_key(self._key_secret, name)

    def auth_headers(self, name: str) -> dict[str, str]:
        """Headers for this manager's own requests to endpoint `name` on Serve's HTTP port."""
        return {"authorization": f"Bearer {self.internal_key(name)}"}

    # ------------------------------------------------------------------ reading
    def _apps(self, everything: Mapping | None = None) -> dict[str, dict]:
        everything = everything if everything is not None else self.serve.applications()
        return {name: app for name, app in everything.items() if _is_endpoint(app)}

    def get(self, name: str, *, apps: Mapping | None = None) -> EndpointState:
        """`apps`: every Serve application, as listed (one listing for many gets)."""
        everything = apps if apps is not None else self.serve.applications()
        apps = self._apps(everything)
        app = apps.get(name)
        if app is None:
            raise NotFoundError("endpoint", name, known=list(apps),
                                fix="list them with `trainyard endpoints list`")
        cfg = app["deployed_app_config"]
        args = cfg.get("args") or {}
        spec = EndpointSpec.model_validate(args.get("spec") or {"model": args.get("model"), "name": name})
        return EndpointState(name=name, spec=spec, traffic=_traffic_of(cfg), family=args.get("family"),
                             status=app.get("status", "UNKNOWN"), app=app,
                             version_apps=_version_apps(name, everything) if spec.split == "deployments" else {},
                             auth=EndpointAuth.from_user_config(auth_of(cfg)))

    def exists(self, name: str) -> bool:
        return name in self._apps()

    def list(self) -> list[dict]:
        everything = self.serve.applications()
        out = []
        for name in sorted(self._apps(everything)):
            state = self.get(name, apps=everything)
            out.append({"name": name, "model": state.spec.model, "project": state.spec.project,
                        "public": state.spec.public, "status": state.status,
                        "weights": dict(state.traffic.weights), "canary": state.traffic.canary,
                        "route": route_prefix(name), "url": self.url(name)})
        return out

    def url(self, name: str) -> str:
        return f"{self.serve.serve_url}{route_prefix(name)}/predict"

    def stats(self, name: str) -> dict:
        resp = self.serve.request("GET", f"{route_prefix(name)}/-/stats", headers=self.auth_headers(name))
        raise_for_endpoint(resp, name)
        return resp.json()

    def show(self, name: str) -> dict:
        state = self.get(name)
        try:
            stats = self.stats(name)
        except ClusterError:
            stats = {}
        versions = []
        for version in state.traffic.versions():
            total = (stats.get("summary") or {}).get(version, {})
            recent = (stats.get("recent") or {}).get(version, {})
            versions.append({
                "version": version, "weight": state.traffic.weights[version],
                "role": "stable" if version == state.traffic.stable else (
                    "canary" if version == state.traffic.canary else "draining"),
                "requests": total.get("requests", 0), "errors": total.get("errors", 0),
                "error_rate": total.get("error_rate"), "p50_ms": total.get("p50_ms"), "p99_ms": total.get("p99_ms"),
                "request_rate": recent.get("request_rate", 0.0), "recent_error_rate": recent.get("error_rate"),
                "recent_p50_ms": recent.get("p50_ms"), "recent_p99_ms": recent.get("p99_ms"),
            })
        family = state.family
        if family is None and self.registry is not None:  # deployed before the family was known
            try:
                family = self.registry.family(state.spec.model, state.traffic.stable)
            except Exception:
                family = None
        return {"name": name, "model": state.spec.model, "project": state.spec.project, "public": state.spec.public,
                "keys": len(state.auth.keys), "family": family, "status": state.status,
                "url": self.url(name), "split": state.spec.split, "generation": state.traffic.generation,
                "replicas": state.replicas(), "autoscaling": state.spec.autoscaling.model_dump(),
                "versions": versions}

    # ------------------------------------------------------------------ writing
    def _put(self, apps: Mapping | Iterable[Mapping] | None, *, remove: str | Iterable[str] | None = None) -> None:
        with self._lock:  # a PUT replaces every app: never between another PUT's read and write
            current = self.serve.current_config()
            config = merge_serve_config(current, apps, http_host=self.serve.http_bind_host,
                                        http_port=self.serve.http_port, remove=remove)
            self.serve.put_config(config)

    def _app_config(self, spec: EndpointSpec, traffic: Traffic, family: str | None, keys: list) -> dict:
        auth = {"internal": hash_key(self.internal_key(spec.endpoint_name())), "keys": list(keys)}
        return build_app_config(spec, traffic=traffic, tracking_uri=self.tracking_uri, family=family,
                                env=self.env or None, auth=auth)

    def _put_endpoint(self, spec: EndpointSpec, traffic: Traffic, family: str | None, *,
                      extra: Iterable[Mapping] = (), keys: list | None = None) -> Traffic:
        """PUT the endpoint's own app (and `extra` apps); returns the traffic as put.

        `keys`: None keeps the keys deployed now. The generation put is above the deployed one,
        whatever the caller computed it from: replicas tell configs apart by it."""
        name = spec.endpoint_name()
        with self._lock:
            current = self.serve.current_config()
            deployed = next((a for a in current.get("applications") or [] if a.get("name") == name), None)
            if deployed is not None and deployed.get("import_path") == APP_IMPORT_PATH:
                if keys is None:
                    keys = list((auth_of(deployed) or {}).get("keys") or [])
                try:
                    now = _traffic_of(deployed).generation
                except ClusterError:
                    now = -1
                if now >= traffic.generation:
                    traffic = dataclasses.replace(traffic, generation=now + 1)
            app = self._app_config(spec, traffic, family, keys or [])
            self.serve.put_config(merge_serve_config(current, [app, *extra], http_host=self.serve.http_bind_host,
                                                     http_port=self.serve.http_port))
        return traffic

    def _version_app_config(self, spec: EndpointSpec, version: str, family: str | None) -> dict:
        return build_version_app_config(spec, version=version, tracking_uri=self.tracking_uri, family=family,
                                        env=self.env or None)

    def apply(self, state: EndpointState, traffic: Traffic, *, wait: bool = True) -> EndpointState:
        """Put a new traffic split on an endpoint; returns once every replica applied it."""
        if state.spec.split == "deployments":
            return self._apply_per_version(state, traffic, wait=wait)
        traffic = self._put_endpoint(state.spec, traffic, state.family)
        if wait:
            self._wait_applied(state.name, traffic.generation)
        return EndpointState(state.name, state.spec, traffic, state.family, "RUNNING", state.app,
                             auth=state.auth)

    def _wait_applied(self, name: str, generation: int) -> None:
        self.serve.wait_app(name, generation=generation, timeout=self.timeout)
        self._wait_replicas(name, generation)

    def _apply_per_version(self, state: EndpointState, traffic: Traffic, *, wait: bool = True) -> EndpointState:
        """split: deployments. New versions' apps first, then the router, then drained apps out.

        The waits in the first two steps are not optional: weight on a version whose app does
        not run yet, or an app deleted under requests, are exactly the failures to avoid."""
        name, spec, family = state.name, state.spec, state.family
        deployed = set(_version_apps(name, self.serve.applications()))
        added = [v for v in traffic.versions() if v not in deployed]
        leaving = sorted(deployed - set(traffic.versions()))
        # every version that stays is PUT again with the config it was built with: unchanged,
        # so Serve leaves it alone (a changed spec, e.g. autoscaling, updates it in place)
        staying = [self._version_app_config(spec, v, family) for v in sorted(deployed) if v in traffic.weights]
        if added:
            self._put([self._version_app_config(spec, v, family) for v in added] + staying)
            for version in added:
                self.serve.wait_app(version_app_name(name, version), timeout=self.timeout)
        traffic = self._put_endpoint(spec, traffic, family, extra=staying)
        self._wait_applied(name, traffic.generation)
        if leaving:
            self._wait_drained(name, traffic.generation)
            self._put(None, remove=[version_app_name(name, v) for v in leaving])
            if wait:
                for version in leaving:
                    self.serve.wait_app(version_app_name(name, version), gone=True, timeout=self.timeout)
        return EndpointState(name, spec, traffic, family, "RUNNING", state.app, auth=state.auth)

    def _router_replicas(self, name: str) -> set[str]:
        app = self.serve.applications().get(name) or {}
        ids = set()
        for dep_name, dep in (app.get("deployments") or {}).items():
            if dep_name not in ("Endpoint", "Router"):  # the ones that hold the traffic split
                continue
            ids |= {r.get("replica_id") for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"}
        return ids

    def _wait_replicas(self, name: str, generation: int, timeout: float = 15.0) -> None:
        """Belt and braces over Serve's HEALTHY: every running replica reports `generation`."""
        if not self._poll_replicas(name, lambda r: r.get("generation", -1) >= generation, timeout):
            log.warning("endpoint %s: not every replica reported generation %s within %.0fs; "
                        "relying on Serve's HEALTHY status", name, generation, timeout)

    def _wait_drained(self, name: str, generation: int, timeout: float = 30.0) -> None:
        """Every router replica runs `generation` and has no request in flight that was routed
        under an older split (one that could still reach a version now leaving)."""
        def drained(r: Mapping) -> bool:
            oldest = r.get("oldest_in_flight")
            return r.get("generation", -1) >= generation and (oldest is None or oldest >= generation)

        if not self._poll_replicas(name, drained, timeout):
            log.warning("endpoint %s: requests routed before generation %s still in flight after %.0fs; "
                        "removing the old versions anyway", name, generation, timeout)

    def _poll_replicas(self, name: str, ok, timeout: float) -> bool:
        def all_ok() -> bool:
            ids = self._router_replicas(name)
            try:
                reported = self.stats(name).get("replicas") or {}
            except Exception:  # a replica mid-restart: ask again
                reported = {}
            return bool(ids) and all(i in reported and ok(reported[i]) for i in ids)

        return tenacity.Retrying(stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(0.1),
                                 retry=tenacity.retry_if_result(lambda done: not done),
                                 retry_error_callback=lambda _state: False)(all_ok)

    def deploy(self, spec: EndpointSpec | Mapping | str | Path | None = None, *, model: str | None = None,
               version: str | None = None, alias: str | None = None, project: str | None = None,
               public: bool | None = None, wait: bool = True) -> dict:
        """Create the endpoint, or move an existing one to `version` with zero downtime.

        Without a spec, an existing endpoint keeps its own (autoscaling, batching, ...);
        `project` and `public`, when given, override the spec's. An endpoint never changes
        project in place (its keys and its access are the project's)."""
        given_spec = spec is not None
        if spec is None:
            if model is None:
                raise SpecError("give a model name or an endpoint spec", field="model",
                                fix="trainyard endpoints deploy MODEL [--version V | --alias A]")
            spec = EndpointSpec(model=model)
        elif not isinstance(spec, EndpointSpec):
            spec = parse_endpoint_spec(spec)
        updates = {}
        if model is not None and model != spec.model:
            updates["model"] = model
        if version is not None or alias is not None:
            updates.update(version=str(version) if version is not None else None, alias=alias)
        overrides = {k: v for k, v in (("project", project), ("public", public)) if v is not None}
        updates.update(overrides)
        if updates:
            spec = EndpointSpec.model_validate({**spec.model_dump(mode="json"), **updates})
        if self.registry is None:
            raise SpecError("deploying needs the model registry (MLflow)", field="mlflow_uri",
                            fix="set TRAINYARD_MLFLOW_URI")
        target = self.registry.resolve(spec.model, version=spec.version, alias=spec.alias)
        family = self.registry.family(spec.model, target)
        name = spec.endpoint_name()
        everything = self.serve.applications()
        if name not in self._apps(everything):
            if name in everything:
                raise ConflictError(f"a Serve application named {name!r} that is not a Trainyard endpoint "
                                    "runs on this cluster", field="name", value=name,
                                    fix="give the endpoint another name (name: in the spec)")
            traffic = Traffic.single(target)
            if spec.split == "deployments":  # the version's app runs before the router may call it
                self._put(self._version_app_config(spec, target, family))
                self.serve.wait_app(version_app_name(name, target), timeout=self.timeout)
            traffic = self._put_endpoint(spec, traffic, family, keys=[])
            if wait:
                self.serve.wait_app(name, generation=traffic.generation, timeout=self.timeout)
            return {"name": name, "model": spec.model, "version": target, "url": self.url(name), "created": True}
        state = self.get(name, apps=everything)
        if not given_spec and overrides:
            spec = EndpointSpec.model_validate({**state.spec.model_dump(mode="json"), **overrides})
            given_spec = True
        if given_spec and spec.project != state.spec.project:
            raise ConflictError(f"endpoint {name!r} belongs to project {state.spec.project!r}, not "
                                f"{spec.project!r}", field="project", value=spec.project,
                                fix=f"deploy with project {state.spec.project!r}, or delete the endpoint and "
                                    f"deploy it again in project {spec.project!r}")
        if state.spec.model != spec.model:
            raise ConflictError(f"endpoint {name!r} serves model {state.spec.model!r}, not {spec.model!r}",
                                field="model", value=spec.model, fix="give this endpoint another name")
        if given_spec and spec.split != state.spec.split:
            raise ConflictError(f"endpoint {name!r} runs with split {state.spec.split!r}; it cannot change to "
                                f"{spec.split!r} in place", field="split", value=spec.split,
                                fix="deploy under another name, move the traffic, then delete this one")
        if state.traffic.canary is not None and target != state.traffic.stable:
            # deploying the stable version is allowed: it ends a stale canary (rollback by hand)
            raise ConflictError(f"endpoint {name!r} has a canary (version {state.traffic.canary}) under "
                                "observation", field="version", value=target,
                                fix=f"wait for the promotion to end, or deploy version {state.traffic.stable} "
                                    "to end the canary")
        if given_spec:
            state.spec = spec
        state.family = family
        self.switch(state, target, wait=wait)
        return {"name": name, "model": spec.model, "version": target, "url": self.url(name), "created": False}

    def switch(self, state: EndpointState, version: str, *, wait: bool = True) -> EndpointState:
        """All traffic to `version`, then drop the others once drained. Zero downtime."""
        traffic = state.traffic
        if version not in traffic.weights:
            traffic = Traffic({**traffic.weights, version: 0.0}, stable=traffic.stable, canary=traffic.canary,
                              generation=traffic.generation + 1)
            state = self.apply(state, traffic, wait=wait)  # load it everywhere, no traffic yet
        state = self.apply(state, state.traffic.shift_all_to(version), wait=wait)
        return self.drop_drained(state, wait=wait)

    def drop_drained(self, state: EndpointState, *, wait: bool = True) -> EndpointState:
        traffic = state.traffic
        for old in [v for v in traffic.versions() if traffic.weights[v] == 0.0]:
            traffic = traffic.without(old)
        if traffic.generation != state.traffic.generation:
            state = self.apply(state, traffic, wait=wait)
        return state

    def delete(self, name: str, *, wait: bool = True) -> None:
        everything = self.serve.applications()
        self.get(name, apps=everything)  # 404 when unknown
        versions = [version_app_name(name, v) for v in _version_apps(name, everything)]
        self._put(None, remove=[name, *versions])
        if wait:
            for app in [name, *versions]:
                self.serve.wait_app(app, gone=True, timeout=self.timeout)

    # ------------------------------------------------------------------ endpoint keys
    def keys(self, name: str) -> list[dict]:
        """The endpoint's keys: id, name, created_at (never the key, never its hash)."""
        return self.get(name).auth.listed()

    def create_key(self, name: str, key_name: str, *, wait: bool = True) -> dict:
        """A new key for endpoint `name`; the answer is the only place its text ever appears.
        Returns once every replica accepts it (with `wait`)."""
        with self._lock:
            state = self.get(name)
            keys = list(state.auth.keys)
            if len(keys) >= MAX_KEYS:
                raise ConflictError(f"endpoint {name!r} has {len(keys)} keys, the most it may have",
                                    field="keys", value=len(keys), fix="revoke keys that are no longer used")
            if any(k.get("name") == key_name for k in keys):
                raise ConflictError(f"endpoint {name!r} already has a key named {key_name!r}", field="name",
                                    value=key_name, fix="give the key another name, or revoke the old one first")
            key, record = new_key(key_name)
            generation = self._put_keys(state, [*keys, record])
        if wait:
            self._wait_applied(name, generation)
        return {"id": record["id"], "name": record["name"], "key": key, "created_at": record["created_at"]}

    def revoke_key(self, name: str, key_id: str, *, wait: bool = True) -> None:
        """Remove a key; returns once no replica accepts it any more (with `wait`)."""
        with self._lock:
            state = self.get(name)
            keys = list(state.auth.keys)
            if not any(k.get("id") == key_id for k in keys):
                raise NotFoundError("key", key_id, known=[k["id"] for k in keys],
                                    fix=f"list them with GET /v1/endpoints/{name}/keys")
            generation = self._put_keys(state, [k for k in keys if k.get("id") != key_id])
        if wait:
            self._wait_applied(name, generation)

    def _put_keys(self, state: EndpointState, keys: list) -> int:
        """The endpoint's app again with these keys and the next generation (so that the wait
        knows when every replica has them); weights, versions and args stay as they are."""
        traffic = dataclasses.replace(state.traffic, generation=state.traffic.generation + 1)
        return self._put_endpoint(state.spec, traffic, state.family, keys=keys).generation

    def predict(self, name: str, payload: Any) -> dict:
        resp = self.serve.request("POST", f"{route_prefix(name)}/predict", json=payload,
                                  headers=self.auth_headers(name))
        if resp.status_code == 404 and not self.exists(name):
            raise NotFoundError("endpoint", name, known=list(self._apps()))
        raise_for_endpoint(resp, name)
        return resp.json()


def deploy_endpoint(model: str, *, dashboard_url: str, token: str | None, tracking_uri: str,
                    http_port: int = 8000, version: str | None = None, alias: str | None = None,
                    spec: Mapping | str | Path | None = None) -> dict:
    """One call for scripts and `make demo`: deploy `model` (champion by default) and return its URL."""
    from trainyard.serving.registry import Registry

    with ServeClient(dashboard_url, token=token, http_port=http_port) as serve:
        manager = EndpointManager(serve, Registry(tracking_uri), tracking_uri=tracking_uri)
        return manager.deploy(spec, model=model, version=version, alias=alias)

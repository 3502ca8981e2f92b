"""The declarative Serve config of an endpoint (the body of PUT /api/serve/applications/).

One application per endpoint, named after it, at route_prefix /v1/endpoints/<name>:

- split "replica" (default): one deployment, `Endpoint`, whose replicas hold every live
  version and pick one per request by weight. Versions and weights live in `user_config`,
  so a canary, a promotion or a rollback reaches every replica in about 0.3 s, without a
  restart and without a second handle hop (which costs as much as the whole request here).
- split "deployments": for models too large to hold two of. Each version is its own
  Serve application (`<name>--v<version>`, no HTTP route, one `Version` deployment), and
  the endpoint app holds a `Router` ingress that forwards through an app handle. The
  router's weights and its version -> application map live in its `user_config`, so the
  endpoint app's code and args never change with the version set: Serve leaves it (and
  every version app that stays) alone when the config is PUT again. A version is added by
  deploying its app first and shifting weight once it runs; it is removed by taking its
  weight away, draining, then deleting its app. One extra hop per request.

A small `EndpointStats` deployment collects the replicas' counters (pushed off the
request path) and answers `GET <route>/-/stats`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from trainyard.serving.traffic import Traffic
from trainyard.specs import EndpointSpec

__all__ = ["APP_IMPORT_PATH", "VERSION_IMPORT_PATH", "VERSION_DEPLOYMENT", "ROUTE_ROOT", "route_prefix",
           "app_name", "version_app_name", "build_app_config", "build_version_app_config",
           "merge_serve_config", "family_batches", "model_uri", "auth_of"]

APP_IMPORT_PATH = "trainyard.serving.app:build_app"
VERSION_IMPORT_PATH = "trainyard.serving.app:build_version_app"
VERSION_DEPLOYMENT = "Version"
ROUTE_ROOT = "/v1/endpoints"


def route_prefix(name: str) -> str:
    return f"{ROUTE_ROOT}/{name}"


def app_name(name: str) -> str:
    return name


def version_app_name(name: str, version: str) -> str:
    """The Serve application of one version of endpoint `name` (split: deployments)."""
    return f"{name}--v{version}"


def model_uri(model: str, version: str) -> str:
    return f"models:/{model}/{version}"


def family_batches(family: str | None, spec: EndpointSpec) -> bool:
    """Batching is on by default for families with a batch adapter (their metadata says
    `batches`); requests an adapter cannot stack (a PNG grid, sampling) still run alone."""
    if spec.batching.enabled is not None:
        return spec.batching.enabled
    from trainyard.families import registered, static_meta

    meta = static_meta(family) if family in registered() else None
    return bool(meta is not None and meta.batches)


def _autoscaling(spec: EndpointSpec) -> dict:
    a = spec.autoscaling
    return {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
            "initial_replicas": max(a.min_replicas, 1),
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
            "metrics_interval_s": 0.5, "look_back_period_s": 2.0}


def _actor_options(spec: EndpointSpec) -> dict:
    opts: dict[str, Any] = {"num_cpus": spec.cpus_per_replica}
    if spec.gpus_per_replica:
        opts["num_gpus"] = spec.gpus_per_replica
    return opts


def _batching(spec: EndpointSpec, family: str | None) -> dict:
    return {"enabled": family_batches(family, spec), "max_batch_size": spec.batching.max_batch_size,
            "batch_wait_timeout_s": spec.batching.batch_wait_timeout_s}


def _auth(spec: EndpointSpec, auth: Mapping | None) -> dict:
    out = {"public": False, "internal": None, "keys": []}
    out.update(dict(auth or {}))
    out["public"] = spec.public  # the spec decides; the rest comes from the manager
    return out


def auth_of(app_config: Mapping) -> dict | None:
    """The "auth" user_config of a deployed endpoint app's config (None: deployed before keys)."""
    for dep in app_config.get("deployments") or []:
        user = dep.get("user_config") or {}
        if "traffic" in user:
            return user.get("auth")
    return None


def build_app_config(spec: EndpointSpec, *, traffic: Traffic, tracking_uri: str, family: str | None = None,
                     env: Mapping[str, str] | None = None, spec_json: Mapping | None = None,
                     auth: Mapping | None = None) -> dict:
    """One entry of `applications[]` for this endpoint (for split: deployments, its router app;
    the versions' own apps come from build_version_app_config).

    `auth`: who may call it (serving/keys.py EndpointAuth.to_user_config()); in user_config
    next to the traffic, so keys come and go without a restart. Without it the endpoint is
    closed to every request but public ones (when spec.public)."""
    name = spec.endpoint_name()
    args = {
        "endpoint": name, "model": spec.model, "tracking_uri": tracking_uri, "family": family,
        "split": spec.split, "fallback_on_error": spec.fallback_on_error,
        "batching": _batching(spec, family),
        # kept in the app so `endpoints list/show` can rebuild the spec from the cluster alone
        "spec": dict(spec_json if spec_json is not None else spec.model_dump(mode="json")),
    }
    deployments: list[dict] = [{"name": "EndpointStats", "num_replicas": 1,
                                "ray_actor_options": {"num_cpus": 0}}]
    if spec.split == "replica":
        user_config = {"traffic": traffic.to_dict(),
                       "uris": {v: model_uri(spec.model, v) for v in traffic.versions()},
                       "auth": _auth(spec, auth)}
        deployments.append({"name": "Endpoint", "autoscaling_config": _autoscaling(spec),
                            "max_ongoing_requests": spec.max_ongoing_requests,
                            "ray_actor_options": _actor_options(spec), "user_config": user_config})
    else:
        # nothing here depends on the version set but user_config: changing the set never
        # touches the router's code or args, so Serve never restarts it for that
        user_config = {"traffic": traffic.to_dict(),
                       "apps": {v: version_app_name(name, v) for v in traffic.versions()},
                       "auth": _auth(spec, auth)}
        deployments.append({"name": "Router", "user_config": user_config,
                            "autoscaling_config": {**_autoscaling(spec), "min_replicas": 1},
                            "max_ongoing_requests": spec.max_ongoing_requests * 4,
                            "ray_actor_options": {"num_cpus": 0}})
    app: dict[str, Any] = {"name": app_name(name), "route_prefix": route_prefix(name),
                           "import_path": APP_IMPORT_PATH, "args": args, "deployments": deployments}
    if env:
        app["runtime_env"] = {"env_vars": dict(env)}
    return app


def build_version_app_config(spec: EndpointSpec, *, version: str, tracking_uri: str, family: str | None = None,
                             env: Mapping[str, str] | None = None) -> dict:
    """split: deployments: the Serve application of one version (no HTTP route; the router
    reaches it through an app handle). Its config depends only on the spec and the version,
    so it stays byte-identical, and untouched by Serve, while other versions come and go."""
    name = spec.endpoint_name()
    version = str(version)
    args = {"endpoint": name, "model": spec.model, "version": version, "tracking_uri": tracking_uri,
            "family": family, "batching": _batching(spec, family)}
    app: dict[str, Any] = {
        "name": version_app_name(name, version), "route_prefix": None, "import_path": VERSION_IMPORT_PATH,
        "args": args,
        "deployments": [{"name": VERSION_DEPLOYMENT, "autoscaling_config": _autoscaling(spec),
                         "max_ongoing_requests": spec.max_ongoing_requests,
                         "ray_actor_options": _actor_options(spec),
                         "user_config": {"uri": model_uri(spec.model, version), "version": version}}]}
    if env:
        app["runtime_env"] = {"env_vars": dict(env)}
    return app


def merge_serve_config(current: Mapping | None, app: Mapping | Iterable[Mapping] | None, *, http_host: str,
                       http_port: int, remove: str | Iterable[str] | None = None) -> dict:
    """The full config to PUT: every other application as deployed, plus (or minus) ours.

    `app` is one application config or several; `remove` one name or several. PUT replaces
    the whole set of applications, so leaving one out deletes it; an application whose
    config is unchanged is left running as it is.
    """
    ours = [] if app is None else [dict(app)] if isinstance(app, Mapping) else [dict(a) for a in app]
    gone = set() if remove is None else {remove} if isinstance(remove, str) else set(remove)
    replaced = {a.get("name") for a in ours}
    others = []
    for entry in (current or {}).get("applications", []) or []:
        if entry.get("name") in replaced or entry.get("name") in gone:
            continue
        entry = dict(entry)
        if entry.get("import_path") == VERSION_IMPORT_PATH:
            # a version app has no HTTP route; were the key left out, Serve would default it to "/"
            entry["route_prefix"] = None
        others.append(entry)
    apps = others + ours
    return {"proxy_location": "HeadOnly",
            "http_options": {"host": http_host, "port": http_port, "keep_alive_timeout_s": 30},
            "applications": apps}

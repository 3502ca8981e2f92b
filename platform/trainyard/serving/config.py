"""The declarative Serve config of an endpoint (the body of PUT /api/serve/applications/).

One application per endpoint, named after it, at route_prefix /v1/endpoints/<name>:

- split "replica" (default): one deployment, `Endpoint`, whose replicas hold every live
  version and pick one per request by weight. Versions and weights live in `user_config`,
  so a canary, a promotion or a rollback reaches every replica in about 0.3 s, without a
  restart and without a second handle hop (which costs as much as the whole request here).
- split "deployments": one deployment per version plus a `Router` ingress that forwards
  through a handle. One extra hop per request, but a replica holds one model: for models
  too large to hold two of. Adding or removing a version changes the app's deployments.

A small `EndpointStats` deployment collects the replicas' counters (pushed off the
request path) and answers `GET <route>/-/stats`.
"""
from __future__ import annotations

from typing import Any, Mapping

from trainyard.serving.traffic import Traffic
from trainyard.specs import EndpointSpec

__all__ = ["APP_IMPORT_PATH", "ROUTE_ROOT", "route_prefix", "app_name", "build_app_config",
           "merge_serve_config", "family_batches", "model_uri"]

APP_IMPORT_PATH = "trainyard.serving.app:build_app"
ROUTE_ROOT = "/v1/endpoints"
# Families whose predictor takes {"inputs": [item, ...]} and answers lists per item, so that
# several requests can be stacked into one forward pass (serve.batch).
BATCHABLE_FAMILIES = frozenset({"cnn", "rnn"})


def route_prefix(name: str) -> str:
    return f"{ROUTE_ROOT}/{name}"


def app_name(name: str) -> str:
    return name


def model_uri(model: str, version: str) -> str:
    return f"models:/{model}/{version}"


def family_batches(family: str | None, spec: EndpointSpec) -> bool:
    if spec.batching.enabled is not None:
        return spec.batching.enabled
    return (family or "") in BATCHABLE_FAMILIES


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


def build_app_config(spec: EndpointSpec, *, traffic: Traffic, tracking_uri: str, family: str | None = None,
                     env: Mapping[str, str] | None = None, spec_json: Mapping | None = None) -> dict:
    """One entry of `applications[]` for this endpoint."""
    name = spec.endpoint_name()
    batching = family_batches(family, spec)
    args = {
        "endpoint": name, "model": spec.model, "tracking_uri": tracking_uri, "family": family,
        "split": spec.split, "fallback_on_error": spec.fallback_on_error,
        "batching": {"enabled": batching, "max_batch_size": spec.batching.max_batch_size,
                     "batch_wait_timeout_s": spec.batching.batch_wait_timeout_s},
        # kept in the app so `endpoints list/show` can rebuild the spec from the cluster alone
        "spec": dict(spec_json if spec_json is not None else spec.model_dump(mode="json")),
    }
    user_config = {"traffic": traffic.to_dict(),
                   "uris": {v: model_uri(spec.model, v) for v in traffic.versions()}}
    deployments: list[dict] = [{"name": "EndpointStats", "num_replicas": 1,
                                "ray_actor_options": {"num_cpus": 0}}]
    if spec.split == "replica":
        deployments.append({"name": "Endpoint", "autoscaling_config": _autoscaling(spec),
                            "max_ongoing_requests": spec.max_ongoing_requests,
                            "ray_actor_options": _actor_options(spec), "user_config": user_config})
    else:
        args["versions"] = traffic.versions()
        deployments.append({"name": "Router", "user_config": user_config,
                            "autoscaling_config": {**_autoscaling(spec), "min_replicas": 1},
                            "max_ongoing_requests": spec.max_ongoing_requests * 4,
                            "ray_actor_options": {"num_cpus": 0}})
        for version in traffic.versions():
            deployments.append({"name": f"Version{version}", "autoscaling_config": _autoscaling(spec),
                                "max_ongoing_requests": spec.max_ongoing_requests,
                                "ray_actor_options": _actor_options(spec),
                                "user_config": {"uri": model_uri(spec.model, version), "version": version}})
    app: dict[str, Any] = {"name": app_name(name), "route_prefix": route_prefix(name),
                           "import_path": APP_IMPORT_PATH, "args": args, "deployments": deployments}
    if env:
        app["runtime_env"] = {"env_vars": dict(env)}
    return app


def merge_serve_config(current: Mapping | None, app: Mapping | None, *, http_host: str, http_port: int,
                       remove: str | None = None) -> dict:
    """The full config to PUT: every other application as deployed, plus (or minus) ours.

    PUT replaces the whole set of applications, so leaving one out deletes it.
    """
    others = []
    for entry in (current or {}).get("applications", []) or []:
        if app is not None and entry.get("name") == app.get("name"):
            continue
        if remove is not None and entry.get("name") == remove:
            continue
        others.append(entry)
    apps = others + ([dict(app)] if app is not None else [])
    return {"proxy_location": "HeadOnly",
            "http_options": {"host": http_host, "port": http_port, "keep_alive_timeout_s": 30},
            "applications": apps}

"""Every Serve config the control plane builds is one Ray's own schema accepts.

serving/config.py builds the body of PUT /api/serve/applications/ as plain dicts (the control
plane never imports Ray). Ray validates it only once it reaches a cluster; this checks each kind
here, against ray.serve.schema.ServeDeploySchema, so that a key Ray renamed or a value it
refuses fails in the unit suite rather than on a deploy.
"""
from __future__ import annotations

import pytest

from trainyard.serving.config import (VERSION_IMPORT_PATH, build_app_config, build_version_app_config,
                                      merge_serve_config)
from trainyard.serving.traffic import Traffic
from trainyard.specs import EndpointSpec

schema = pytest.importorskip("ray.serve.schema")

# Ray 2.60 deprecates autoscaling_config.metrics_interval_s in favour of cluster-wide env vars;
# it still applies it, and the 0.5 s push is what lets a canary's replicas scale in time
pytestmark = pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning")

ENV = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}


def _spec(**kw) -> EndpointSpec:
    return EndpointSpec(model="digits", **kw)


def _unknown_keys(data: dict, model, where: str) -> list[str]:
    return [f"{where}.{k}" for k in data if k not in model.model_fields]


def _validate(config: dict):
    """Ray's own check, and two it leaves out: its schemas accept unknown keys (to stay forward
    compatible, so a renamed key would pass silently), and they keep `autoscaling_config` a plain
    dict (so min > max would pass)."""
    from ray.serve.config import AutoscalingConfig

    parsed = schema.ServeDeploySchema.model_validate(config)
    unknown = _unknown_keys(config, schema.ServeDeploySchema, "config")
    unknown += _unknown_keys(config.get("http_options") or {}, schema.HTTPOptionsSchema, "http_options")
    for app in config["applications"]:
        unknown += _unknown_keys(app, schema.ServeApplicationSchema, app["name"])
        for dep in app.get("deployments") or []:
            where = f"{app['name']}.{dep['name']}"
            unknown += _unknown_keys(dep, schema.DeploymentSchema, where)
            unknown += _unknown_keys(dep.get("ray_actor_options") or {}, schema.RayActorOptionsSchema,
                                     f"{where}.ray_actor_options")
            if dep.get("autoscaling_config") is not None:
                unknown += _unknown_keys(dep["autoscaling_config"], AutoscalingConfig, f"{where}.autoscaling_config")
                AutoscalingConfig.model_validate(dep["autoscaling_config"])
    assert not unknown, f"keys Ray's Serve schema does not know: {unknown}"
    return parsed


def _full(*apps, current=None, remove=None) -> dict:
    return merge_serve_config(current, list(apps), http_host="127.0.0.1", http_port=8123, remove=remove)


REPLICA = [
    dict(spec=_spec(), traffic=Traffic.single("1"), family="cnn", env=None),
    dict(spec=_spec(gpus_per_replica=1, autoscaling={"min_replicas": 0, "max_replicas": 4},
                    batching={"enabled": True, "max_batch_size": 16}),
         traffic=Traffic.single("1").with_canary("2", 0.1), family="cnn", env=ENV),
    dict(spec=_spec(name="forecast"), traffic=Traffic.single("3"), family=None, env=ENV),
]


@pytest.mark.parametrize("case", range(len(REPLICA)))
def test_replica_split_endpoint_config_is_a_valid_serve_config(case):
    kw = REPLICA[case]
    app = build_app_config(kw["spec"], traffic=kw["traffic"], tracking_uri="http://mlflow:5000",
                           family=kw["family"], env=kw["env"])
    parsed = _validate(_full(app))
    (parsed_app,) = parsed.applications
    assert parsed_app.name == app["name"] and parsed_app.route_prefix == app["route_prefix"]
    assert {d.name for d in parsed_app.deployments} == {"EndpointStats", "Endpoint"}


def test_deployments_split_router_and_version_apps_are_a_valid_serve_config():
    spec = _spec(name="big", split="deployments", autoscaling={"min_replicas": 1, "max_replicas": 2})
    traffic = Traffic.single("1").with_canary("2", 0.25)
    router = build_app_config(spec, traffic=traffic, tracking_uri="http://mlflow:5000", family="transformer", env=ENV)
    versions = [build_version_app_config(spec, version=v, tracking_uri="http://mlflow:5000", family="transformer",
                                         env=ENV) for v in ("1", "2")]
    parsed = _validate(_full(router, *versions))
    by_name = {a.name: a for a in parsed.applications}
    assert set(by_name) == {"big", "big--v1", "big--v2"}
    assert by_name["big--v1"].route_prefix is None  # reached through a handle only


def test_merged_config_with_what_is_deployed_and_a_removal_stays_valid():
    spec = _spec(name="big", split="deployments")
    v1 = build_version_app_config(spec, version="1", tracking_uri="http://mlflow:5000")
    # what Serve reports as deployed: a version app without its route_prefix key
    deployed = {k: v for k, v in v1.items() if k != "route_prefix"}
    other = build_app_config(_spec(name="other"), traffic=Traffic.single("4"), tracking_uri="http://mlflow:5000")
    current = {"applications": [deployed, other]}
    merged = _full(build_version_app_config(spec, version="2", tracking_uri="http://mlflow:5000"),
                   current=current, remove="other")
    parsed = _validate(merged)
    assert [a.name for a in parsed.applications] == ["big--v1", "big--v2"]
    assert all(a.import_path == VERSION_IMPORT_PATH and a.route_prefix is None for a in parsed.applications)


def test_the_check_catches_a_key_serve_does_not_know_and_a_bad_value():
    app = build_app_config(_spec(), traffic=Traffic.single("1"), tracking_uri="http://mlflow:5000")
    app["deployments"][1]["autoscaling_config"]["target_num_ongoing_requests_per_replica"] = 2
    with pytest.raises(AssertionError, match="Endpoint.autoscaling_config.target_num_ongoing_requests_per_replica"):
        _validate(_full(app))
    app = build_app_config(_spec(), traffic=Traffic.single("1"), tracking_uri="http://mlflow:5000")
    app["deployments"][1]["autoscaling_config"].update(min_replicas=3, max_replicas=1)
    with pytest.raises(Exception, match="max_replicas"):
        _validate(_full(app))
    app = build_app_config(_spec(), traffic=Traffic.single("1"), tracking_uri="http://mlflow:5000")
    app["deployments"][1]["max_ongoing_requests"] = "many"
    with pytest.raises(Exception, match="max_ongoing_requests"):
        _validate(_full(app))

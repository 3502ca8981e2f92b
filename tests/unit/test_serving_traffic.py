"""Traffic split, weighted pick, stats and the Serve config: pure logic, no Ray."""
from __future__ import annotations

from collections import Counter

import pytest

from trainyard.errors import ConflictError, SpecError
from trainyard.serving.config import (build_app_config, build_version_app_config, merge_serve_config, route_prefix,
                                      version_app_name)
from trainyard.serving.stats import VersionStats, diff, merge
from trainyard.serving.traffic import Traffic, WeightedPicker
from trainyard.specs import EndpointSpec


def test_canary_promote_and_drop_keep_weights_summing_to_one():
    t = Traffic.single("3")
    c = t.with_canary("4", 0.1)
    assert c.weights == {"3": pytest.approx(0.9), "4": pytest.approx(0.1)} and c.canary == "4"
    p = c.shift_all_to("4")
    assert p.weights == {"3": 0.0, "4": 1.0} and p.stable == "4" and p.canary is None
    assert p.without("3").weights == {"4": 1.0}
    assert [x.generation for x in (t, c, p, p.without("3"))] == [0, 1, 2, 3]


def test_rollback_returns_all_traffic_to_the_stable_version():
    c = Traffic.single("3").with_canary("4", 0.2)
    r = c.shift_all_to("3").without("4")
    assert r.weights == {"3": 1.0} and r.stable == "3" and r.canary is None


@pytest.mark.parametrize("weight", [0.0, 1.0, -0.1, 1.5])
def test_canary_weight_outside_open_interval_is_rejected(weight):
    with pytest.raises(SpecError) as err:
        Traffic.single("1").with_canary("2", weight)
    assert err.value.field == "canary_weight"


def test_cannot_remove_a_version_that_still_gets_traffic():
    with pytest.raises(ConflictError):
        Traffic.single("1").with_canary("2", 0.5).without("2")


def test_second_canary_is_refused_while_one_is_observed():
    with pytest.raises(ConflictError, match="already in canary"):
        Traffic.single("1").with_canary("2", 0.5).with_canary("3", 0.1)


def test_weights_must_sum_to_one_and_name_the_field():
    with pytest.raises(SpecError) as err:
        Traffic({"1": 0.5, "2": 0.2}, stable="1")
    assert err.value.field == "traffic.weights"


def test_wire_format_round_trips():
    c = Traffic.single("1").with_canary("2", 0.25)
    assert Traffic.from_dict(c.to_dict()) == c


def test_weighted_pick_follows_the_weights():
    picker = WeightedPicker({"1": 0.9, "2": 0.1, "3": 0.0}, seed=7)
    counts = Counter(picker.pick() for _ in range(20000))
    assert set(counts) == {"1", "2"}
    assert 0.08 < counts["2"] / 20000 < 0.12


def test_stats_merge_and_diff_give_window_quantiles():
    a = VersionStats()
    for ms in [1.0] * 98 + [50.0, 50.0]:
        a.observe(ms)
    b = VersionStats()
    b.observe(2.0, error=True)
    total = merge([{"1": a.to_dict()}, {"1": b.to_dict()}])["1"]
    assert total.requests == 101 and total.errors == 1
    assert total.quantile_ms(0.5) == pytest.approx(1.0, rel=0.07)
    assert total.quantile_ms(0.99) == pytest.approx(50.0, rel=0.07)
    window = diff({"1": total}, {"1": a})["1"]
    assert window.requests == 1 and window.errors == 1 and window.error_rate() == 1.0


def test_rejected_requests_do_not_count_as_errors():
    s = VersionStats()
    s.observe(1.0, rejected=True)
    s.observe(1.0)
    assert s.error_rate() == 0.0


def test_app_config_holds_versions_and_weights_in_user_config():
    spec = EndpointSpec(model="digits", autoscaling={"min_replicas": 1, "max_replicas": 3,
                                                     "target_ongoing_requests": 4})
    traffic = Traffic.single("1").with_canary("2", 0.1)
    app = build_app_config(spec, traffic=traffic, tracking_uri="http://mlflow", family="cnn")
    assert app["route_prefix"] == route_prefix("digits") == "/v1/endpoints/digits"
    endpoint = next(d for d in app["deployments"] if d["name"] == "Endpoint")
    assert endpoint["user_config"]["traffic"]["weights"] == {"1": pytest.approx(0.9), "2": pytest.approx(0.1)}
    assert endpoint["user_config"]["uris"] == {"1": "models:/digits/1", "2": "models:/digits/2"}
    auto = endpoint["autoscaling_config"]
    assert (auto["min_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (1, 3, 4)
    assert app["args"]["batching"]["enabled"] is True  # cnn batches by default


def test_per_version_split_keeps_the_version_set_out_of_the_router_apps_code_and_args():
    spec = EndpointSpec(model="big", split="deployments")
    one = build_app_config(spec, traffic=Traffic.single("1"), tracking_uri="x")
    two = build_app_config(spec, traffic=Traffic.single("1").with_canary("2", 0.5), tracking_uri="x")
    assert {d["name"] for d in two["deployments"]} == {"EndpointStats", "Router"}
    # what makes Serve restart an app (import_path, args, runtime_env) is the same for any version set
    assert all(one[k] == two[k] for k in ("import_path", "args", "route_prefix"))
    router = next(d for d in two["deployments"] if d["name"] == "Router")
    assert router["user_config"]["apps"] == {"1": version_app_name("big", "1"), "2": version_app_name("big", "2")}
    v2 = build_version_app_config(spec, version="2", tracking_uri="x", family="cnn")
    assert v2["name"] == "big--v2" and v2["route_prefix"] is None  # reached by handle only
    assert [d["name"] for d in v2["deployments"]] == ["Version"]
    assert v2["deployments"][0]["user_config"] == {"uri": "models:/big/2", "version": "2"}
    # a version's app does not depend on the other versions: it stays byte-identical
    assert v2 == build_version_app_config(spec, version="2", tracking_uri="x", family="cnn")


def test_merge_keeps_other_apps_and_replaces_ours():
    current = {"applications": [{"name": "other", "route_prefix": "/o"}, {"name": "digits", "old": True}]}
    new = {"name": "digits", "route_prefix": "/v1/endpoints/digits"}
    merged = merge_serve_config(current, new, http_host="127.0.0.1", http_port=8123)
    assert [a["name"] for a in merged["applications"]] == ["other", "digits"]
    assert "old" not in merged["applications"][1]
    assert merged["http_options"]["port"] == 8123
    gone = merge_serve_config(current, None, http_host="h", http_port=1, remove="digits")
    assert [a["name"] for a in gone["applications"]] == ["other"]
    several = merge_serve_config(current, [new, {"name": "digits--v2"}], http_host="h", http_port=1,
                                 remove=["other"])
    assert [a["name"] for a in several["applications"]] == ["digits", "digits--v2"]
    echoed = {"applications": [{"name": "x--v1", "import_path": "trainyard.serving.app:build_version_app"}]}
    kept = merge_serve_config(echoed, None, http_host="h", http_port=1)["applications"][0]
    assert "route_prefix" in kept and kept["route_prefix"] is None  # never Serve's default "/"

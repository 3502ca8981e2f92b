"""The price data: dated, to the cent, covering every instance type the cluster configs name."""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import yaml

from trainyard.clusters import launcher
from trainyard.costs.prices import PRICES_PATH, PriceTable, load_prices, node_prices
from trainyard.errors import SpecError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_every_instance_type_in_the_config_has_a_dated_price(provider):
    config = launcher.load_config(REPO / "cluster" / f"{provider}.yaml")
    prices = node_prices(config)
    assert set(prices) == set(config["available_node_types"])
    table = load_prices()
    as_of = dt.date.fromisoformat(table.as_of(provider))
    assert dt.date(2020, 1, 1) < as_of <= dt.date.today()
    assert table.age_days(provider, today=as_of + dt.timedelta(days=3)) == 3
    for name, price in prices.items():
        assert price.as_of == table.as_of(provider) and price.currency == "USD"
        assert price.per_hour > 0 and round(price.per_hour, 2) == price.per_hour
        assert price.market == ("spot" if name.endswith("-spot") else "on_demand")
    # a spot node is cheaper than its on-demand twin
    twins = [(n, n.removesuffix("-spot")) for n in prices if n.endswith("-spot")]
    assert twins and all(prices[s].per_hour < prices[o].per_hour for s, o in twins)


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_the_configs_comments_agree_with_the_price_data(provider):
    text = (REPO / "cluster" / f"{provider}.yaml").read_text()
    table = load_prices()
    header = re.search(r"# Prices as of (\d{4}-\d\d-\d\d), region ([\w-]+)", text)
    assert header, "the config must say its prices' date and region"
    assert header.group(1) == table.as_of(provider)
    assert header.group(2) == yaml.safe_load(PRICES_PATH.read_text())[provider]["region"]
    assert "platform/trainyard/costs/prices.yaml" in text
    priced = re.findall(r"(?:InstanceType|machineType): (\S+)  # ~?\$([\d.]+)/h (on demand|spot)", text)
    assert len(priced) == len(yaml.safe_load(text)["available_node_types"])
    for instance, amount, market in priced:
        assert table.lookup(provider, instance).per_hour(market.replace(" ", "_")) == float(amount)


def test_unknown_instance_type_is_a_clear_error():
    table = load_prices()
    with pytest.raises(SpecError) as info:
        table.lookup("aws", "g5.xlarg")
    assert info.value.field == "instance_type" and "did you mean 'g5.xlarge'" in str(info.value)
    assert "prices.yaml" in info.value.fix
    with pytest.raises(SpecError, match="provider"):
        table.lookup("azure", "Standard_ND96asr_v4")
    with pytest.raises(SpecError, match="no spot price") as info:
        table.lookup("aws", "p5.48xlarge").per_hour("spot")
    assert info.value.field.endswith("p5.48xlarge.spot")
    config = launcher.load_config(REPO / "cluster" / "aws.yaml")
    config["available_node_types"]["cpu"]["node_config"]["InstanceType"] = "m9z.huge"
    with pytest.raises(SpecError, match="available_node_types.cpu.node_config") as info:
        node_prices(config)
    assert "m9z.huge" in str(info.value)


def test_local_cluster_has_no_prices():
    assert node_prices(launcher.load_config(REPO / "cluster" / "local.yaml")) == {}


@pytest.mark.parametrize("data, field", [
    ({"aws": {"as_of": "June", "region": "r", "currency": "USD", "instances": {"a": {"on_demand": 1.0}}}},
     "aws.as_of"),
    ({"aws": {"as_of": "2024-06-01", "region": "r", "currency": "USD",
              "instances": {"a": {"on_demand": 1.005, "spot": None}}}}, "aws.instances.a.on_demand"),
    ({"aws": {"as_of": "2024-06-01", "region": "r", "currency": "USD",
              "instances": {"a": {"on_demand": -1, "spot": None}}}}, "aws.instances.a.on_demand"),
    ({"aws": {"as_of": "2024-06-01", "region": "r", "currency": "USD",
              "instances": {"a": {"on_demand": 1, "reserved": 0.5}}}}, "aws.instances.a"),
    ({"aws": {"as_of": "2024-06-01", "currency": "USD", "instances": {"a": {"on_demand": 1}}}}, "aws.region"),
])
def test_bad_price_data_names_the_field(data, field):
    with pytest.raises(SpecError) as info:
        PriceTable(data)
    assert any(issue.field == field for issue in info.value.issues), str(info.value)

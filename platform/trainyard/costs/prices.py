"""Hourly prices of instance types (prices.yaml, next to this module) and of a cluster's node types.

The cluster launcher configs cannot hold prices: Ray's schema refuses unknown keys at the top
level and in a node type. So the prices live in prices.yaml keyed by provider and instance type,
dated, and `node_prices` joins them with a config's node types (instance type from node_config,
spot or on-demand from its market options) into a price per node type.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from trainyard.errors import FieldIssue, SpecError, did_you_mean

__all__ = ["InstancePrice", "NodePrice", "PriceTable", "load_prices", "node_prices", "PRICES_PATH"]

PRICES_PATH = Path(__file__).with_name("prices.yaml")
MARKETS = ("on_demand", "spot")


@dataclass(frozen=True)
class InstancePrice:
    provider: str
    instance_type: str
    on_demand: float
    spot: float | None
    as_of: str
    region: str
    currency: str
    spot_approximate: bool

    def per_hour(self, market: str) -> float:
        if market not in MARKETS:
            raise SpecError(f"unknown market {market!r}", field="market", value=market,
                            fix=f"use one of {', '.join(MARKETS)}")
        if market == "spot":
            if self.spot is None:
                raise SpecError(
                    f"no spot price is recorded for {self.provider} {self.instance_type}",
                    field=f"{self.provider}.instances.{self.instance_type}.spot", value=None,
                    fix=f"add one to {PRICES_PATH.name} (with its date) or run it on demand")
            return self.spot
        return self.on_demand


@dataclass(frozen=True)
class NodePrice:
    """What one node of a cluster's node type costs an hour, and what it holds."""

    node_type: str
    instance_type: str
    market: str
    per_hour: float
    cpus: float
    gpus: float
    accelerator_type: str | None
    as_of: str
    currency: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PriceTable:
    def __init__(self, data: Mapping[str, Any], *, source: str = "prices"):
        self.source = source
        self._by_provider: dict[str, dict[str, InstancePrice]] = {}
        issues: list[FieldIssue] = []
        if not isinstance(data, Mapping) or not data:
            raise SpecError("must be a mapping of provider to prices", field=source, value=type(data).__name__)
        for provider, block in data.items():
            where = str(provider)
            if not isinstance(block, Mapping):
                issues.append(FieldIssue(where, "must be a mapping with as_of, region, currency, instances"))
                continue
            as_of = block.get("as_of")
            try:
                _dt.date.fromisoformat(str(as_of))
            except ValueError:
                issues.append(FieldIssue(f"{where}.as_of", "must be a date YYYY-MM-DD", as_of))
                continue
            for key in ("region", "currency"):
                if not isinstance(block.get(key), str) or not block.get(key):
                    issues.append(FieldIssue(f"{where}.{key}", "must be a non-empty string", block.get(key)))
            instances = block.get("instances")
            if not isinstance(instances, Mapping) or not instances:
                issues.append(FieldIssue(f"{where}.instances", "must map instance types to prices", instances))
                continue
            table: dict[str, InstancePrice] = {}
            for name, entry in instances.items():
                at = f"{where}.instances.{name}"
                if not isinstance(entry, Mapping) or set(entry) - set(MARKETS) or "on_demand" not in entry:
                    issues.append(FieldIssue(at, "must be {on_demand: <USD/h>, spot: <USD/h or null>}", entry))
                    continue
                values = {}
                for market in MARKETS:
                    value = entry.get(market)
                    if value is None and market == "spot":
                        values[market] = None
                    elif (isinstance(value, bool) or not isinstance(value, (int, float))
                          or not math.isfinite(value) or value <= 0):
                        issues.append(FieldIssue(f"{at}.{market}", "must be a positive number of "
                                                 f"{block.get('currency')} per hour", value))
                    elif round(value, 2) != value:
                        issues.append(FieldIssue(f"{at}.{market}", "list prices are recorded to the cent",
                                                 value, f"round it: {round(value, 2)}"))
                    else:
                        values[market] = float(value)
                if len(values) == 2:
                    table[str(name)] = InstancePrice(
                        provider=where, instance_type=str(name), on_demand=values["on_demand"],
                        spot=values["spot"], as_of=str(as_of), region=str(block.get("region")),
                        currency=str(block.get("currency")),
                        spot_approximate=bool(block.get("spot_approximate", True)))
            self._by_provider[where] = table
        if issues:
            raise SpecError(issues, source=source)

    @property
    def providers(self) -> list[str]:
        return sorted(self._by_provider)

    def as_of(self, provider: str) -> str:
        return next(iter(self._provider(provider).values())).as_of

    def age_days(self, provider: str, *, today: _dt.date | None = None) -> int:
        today = today or _dt.datetime.now(_dt.timezone.utc).date()
        return (today - _dt.date.fromisoformat(self.as_of(provider))).days

    def _provider(self, provider: str) -> dict[str, InstancePrice]:
        if provider not in self._by_provider:
            raise SpecError(f"no prices are recorded for provider {provider!r}."
                            f"{did_you_mean(str(provider), self._by_provider)}".rstrip(),
                            field="provider.type", value=provider,
                            fix=f"known: {', '.join(self.providers)}; add its prices to {PRICES_PATH.name}")
        return self._by_provider[provider]

    def lookup(self, provider: str, instance_type: str) -> InstancePrice:
        table = self._provider(provider)
        if instance_type not in table:
            raise SpecError(
                f"no price is recorded for {provider} instance type {instance_type!r}."
                f"{did_you_mean(str(instance_type), table)}".rstrip(),
                field="instance_type", value=instance_type,
                fix=f"add it to {PRICES_PATH.name} under {provider}.instances with its list price")
        return table[instance_type]

    def instance_types(self, provider: str) -> list[str]:
        return sorted(self._provider(provider))


@lru_cache(maxsize=1)
def load_prices(path: str | None = None) -> PriceTable:
    """The shipped price table (or the one at `path`), parsed and checked once."""
    source = Path(path) if path else PRICES_PATH
    return PriceTable(yaml.safe_load(source.read_text()), source=source.name)


def _instance_type(node_config: Mapping[str, Any]) -> str | None:
    # AWS names it InstanceType, GCP machineType (a bare name or a zonal URL ending in it)
    name = node_config.get("InstanceType") or node_config.get("machineType")
    return str(name).rsplit("/", 1)[-1] if name else None


def node_prices(config: Mapping[str, Any], *, table: PriceTable | None = None) -> dict[str, NodePrice]:
    """A price per node type of a cluster launcher config, head included.

    Spot node types (launcher's reading of the market options) are priced at the spot price;
    a node type whose instance type or spot price is not recorded is an error naming it, so
    that no job is ever costed at a guessed price. A config without a priced provider
    (the local fake cluster) gives an empty mapping: its jobs have no money cost.
    """
    from trainyard.clusters import launcher  # pure, torch-free; validates the node types

    table = table or load_prices()
    provider = str((config.get("provider") or {}).get("type", ""))
    if provider not in table.providers:
        return {}
    specs = config.get("available_node_types") or {}
    out: dict[str, NodePrice] = {}
    issues: list[FieldIssue] = []
    for node in launcher.node_types(config):
        name = node["name"]
        instance = _instance_type(specs[name].get("node_config") or {})
        market = "spot" if node["spot"] else "on_demand"
        at = f"available_node_types.{name}.node_config"
        if instance is None:
            issues.append(FieldIssue(at, "names no instance type (InstanceType or machineType)"))
            continue
        try:
            price = table.lookup(provider, instance)
            per_hour = price.per_hour(market)
        except SpecError as exc:
            issues.append(FieldIssue(at, str(exc), instance, exc.fix))
            continue
        out[name] = NodePrice(node_type=name, instance_type=instance, market=market, per_hour=per_hour,
                              cpus=float(node["resources"].get("CPU", 0)), gpus=float(node["gpus"]),
                              accelerator_type=node["accelerator_type"], as_of=price.as_of,
                              currency=price.currency)
    if issues:
        raise SpecError(issues, source=str(config.get("cluster_name", "cluster config")))
    return out

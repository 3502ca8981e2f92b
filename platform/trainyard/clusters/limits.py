"""`trainyard clusters add --config YAML | --max-resources JSON`: the cluster's largest shape.

Turned into the server's `max_resources` format ({"nodes": [{...}, ...]}, head first), which
the scheduler admits against (a job that could never fit is rejected, not queued forever)
and which marks the cluster as autoscaling for demand requests (trainyard.clusters.demand).
"""
from __future__ import annotations

import json
from typing import Any

from trainyard.errors import SpecError

__all__ = ["max_resources_from_args", "check_max_resources"]


def check_max_resources(value: Any, *, field: str = "--max-resources") -> dict:
    """Validate {"nodes": [{"CPU": 8, "GPU": 1}, ...]}; returns it with float amounts."""
    fix = 'give one object per node, e.g. \'{"nodes": [{"CPU": 2}, {"CPU": 8, "GPU": 1}]}\''
    if not isinstance(value, dict) or not isinstance(value.get("nodes"), list) or not value["nodes"]:
        raise SpecError('must look like {"nodes": [{"CPU": 8}, ...]} with at least one node',
                        field=field, value=value, fix=fix)
    nodes = []
    for i, node in enumerate(value["nodes"]):
        if not isinstance(node, dict):
            raise SpecError(f"nodes[{i}] must be an object of resource amounts, got {node!r}",
                            field=field, value=node, fix=fix)
        for key, amount in node.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise SpecError(f"nodes[{i}].{key} must be a number >= 0, got {amount!r}",
                                field=field, value=amount, fix=fix)
        nodes.append({str(k): float(v) for k, v in node.items()})
    return {**value, "nodes": nodes}


def max_resources_from_args(*, config: str | None = None, max_resources: str | None = None) -> dict | None:
    """From a launcher YAML (validated against Ray's schema) or a JSON string; None if neither."""
    if config:
        from trainyard.clusters.launcher import load_config, max_nodes, validate_config

        data = load_config(config)
        validate_config(data)
        out = {**check_max_resources(max_nodes(data), field="--config"), "source": str(config)}
        from trainyard.costs import node_prices

        prices = node_prices(data)  # {} for an unpriced provider (local); a missing price is an error
        if prices:
            out["prices"] = {name: p.to_dict() for name, p in prices.items()}
        return out
    if max_resources:
        try:
            value = json.loads(max_resources)
        except json.JSONDecodeError as exc:
            raise SpecError(f"is not valid JSON ({exc.msg} at column {exc.colno})", field="--max-resources",
                            value=max_resources, fix='e.g. \'{"nodes": [{"CPU": 8, "GPU": 1}]}\'') from None
        return check_max_resources(value)
    return None

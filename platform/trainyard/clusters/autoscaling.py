"""The most an autoscaling cluster can grow to, read from its Ray autoscaler config.

Ray's dashboard reports the nodes that exist now, not the ones the autoscaler may add. For
admission ("could this job ever fit?") and placement on an autoscaling cluster, the
scheduler needs the node types and their limits: `available_node_types` with `resources`
and `max_workers`, plus the head. Pure apart from reading the file.

The default cluster gets it from $TRAINYARD_RAY_AUTOSCALING_CONFIG, or, for the local stack
(`trainyard up --autoscaling`), from the config it rendered under <home>/cluster/.
Other clusters pass `max_resources` when they are registered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trainyard.config import Settings, home, read_stack
from trainyard.errors import SpecError

__all__ = ["max_nodes_from_config", "default_autoscaling_config"]


def max_nodes_from_config(config: Mapping[str, Any] | str | Path) -> list[dict[str, float]]:
    """One resource dict per node the cluster may have at most: the head, then every worker
    type up to its own max_workers (optimistic: the global max_workers is not split)."""
    if not isinstance(config, Mapping):
        import yaml

        path = Path(config)
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, ValueError) as exc:
            raise SpecError(f"cannot read the autoscaler config {str(path)!r}: {exc}",
                            field="TRAINYARD_RAY_AUTOSCALING_CONFIG", value=str(path)) from None
    types = config.get("available_node_types") or {}
    head_type = config.get("head_node_type")
    nodes: list[dict[str, float]] = []
    if head_type in types:
        nodes.append({k: float(v) for k, v in (types[head_type].get("resources") or {}).items()})
    global_max = int(config.get("max_workers", 0) or 0)
    for name, node_type in types.items():
        if name == head_type:
            continue
        count = int(node_type.get("max_workers", global_max) or 0)
        if global_max:
            count = min(count, global_max)
        resources = {k: float(v) for k, v in (node_type.get("resources") or {}).items()}
        nodes.extend(dict(resources) for _ in range(count))
    return nodes


def default_autoscaling_config(settings: Settings) -> str | None:
    """The autoscaler config of the default cluster, when it autoscales."""
    explicit = (settings.extra.get("ray_autoscaling_config") or settings.ray_autoscaling_config
                or Settings.from_env().ray_autoscaling_config)
    if explicit:
        return explicit
    ray = read_stack().get("ray") or {}
    if not ray.get("autoscaling") or ray.get("dashboard_url", "").rstrip("/") != settings.ray_dashboard_url.rstrip("/"):
        return None
    rendered = sorted((home() / "cluster").glob("*.yaml"), key=lambda p: p.stat().st_mtime)
    return str(rendered[-1]) if rendered else None

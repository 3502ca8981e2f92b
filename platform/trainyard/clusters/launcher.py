"""What a Ray cluster launcher config (cluster/*.yaml) offers the scheduler.

Pure functions over the parsed YAML: no Ray import, no I/O except `load_config`. The
scheduler uses them to learn a cluster's node types and the most it can ever grow to, so
that it can reject a job that could never fit instead of queueing it forever.

Resources convention (cluster/README.md): each node type lists, in integers, what Ray will
see on one node of it: CPU, GPU, and on GPU nodes `accelerator_type:<T>: 1` (the resource
Ray itself sets on a node with such a GPU). A job's worker asks for 0.001 of
`accelerator_type:<T>` (Ray Train's convention), so the accelerator resource never limits
how many workers share one node; the GPU count does.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Mapping

from trainyard.errors import FieldIssue, SpecError

__all__ = [
    "ACCELERATOR_PREFIX",
    "load_config",
    "schema_path",
    "validate_config",
    "node_types",
    "max_resources",
    "max_workers_placeable",
    "max_nodes",
]

ACCELERATOR_PREFIX = "accelerator_type:"
# tolerance for float resource requests such as 0.001 of an accelerator
_EPS = 1e-9


def load_config(path: str | Path) -> dict:
    """Read a launcher YAML into a dict."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError("file not found", field="cluster config", value=str(path),
                        fix="pass the path of a launcher YAML such as cluster/aws.yaml") from None
    if not isinstance(data, dict):
        raise SpecError("must be a YAML mapping", field="cluster config", value=str(path),
                        fix="see cluster/aws.yaml for the shape")
    return data


def schema_path() -> Path:
    """The JSON Schema (draft-07) that ships inside the installed ray package.

    Found without importing ray, which would cost a second at server start.
    """
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        raise SpecError("the ray package is not installed", field="ray", fix="pip install ray")
    return Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"


def validate_config(config: Mapping[str, Any]) -> None:
    """Check a launcher config against Ray's schema and our resources convention.

    Raises SpecError with one issue per problem.
    """
    import json

    import jsonschema

    schema = json.loads(schema_path().read_text())
    issues = [
        FieldIssue(".".join(str(p) for p in err.absolute_path) or "(top level)", err.message)
        for err in jsonschema.Draft7Validator(schema).iter_errors(dict(config))
    ]
    if not issues:
        try:
            node_types(config)
        except SpecError as exc:
            issues.extend(exc.issues)
    if issues:
        raise SpecError(issues, source=str(config.get("cluster_name", "cluster config")))


def node_types(config: Mapping[str, Any]) -> list[dict]:
    """The node types of a launcher config, as the scheduler reads them.

    Returns one dict per type, head first: name, resources (dict of numbers), min, max
    (the head is always exactly one), head (bool), gpus, accelerator_type (str or None),
    spot (bool).
    """
    available = config.get("available_node_types")
    if not isinstance(available, Mapping) or not available:
        raise SpecError("must list at least one node type", field="available_node_types",
                        value=available, fix="see cluster/aws.yaml")
    head = config.get("head_node_type")
    if head not in available:
        raise SpecError(f"{head!r} is not one of available_node_types",
                        field="head_node_type", value=head,
                        fix=f"use one of: {', '.join(available)}")
    issues: list[FieldIssue] = []
    result = []
    for name in sorted(available, key=lambda n: (n != head, list(available).index(n))):
        spec = available[name] or {}
        field = f"available_node_types.{name}"
        resources = dict(spec.get("resources") or {})
        for key, amount in resources.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount < 0:
                issues.append(FieldIssue(f"{field}.resources.{key}",
                                         f"must be a number >= 0, got {amount!r}", amount))
        accelerators = [k[len(ACCELERATOR_PREFIX):] for k in resources if k.startswith(ACCELERATOR_PREFIX)]
        gpus = resources.get("GPU", 0)
        if gpus and len(accelerators) != 1:
            issues.append(FieldIssue(
                f"{field}.resources", f"a GPU node type must name exactly one "
                f"'{ACCELERATOR_PREFIX}<T>' resource, got {accelerators or 'none'}", resources,
                f"add e.g. \"{ACCELERATOR_PREFIX}A100\": 1 (Ray's spelling of the GPU type)"))
        for acc in accelerators:
            if resources[f"{ACCELERATOR_PREFIX}{acc}"] != 1:
                issues.append(FieldIssue(f"{field}.resources.{ACCELERATOR_PREFIX}{acc}",
                                         "must be 1 (one per node, as Ray sets it)",
                                         resources[f"{ACCELERATOR_PREFIX}{acc}"]))
        if name == head:
            lo = hi = 1
        else:
            lo = spec.get("min_workers", 0)
            hi = spec.get("max_workers", config.get("max_workers", 0))
            if not isinstance(lo, int) or lo < 0:
                issues.append(FieldIssue(f"{field}.min_workers", f"must be an integer >= 0, got {lo!r}", lo))
            if not isinstance(hi, int) or hi < 0:
                issues.append(FieldIssue(f"{field}.max_workers", f"must be an integer >= 0, got {hi!r}", hi))
            elif isinstance(lo, int) and lo > hi:
                issues.append(FieldIssue(f"{field}.min_workers",
                                         f"min_workers ({lo}) must be <= max_workers ({hi})", lo))
        result.append({
            "name": name,
            "resources": resources,
            "min": lo,
            "max": hi,
            "head": name == head,
            "gpus": gpus,
            "accelerator_type": accelerators[0] if len(accelerators) == 1 else None,
            "spot": _is_spot(spec.get("node_config") or {}),
        })
    if issues:
        raise SpecError(issues, source=str(config.get("cluster_name", "cluster config")))
    return result


def _is_spot(node_config: Mapping[str, Any]) -> bool:
    """AWS InstanceMarketOptions.MarketType or GCP scheduling (SPOT / preemptible)."""
    market = (node_config.get("InstanceMarketOptions") or {}).get("MarketType")
    scheduling = node_config.get("scheduling") or {}
    if isinstance(scheduling, list):  # Ray's own GCP example writes a one-item list
        scheduling = {k: v for item in scheduling for k, v in item.items()}
    return (str(market).lower() == "spot"
            or str(scheduling.get("provisioningModel", "")).upper() == "SPOT"
            or bool(scheduling.get("preemptible")))


def _worker_cap(config: Mapping[str, Any], types: list[dict]) -> int:
    per_type = sum(t["max"] for t in types if not t["head"])
    cap = config.get("max_workers")
    return per_type if cap is None else min(per_type, cap)


def max_resources(config: Mapping[str, Any]) -> dict[str, float]:
    """The most of each resource the cluster can ever hold: head + workers at their maximum.

    The cluster-wide `max_workers` caps the number of workers, so for each resource the
    nodes richest in it are counted first (each type up to its own max). That bound is exact
    for one resource at a time; it does not say all of them are reachable together.
    """
    types = node_types(config)
    cap = _worker_cap(config, types)
    names = {k for t in types for k in t["resources"]}
    totals: dict[str, float] = {}
    for res in sorted(names):
        total = sum(t["resources"].get(res, 0) for t in types if t["head"])
        left = cap
        workers = sorted((t for t in types if not t["head"]), key=lambda t: -t["resources"].get(res, 0))
        for t in workers:
            take = min(t["max"], left)
            total += take * t["resources"].get(res, 0)
            left -= take
        totals[res] = total
    return totals


def max_workers_placeable(config: Mapping[str, Any], per_worker: Mapping[str, float]) -> int:
    """How many workers of one shape (a job's `resources.per_worker()`) the cluster can ever
    place at once, packing whole workers onto nodes. 0 means the job can never run there.

    Stricter than comparing totals with `max_resources`: 2 workers of 2 GPUs never fit on
    four 1-GPU nodes although the GPU total says 4.
    """
    types = node_types(config)
    cap = _worker_cap(config, types)

    def per_node(resources: Mapping[str, float]) -> int:
        fits = math.inf
        for key, need in per_worker.items():
            if need <= 0:
                continue
            fits = min(fits, math.floor(resources.get(key, 0) / need + _EPS))
        return 0 if fits == math.inf else int(fits)

    if not any(v > 0 for v in per_worker.values()):
        raise SpecError("a worker must ask for some resource", field="per_worker",
                        value=dict(per_worker), fix="ask for at least CPU > 0")
    total = sum(per_node(t["resources"]) for t in types if t["head"])
    left = cap
    for t in sorted((t for t in types if not t["head"]), key=lambda t: -per_node(t["resources"])):
        take = min(t["max"], left)
        total += take * per_node(t["resources"])
        left -= take
    return total


def max_nodes(config: Mapping[str, Any]) -> dict:
    """The cluster at its largest, one entry per node, in the shape the server stores for an
    autoscaling cluster (`max_resources` of `trainyard clusters add`):
    {"nodes": [{"CPU": 0}, {"CPU": 16}, ...]}, the head first.

    Every worker type counts at its own max_workers and the cluster-wide cap is left out: an
    upper bound, so that admission never rejects a job that could fit.
    """
    nodes = []
    for t in node_types(config):
        nodes.extend(dict(t["resources"]) for _ in range(t["max"]))
    return {"nodes": nodes}

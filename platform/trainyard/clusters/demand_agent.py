"""Runs on a cluster as a tiny Ray job: pass Trainyard's demand to the autoscaler.

    python -m trainyard.clusters.demand_agent '[{"CPU": 1, "gpu_node": 1}, ...]'
    python -m trainyard.clusters.demand_agent '[]'        # withdraw

The server talks to clusters only over REST and never imports ray's heavy modules, and
Ray has no REST route for `request_resources`; so the controller submits this module as a
Ray job (0 CPUs, on the head) through the Jobs API (trainyard.clusters.demand.DemandSender).
The request lives in the GCS (autoscaler v1: the `autoscaler_resource_request` KV key;
v2: the cluster resource constraint), so it outlives this driver and stays until the next
call replaces it. An empty list withdraws it, so that idle nodes can go.
"""
from __future__ import annotations

import json
import sys


def parse(argv: list[str]) -> list[dict[str, float]]:
    if len(argv) != 1:
        raise SystemExit("usage: python -m trainyard.clusters.demand_agent '<JSON list of bundles>'")
    bundles = json.loads(argv[0])
    if not isinstance(bundles, list) or not all(isinstance(b, dict) for b in bundles):
        raise SystemExit(f"bundles must be a JSON list of objects, got {argv[0]!r}")
    return [{str(k): float(v) for k, v in b.items()} for b in bundles]


def main(argv: list[str] | None = None) -> int:
    bundles = parse(sys.argv[1:] if argv is None else argv)
    import ray
    from ray.autoscaler.sdk import request_resources

    ray.init(address="auto", log_to_driver=False)
    try:
        # num_cpus=0 with an empty list clears both kinds of request (a bare CPU count too)
        request_resources(num_cpus=0, bundles=bundles)
    finally:
        ray.shutdown()
    print("TRAINYARD_DEMAND " + json.dumps({"bundles": bundles}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runs on a cluster as a tiny Ray job: pass Trainyard's demand to the autoscaler.

    python -m trainyard.clusters.demand_agent '[{"CPU": 1, "gpu_node": 1}, ...]'
    python -m trainyard.clusters.demand_agent '[]'        # withdraw

The server talks to clusters only over REST and never imports ray's heavy modules, and
Ray has no REST route for `request_resources`; so the controller submits this module as a
Ray job (0 CPUs, on the head) through the Jobs API (trainyard.clusters.demand.DemandSender).

Ray 2.60 has one writer of the cluster's resource request: `request_resources` *replaces*
the previous request, and Ray Train v2 (every TorchTrainer) and Ray Data register their
needs with a shared, detached actor, the AutoscalingCoordinator (namespace
"AutoscalingCoordinator"), which merges every requester's bundles and calls
`request_resources` with the union each time one of them changes. A plain call from here
would be overwritten by the next Train run and cleared when it ends (measured: a standing
request went to "(none)" while a cnn job trained). So the agent registers with the same
coordinator as requester "trainyard-demand" (priority MEDIUM, expiring after 7 days unless
renewed), and a withdrawal cancels that requester. The coordinator is detached, so the
request outlives this driver. Where the coordinator is missing (another Ray version), it
falls back to `ray.autoscaler.sdk.request_resources`, whose request the GCS also keeps.
"""
from __future__ import annotations

import json
import sys

REQUESTER_ID = "trainyard-demand"
EXPIRE_AFTER_S = 7 * 24 * 3600


def parse(argv: list[str]) -> list[dict[str, float]]:
    if len(argv) != 1:
        raise SystemExit("usage: python -m trainyard.clusters.demand_agent '<JSON list of bundles>'")
    bundles = json.loads(argv[0])
    if not isinstance(bundles, list) or not all(isinstance(b, dict) for b in bundles):
        raise SystemExit(f"bundles must be a JSON list of objects, got {argv[0]!r}")
    return [{str(k): float(v) for k, v in b.items()} for b in bundles]


def _through_coordinator(bundles: list[dict[str, float]]) -> bool:
    """Register (or cancel) our bundles with Ray's AutoscalingCoordinator; False if absent."""
    try:
        from ray.data._internal.cluster_autoscaler.base_autoscaling_coordinator import ResourceRequestPriority
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return False
    import ray

    coordinator = get_or_create_autoscaling_coordinator()
    if bundles:
        ray.get(coordinator.request_resources.remote(
            requester_id=REQUESTER_ID, resources=bundles, expire_after_s=EXPIRE_AFTER_S,
            priority=ResourceRequestPriority.MEDIUM), timeout=60)
    else:
        ray.get(coordinator.cancel_request.remote(REQUESTER_ID), timeout=60)
    return True


def main(argv: list[str] | None = None) -> int:
    bundles = parse(sys.argv[1:] if argv is None else argv)
    import ray

    ray.init(address="auto", log_to_driver=False)
    try:
        how = "coordinator" if _through_coordinator(bundles) else "request_resources"
        if how == "request_resources":
            from ray.autoscaler.sdk import request_resources

            # num_cpus=0 with an empty list clears both kinds of request (a bare CPU count too)
            request_resources(num_cpus=0, bundles=bundles)
    finally:
        ray.shutdown()
    print("TRAINYARD_DEMAND " + json.dumps({"bundles": bundles, "via": how}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

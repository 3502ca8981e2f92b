"""The fake multi-node provider, with a cloud's view of a lost instance.

Ray's FakeMultiNodeProvider keeps its nodes in a dict that only `terminate_node` empties. A
worker node whose raylet dies (SIGKILL, OOM, a spot reclaim simulated by killing its processes)
therefore stays listed forever, and the autoscaler never replaces it. Measured on Ray 2.60
(the monitor log of a head started from cluster/local.yaml, one of two `gpu-fake` nodes'
raylet killed, `request_resources` asking for both, nothing else running): for the next 90 s
the status showed "Active: 1 gpu-fake / Pending: ...00002: gpu-fake, uninitialized", the
totals still counted 2.0 gpu_node, "Pending Demands: (no resource demands)", and nothing was
launched. Two reasons, both in the fake cluster, not in Ray Train or Trainyard:

- the autoscaler tags the nodes it launches `uninitialized`, the fake provider's own
  `up-to-date` tag is overwritten by them, and with `disable_node_updaters` nothing ever moves
  them on (`set_node_tags` raises: read-only provider). The liveness check
  (`StandardAutoscaler.terminate_unhealthy_nodes`, AUTOSCALER_HEARTBEAT_TIMEOUT_S) skips any
  node that is not `up-to-date`, so a silent fake node is never terminated;
- the dead node, still listed, counts as a pending node that already satisfies the
  `request_resources` bundles, and gpu-fake's max_workers (2) is reached: no launch.

A cloud provider does not have this problem: a reclaimed instance leaves the cloud's instance
list, so `non_terminated_nodes` stops returning it and the autoscaler launches a replacement
for the demand that is still there. This provider does the same: a worker node whose raylet
process has exited is dropped from the list (and its other processes stopped) the next time
the autoscaler lists the nodes.

It can also hold new launches while a file exists (`provider.hold_launches_file`), the way a
spot pool has no capacity for a while after a reclaim; a launch waits for the file to go away,
at most `provider.hold_launches_max_s` (default 300) seconds. A test uses it to see the group
shrink before the replacement arrives, whatever the machine's speed.

`trainyard up --autoscaling` runs cluster/local.yaml through it: local_config (trainyard.local.
autoscaling) turns the template's fake_multinode provider into `{type: external, module:
trainyard.local.fake_provider.ReclaimingFakeProvider, ...}` with the same other keys; the head
still needs RAY_FAKE_CLUSTER=1. Only the autoscaler's monitor process imports this module.
"""
from __future__ import annotations

import logging
import os
import time

from ray._private import ray_constants

from trainyard.local.autoscaling import RECLAIMING_PROVIDER
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

__all__ = ["ReclaimingFakeProvider", "MODULE"]

MODULE = RECLAIMING_PROVIDER

logger = logging.getLogger(__name__)


def _raylet_exited(node) -> bool:
    """True when the fake node's raylet (a child of this process) is gone."""
    return any(kind == ray_constants.PROCESS_TYPE_RAYLET for kind, _ in node.dead_processes())


class ReclaimingFakeProvider(FakeMultiNodeProvider):
    """FakeMultiNodeProvider whose instance list loses a node when its raylet dies."""

    def __init__(self, provider_config, cluster_name):
        super().__init__(provider_config, cluster_name)
        self._hold_file = provider_config.get("hold_launches_file") or None
        self._hold_max_s = float(provider_config.get("hold_launches_max_s", 300))

    def _drop_reclaimed(self) -> None:
        for node_id, entry in list(self._nodes.items()):
            node = entry.get("node")  # the head's entry has none
            if node is None or not _raylet_exited(node):
                continue
            logger.warning("fake node %s: its raylet exited; the instance is gone (reclaimed)", node_id)
            self._nodes.pop(node_id)
            try:
                # what the raylet left behind (its agents, the log monitor): a reclaim takes all
                node.kill_all_processes(check_alive=False, allow_graceful=False, wait=False)
            except Exception:  # noqa: BLE001  (best effort: the instance is already gone)
                logger.exception("fake node %s: stopping its remaining processes failed", node_id)

    def non_terminated_nodes(self, tag_filters):
        with self.lock:
            self._drop_reclaimed()
            return super().non_terminated_nodes(tag_filters)

    def create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        # the autoscaler launches from a background thread: waiting here keeps the launch
        # pending (counted, not repeated), as a slow cloud would
        if self._hold_file and os.path.exists(self._hold_file):
            logger.info("launch held while %s exists (no capacity)", self._hold_file)
            deadline = time.monotonic() + self._hold_max_s
            while os.path.exists(self._hold_file) and time.monotonic() < deadline:
                time.sleep(0.5)
        return super().create_node_with_resources_and_labels(node_config, tags, count, resources, labels)

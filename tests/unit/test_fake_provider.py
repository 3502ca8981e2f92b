"""trainyard.local.fake_provider: a fake node whose raylet died leaves the provider's list (as a
reclaimed cloud instance does), so the autoscaler can replace it; launches wait while the
no-capacity file exists. Ray's fake nodes are stood in for: no process is started here."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("ray.autoscaler._private.fake_multi_node.node_provider")


class _Node:
    def __init__(self, raylet_alive: bool):
        self.raylet_alive, self.killed = raylet_alive, False

    def dead_processes(self):
        return [] if self.raylet_alive else [("raylet", object())]

    def kill_all_processes(self, **_):
        self.killed = True


def _provider(monkeypatch, **config):
    from ray.autoscaler.tags import TAG_RAY_NODE_KIND

    from trainyard.local.fake_provider import ReclaimingFakeProvider

    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
    provider = ReclaimingFakeProvider({"gcs_address": "127.0.0.1:1", **config}, "test")
    nodes = {"alive": _Node(True), "gone": _Node(False)}
    for name, node in nodes.items():
        provider._nodes[name] = {"tags": {TAG_RAY_NODE_KIND: "worker"}, "node": node}
    return provider, nodes


def test_a_node_whose_raylet_died_is_no_longer_listed(monkeypatch):
    provider, nodes = _provider(monkeypatch)
    listed = provider.non_terminated_nodes({})
    assert "gone" not in listed and "alive" in listed and provider._head_node_id in listed
    assert nodes["gone"].killed and not nodes["alive"].killed
    assert provider.is_terminated("gone")


def test_a_launch_waits_while_the_pool_has_no_capacity(monkeypatch, tmp_path):
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    hold = tmp_path / "no-capacity"
    hold.touch()
    provider, _ = _provider(monkeypatch, hold_launches_file=str(hold), hold_launches_max_s=30)
    launched = threading.Event()
    monkeypatch.setattr(FakeMultiNodeProvider, "create_node_with_resources_and_labels",
                        lambda self, *a: launched.set())
    worker = threading.Thread(target=provider.create_node_with_resources_and_labels, args=({}, {}, 1, {}, {}))
    worker.start()
    assert not launched.wait(0.8)  # two of the provider's polls: still held
    hold.unlink()
    worker.join(timeout=5)
    assert launched.is_set()

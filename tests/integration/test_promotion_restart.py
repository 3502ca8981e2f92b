"""A server SIGKILLed in a promotion's canary window: the next start rolls the canary back.

The real server process (`python -m trainyard.api`), a real local Ray head with Serve, a real
MLflow server. The decisions themselves are unit-tested in tests/unit/test_promotion_recovery.py.
"""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

# a window no test waits out: the promotion is still observing when the server dies
POLICY = {"canary_weight": 0.5, "window_s": 600, "max_wait_s": 1200, "gates": {"min_requests": 10}}
ENDPOINT = {"cpus_per_replica": 0.1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}


def test_a_promotion_cut_by_a_server_kill_is_rolled_back_when_the_server_starts_again(ray_head, mlflow_server,
                                                                                      test_root):
    from serving_support.models import digits, register_cnn
    from test_server import Server, wait_for

    from trainyard.local.processes import free_port
    from trainyard.serving.client import ServeClient
    from trainyard.serving.recovery import INTERRUPTED
    from trainyard.serving.registry import Registry

    port = free_port()
    env = {"TRAINYARD_MLFLOW_URI": mlflow_server, "TRAINYARD_SERVE_PORT": str(port)}
    srv = Server(test_root / "restart-server", ray_head)
    registry = Registry(mlflow_server)
    srv.start(**env)
    try:
        client = srv.client()
        v1 = register_cnn(mlflow_server, "digits-k", accuracy=0.5, seed=21)
        registry.set_alias("digits-k", "candidate", v1)
        first = client.promote_model("digits-k", policy=POLICY, endpoint=ENDPOINT, wait=True)
        assert first["state"] == "promoted", first  # v1: the champion (no canary: there was none)

        v2 = register_cnn(mlflow_server, "digits-k", accuracy=0.8, seed=22)
        registry.set_alias("digits-k", "candidate", v2)
        record = client.promote_model("digits-k", policy=POLICY, endpoint=ENDPOINT, wait=False)
        wait_for(lambda: "canary_started" in [e["kind"] for e in client.get_promotion(record["id"])["events"]],
                 timeout=240, what="the canary to start")
        weights = lambda: {v["version"]: v["weight"] for v in client.get_endpoint("digits-k")["versions"]}  # noqa: E731
        assert weights() == {v1: 0.5, v2: 0.5}

        srv.kill()  # SIGKILL mid-window: no shutdown hook runs
        srv.start(**env)
        client = srv.client()

        def rolled_back():
            events = client.model_history("digits-k")["events"]
            return events if events[-1]["kind"] == "rolled_back" else None

        try:
            events = wait_for(rolled_back, timeout=180, what="the interrupted promotion to be rolled back")
        except AssertionError:
            raise AssertionError((srv.root / "server.log").read_text()[-4000:]) from None
        last = events[-1]
        assert last["reason"] == INTERRUPTED and last["evidence"]["interrupted"] is True
        assert (last["candidate"], last["champion"]) == (v2, v1)
        assert [e["kind"] for e in events if e["promotion_run_id"] == last["promotion_run_id"]] == \
            ["compared", "canary_started", "rolled_back"]
        # the recovery logs the event, then closes the run: wait for the close, not just the event
        status = lambda: registry.client.get_run(last["promotion_run_id"]).info.status  # noqa: E731
        wait_for(lambda: status() == "FINISHED", timeout=60, what="the promotion run to be closed")
        assert status() == "FINISHED"
        history = client.model_history("digits-k")
        assert (history["champion"], history["candidate"]) == (v1, v2)  # retry possible as is

        assert weights() == {v1: 1.0}  # the canary is gone from the split...
        images, _ = digits(1)
        url = client.get_endpoint("digits-k")["url"]
        key = client._json("POST", "/v1/endpoints/digits-k/keys", json={"name": "check"})["key"]
        answered = {httpx.post(url, json={"inputs": images}, timeout=30,
                               headers={"Authorization": f"Bearer {key}"}).headers["x-trainyard-version"]
                    for _ in range(20)}
        assert answered == {v1}  # ...and from the replicas
    finally:
        srv.stop()
        with ServeClient(ray_head.dashboard_url, token=ray_head.token, http_port=port) as serve:
            serve.shutdown()  # the next module's Serve may use another HTTP port

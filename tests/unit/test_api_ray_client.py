"""The Ray dashboard REST client, on canned answers shaped like Ray 2.60's (httpx.MockTransport).
The real dashboard is exercised in tests/integration/test_server.py."""
from __future__ import annotations

import json

import httpx
import pytest

from trainyard.clusters.ray_client import RayClusterClient, SubmitRejected, package_name_for
from trainyard.errors import ClusterError

NODE_ID = "1326022119"
SUMMARY = {"result": True, "data": {"summary": [{"raylet": {
    "nodeId": NODE_ID, "state": "ALIVE",
    "resourcesTotal": {"CPU": 2.0, "memory": 1.7e10, "objectStoreMemory": 7.4e9, "node:192.0.2.2": 1.0,
                       "node:__internal_head__": 1.0, "gpu_node": 1.0}}},
    {"raylet": {"nodeId": "dead", "state": "DEAD", "resourcesTotal": {"CPU": 8.0}}}]}}
STATUS = {"result": True, "data": {"clusterStatus": {"loadMetricsReport": {"usageByNode": {
    NODE_ID: {"CPU": [1.5, 2.0], "memory": [0.0, 1.7e10], "gpu_node": [0.0, 1.0]}}}}}}
DUPLICATE = ("Traceback (most recent call last):\n  File ...\nValueError: Job with submission_id s-1 already "
             "exists. Please use a different submission_id.\n.\n")


def client_for(handler, token="ray-secret-token"):
    return RayClusterClient("local", "http://ray.test:8265", token, transport=httpx.MockTransport(handler))


def test_resources_per_alive_node_without_memory_and_node_keys():
    def handler(req):
        assert req.headers["authorization"] == "Bearer ray-secret-token"
        if req.url.path == "/nodes":
            return httpx.Response(200, json=SUMMARY)
        return httpx.Response(200, json=STATUS)

    nodes = client_for(handler).resources()["nodes"]
    assert nodes == [{"id": NODE_ID, "total": {"CPU": 2.0, "gpu_node": 1.0}, "free": {"CPU": 0.5, "gpu_node": 1.0}}]


def test_resources_before_the_first_usage_report_count_nodes_as_idle():
    def handler(req):
        if req.url.path == "/nodes":
            return httpx.Response(200, json=SUMMARY)
        return httpx.Response(200, json={"data": {"clusterStatus": {"loadMetricsReport": {"usage": {}}}}})

    assert client_for(handler).resources()["nodes"][0]["free"]["CPU"] == 2.0


def test_submit_sends_the_contract_and_treats_a_duplicate_as_the_same_job():
    seen = []

    def handler(req):
        seen.append(json.loads(req.content))
        if len(seen) == 1:
            return httpx.Response(200, json={"submission_id": "s-1"})
        return httpx.Response(500, text=DUPLICATE)

    c = client_for(handler)
    args = dict(submission_id="s-1", entrypoint="python -m trainyard.runner job --job-id j",
                runtime_env={"env_vars": {"A": "1"}}, metadata={"trainyard_attempt": 1})
    assert c.submit(**args) == "submitted"
    assert c.submit(**args) == "exists"
    assert seen[0]["submission_id"] == "s-1" and seen[0]["metadata"] == {"trainyard_attempt": "1"}


def test_refusal_names_the_reason_and_hides_secrets():
    def handler(req):
        return httpx.Response(400, text="Traceback ...\nValueError: bad env AWS_SECRET=hunter2-secret\n")

    with pytest.raises(SubmitRejected) as info:
        client_for(handler).submit(submission_id="s", entrypoint="x", secrets=["hunter2-secret"])
    assert "bad env" in str(info.value) and "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize("status,words", [(401, "no token"), (403, "does not accept")])
def test_auth_failures_never_show_the_token(status, words):
    with pytest.raises(ClusterError) as info:
        client_for(lambda req: httpx.Response(status, text="Unauthorized")).status("s")
    assert words in str(info.value) and "ray-secret-token" not in str(info.value)


def test_unknown_job_is_none_and_unreachable_is_a_cluster_error():
    c = client_for(lambda req: httpx.Response(404, text="Job s does not exist"))
    assert c.status("s") is None and c.logs("s") is None and c.stop("s") is False

    def down(req):
        raise httpx.ConnectError("refused")

    with pytest.raises(ClusterError, match="unreachable") as info:
        client_for(down).status("s")
    assert "trainyard status" in str(info.value)


def test_package_upload_is_content_addressed_and_skipped_when_present():
    calls = []
    data = b"PK\x05\x06" + b"\0" * 18
    name = package_name_for(data)

    def handler(req):
        calls.append((req.method, req.url.path))
        if req.method == "GET":
            return httpx.Response(404 if len(calls) == 1 else 200)
        assert req.content == data
        return httpx.Response(200)

    c = client_for(handler)
    assert c.upload_package(data) == f"gcs://{name}"
    assert c.upload_package(data) == f"gcs://{name}"
    assert calls == [("GET", f"/api/packages/gcs/{name}"), ("PUT", f"/api/packages/gcs/{name}"),
                     ("GET", f"/api/packages/gcs/{name}")]

"""The Jobs client and the Serve client share one dashboard client: the same auth errors, the
same redaction of Ray's answers, the same unreachable message."""
from __future__ import annotations

import httpx
import pytest

from trainyard.clusters.dashboard import DashboardRejected
from trainyard.clusters.ray_client import RayClusterClient
from trainyard.errors import ClusterError
from trainyard.serving.client import ServeClient

TOKEN = "ray-secret-token-123"


def _jobs(handler):
    return RayClusterClient("gpu", "http://ray.example:8265/", TOKEN, transport=httpx.MockTransport(handler))


def _serve(handler):
    return ServeClient("http://ray.example:8265/", token=TOKEN, name="gpu", transport=httpx.MockTransport(handler))


CALLS = {"jobs": lambda c: c.status("s-1"), "serve": lambda c: c.details()}
MAKERS = {"jobs": _jobs, "serve": _serve}


@pytest.mark.parametrize("kind", ["jobs", "serve"])
@pytest.mark.parametrize("status,words", [(401, "we sent no token"), (403, "a token it does not accept")])
def test_auth_failures_read_the_same_and_never_show_the_token(kind, status, words):
    seen = []

    def handler(req):
        seen.append(req.headers.get("authorization"))
        return httpx.Response(status, text=f"bad token {TOKEN}")

    with pytest.raises(ClusterError) as info:
        CALLS[kind](MAKERS[kind](handler))
    text = str(info.value)
    assert seen == [f"Bearer {TOKEN}"]
    assert words in text and "cluster 'gpu' at http://ray.example:8265" in text and TOKEN not in text
    assert "trainyard clusters add" in text


@pytest.mark.parametrize("kind", ["jobs", "serve"])
def test_refusals_keep_the_reason_and_redact_the_token(kind):
    def handler(req):
        return httpx.Response(500, text=f"Traceback (most recent call last):\n  ...\nValueError: {TOKEN} is odd\n")

    with pytest.raises(DashboardRejected) as info:
        CALLS[kind](MAKERS[kind](handler))
    text = str(info.value)
    assert "ValueError: *** is odd" in text and "(HTTP 500)" in text and TOKEN not in text


@pytest.mark.parametrize("kind", ["jobs", "serve"])
def test_unreachable_names_the_cluster_and_the_fix(kind):
    def handler(req):
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(ClusterError, match="unreachable") as info:
        CALLS[kind](MAKERS[kind](handler))
    assert "cluster 'gpu'" in str(info.value) and "trainyard status" in str(info.value)

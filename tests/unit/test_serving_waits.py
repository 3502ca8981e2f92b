"""Waits and retries of the serving control plane (tenacity): what ends a wait at once, what
polls again, and what a timeout says."""
from __future__ import annotations

import httpx
import pytest

from trainyard.errors import ClusterError
from trainyard.serving.client import ServeClient
from trainyard.serving.service import ServingService


def _serve(answers: list[dict]):
    calls = []

    def handler(req):
        calls.append(req.url.path)
        body = answers[min(len(calls), len(answers)) - 1]
        return httpx.Response(200, json={"applications": body})

    return ServeClient("http://ray.example:8265", name="gpu", transport=httpx.MockTransport(handler)), calls


HEALTHY = {"status": "RUNNING", "deployments": {"Router": {"status": "HEALTHY"}}}
STARTING = {"status": "DEPLOYING", "deployments": {"Router": {"status": "UPDATING"}}}


def test_wait_app_polls_until_running_and_healthy():
    serve, calls = _serve([{}, {"ep": STARTING}, {"ep": HEALTHY}])
    assert serve.wait_app("ep", timeout=10, poll=0.001) == HEALTHY
    assert len(calls) == 3


def test_wait_app_stops_at_once_when_the_deploy_failed():
    serve, calls = _serve([{"ep": {"status": "DEPLOY_FAILED", "message": "ImportError: no module x"}}])
    with pytest.raises(ClusterError, match="failed to deploy.*ImportError"):
        serve.wait_app("ep", timeout=10, poll=0.001)
    assert len(calls) == 1


def test_wait_app_timeout_names_the_last_state():
    serve, _ = _serve([{"ep": STARTING}])
    with pytest.raises(ClusterError, match=r"was not running after 0s \(status DEPLOYING, deployments Router=UPDATING\)"):
        serve.wait_app("ep", timeout=0.05, poll=0.01)
    serve, _ = _serve([{}])
    assert serve.wait_app("ep", gone=True, timeout=1, poll=0.01) is None


def test_promotion_recovery_is_retried_while_records_fail_and_stops_when_they_do_not():
    service = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None), server_id="s1")
    answers = [[{"run_id": "a", "error": "MLflow not up"}], [{"run_id": "a", "action": "keep"}], []]
    calls = []

    def recover():
        calls.append(1)
        return answers[len(calls) - 1]

    service.recover_promotions = recover
    service.start_recovery(attempts=5, delay_s=0.001).join(5)
    assert len(calls) == 2 and service.recoveries == [{"run_id": "a", "action": "keep"}]
    assert service._recovered.is_set()

    calls.clear()
    service.recover_promotions = lambda: (calls.append(1), [{"error": "still down"}])[1]
    service.start_recovery(attempts=3, delay_s=0.001).join(5)
    assert len(calls) == 3 and service._recovered.is_set()  # gave up after the last attempt

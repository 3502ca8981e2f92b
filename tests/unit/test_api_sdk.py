"""The SDK against the app in-process: errors come back typed, helpers behave."""
from __future__ import annotations

import zipfile
import io

import pytest

from trainyard import errors as E
from trainyard.sdk import Client, zip_folder

from test_api import TOKEN, server, spec  # noqa: F401  (fixture)


@pytest.fixture()
def sdk(server):  # noqa: F811
    client, ctx, fakes = server
    sdk = Client(url="http://testserver", token=TOKEN)
    sdk._http = client  # the TestClient is an httpx.Client bound to the app
    return sdk, ctx, fakes


def test_errors_are_rebuilt_as_the_same_types(sdk):
    client, _, _ = sdk
    with pytest.raises(E.SpecError) as info:
        client.submit_job(spec(resources={"workers": 0}))
    assert info.value.field == "resources.workers" and info.value.status == 422
    with pytest.raises(E.CapacityError) as info:
        client.submit_job(spec(resources={"workers": 8}))
    assert "largest cluster, 'local', has 2" in str(info.value)
    with pytest.raises(E.NotFoundError):
        client.get_job("nope-000000")
    client._http.headers["Authorization"] = "Bearer wrong"
    with pytest.raises(E.AuthError) as info:
        client.status()
    assert info.value.status == 401


def test_submit_wait_and_progress(sdk, tmp_path):
    client, ctx, fakes = sdk
    path = tmp_path / "job.yaml"
    path.write_text("name: mnist\nworkload: cnn\ntraining: {max_steps: 2}\n")
    job = client.submit_job(str(path))
    ctx.controller.tick()
    fakes["local"].set(fakes["local"].submissions[0]["submission_id"], "SUCCEEDED",
                       logs='TRAINYARD_RESULT {"metrics": {"accuracy": 1.0}}\n')
    ctx.controller.tick()
    seen = []
    final = client.wait_job(job.id, timeout=10, poll=0.01, on_progress=seen.append)
    assert final.state == "SUCCEEDED" and final.metrics == {"accuracy": 1.0}
    assert seen and [j.id for j in client.list_jobs(state="SUCCEEDED")] == [job.id]


def test_wait_times_out(sdk):
    client, _, _ = sdk
    job = client.submit_job(spec())
    with pytest.raises(TimeoutError):
        client.wait_job(job.id, timeout=0.05, poll=0.01)


def test_working_dir_is_zipped_relative_to_the_spec(sdk, tmp_path):
    client, ctx, fakes = sdk
    code = tmp_path / "code"
    (code / "__pycache__").mkdir(parents=True)
    (code / "mywork.py").write_text("WORKLOAD = None\n")
    (code / "__pycache__" / "x.pyc").write_bytes(b"\0")
    path = tmp_path / "job.yaml"
    path.write_text("name: own\nworkload: mywork:WORKLOAD\nworking_dir: code\n")
    client.submit_job(path)
    ctx.controller.tick()
    data = next(iter(fakes["local"].packages.values()))
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["mywork.py"]
    assert zip_folder(code) == zip_folder(code)  # deterministic: uploads once per content


def test_unreachable_server_says_how_to_fix_it():
    from trainyard.local.processes import free_port

    client = Client(url=f"http://127.0.0.1:{free_port()}", token="x")
    with pytest.raises(E.ClusterError) as info:
        client.status()
    assert "unreachable" in str(info.value) and "trainyard up" in str(info.value)


def test_no_stack_and_no_url(trainyard_home, monkeypatch):
    monkeypatch.delenv("TRAINYARD_URL", raising=False)
    with pytest.raises(E.ClusterError, match="trainyard up"):
        Client()


# ----------------------------------------------------------------------------- retries


class _LoseAnswers:
    """An httpx.Client stand-in: forwards to the app, then loses the first `n` answers."""

    def __init__(self, client, n, error=None):
        import httpx

        self.client, self.n, self.calls = client, n, []
        self.error = error or httpx.RemoteProtocolError("Server disconnected without sending a response.")

    def request(self, method, path, **kwargs):
        self.calls.append((method, path, dict(kwargs.get("headers") or {})))
        resp = self.client.request(method, path, **kwargs)
        if self.n > 0:
            self.n -= 1
            raise self.error
        return resp


def test_a_lost_answer_is_retried_with_the_same_key_and_creates_once(sdk):
    from test_api import row_count

    client, ctx, _ = sdk
    real = client._http
    client._http = _LoseAnswers(real, 2)
    job = client.submit_job(spec())
    keys = {headers["Idempotency-Key"] for _, _, headers in client._http.calls}
    assert len(client._http.calls) == 3 and len(keys) == 1
    assert row_count(ctx) == 1 and client.get_job(job.id).id == job.id
    client._http = _LoseAnswers(real, 1)
    second = client.submit_job(spec())  # a new logical request: a new key, a new job
    assert second.id != job.id and row_count(ctx) == 2


def test_unkeyed_posts_are_not_resent(sdk):
    client, ctx, _ = sdk
    job = client.submit_job(spec())
    client._http = _LoseAnswers(client._http, 1)
    with pytest.raises(E.ClusterError):
        client.cancel_job(job.id)
    assert len(client._http.calls) == 1


def test_cluster_token_file_is_read_by_the_client(sdk, tmp_path):
    client, ctx, fakes = sdk
    (tmp_path / "ray.token").write_text("cluster-secret\n")
    client.add_cluster("gpu", "http://ray.example:8265", token_file=str(tmp_path / "ray.token"), check=False)
    from trainyard.store import clusters as repo

    with ctx.db.session() as s:
        row = repo.get_cluster(s, "gpu")
        assert row.token == "cluster-secret" and row.token_file is None

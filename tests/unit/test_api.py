"""The REST API and the controller logic against a fake Ray cluster client (no Ray).

The fake stands in for the dashboard REST API only; the real one is exercised in
tests/integration/test_server.py.
"""
from __future__ import annotations

import base64
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient

from trainyard.api.app import create_app
from trainyard.clusters.ray_client import SubmitRejected
from trainyard.config import Settings
from trainyard.errors import ClusterError
from trainyard.store import jobs as jobs_repo

TOKEN = "unit-admin-token-123456"


class FakeRay:
    """Enough of the Ray dashboard REST API for the controller: one object per cluster."""

    def __init__(self, name, url, token, *, cpus=2.0):
        self.name, self.url, self.token = name, url, token
        self.jobs: dict[str, dict] = {}
        self.submissions: list[dict] = []
        self.packages: dict[str, bytes] = {}
        self.stops: list[str] = []
        self.cpus = cpus
        self.down = False

    def _check(self):
        if self.down:
            raise ClusterError(f"cluster '{self.name}' at {self.url} is unreachable (ConnectError)")

    def submit(self, *, submission_id, entrypoint, runtime_env=None, metadata=None,
               entrypoint_num_cpus=None, secrets=()):
        self._check()
        if submission_id in self.jobs:
            return "exists"
        self.submissions.append({"submission_id": submission_id, "entrypoint": entrypoint,
                                 "runtime_env": runtime_env, "metadata": metadata})
        self.jobs[submission_id] = {"status": "PENDING", "logs": "", "message": "",
                                    "start_time": 1_700_000_000_000, "end_time": None}
        return "submitted"

    def status(self, submission_id):
        self._check()
        job = self.jobs.get(submission_id)
        return None if job is None else dict(job)

    def logs(self, submission_id):
        self._check()
        job = self.jobs.get(submission_id)
        return None if job is None else job["logs"]

    def stop(self, submission_id):
        self._check()
        self.stops.append(submission_id)
        job = self.jobs.get(submission_id)
        if job and job["status"] in ("PENDING", "RUNNING"):
            job["status"] = "STOPPED"
            return True
        return False

    def upload_package(self, data):
        self._check()
        import hashlib

        name = f"_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"
        self.packages[name] = data
        return f"gcs://{name}"

    def resources(self):
        self._check()
        used = 0.0
        return {"nodes": [{"id": "n1", "total": {"CPU": self.cpus}, "free": {"CPU": self.cpus - used}}]}

    def version(self):
        self._check()
        return {"ray_version": "2.60.0"}

    def close(self):
        pass

    # test helpers
    def set(self, submission_id, status, logs=None, message=""):
        job = self.jobs[submission_id]
        job["status"] = status
        job["message"] = message
        if logs is not None:
            job["logs"] = logs
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            job["end_time"] = 1_700_000_100_000


def unit_settings(folder) -> Settings:
    """Settings for an app on its own store in `folder`, the admin token TOKEN, Ray and MLflow
    at addresses nothing answers (the fake Ray client stands in)."""
    token_file = folder / "admin.token"
    token_file.write_text(TOKEN + "\n")
    return Settings(db_url=f"sqlite:///{folder / 'ty.db'}", admin_token_file=str(token_file),
                    mlflow_uri="http://mlflow.example:5000", ray_dashboard_url="http://ray.example:8265",
                    ray_token_file=str(folder / "ray.token"), storage=f"file://{folder / 'storage'}",
                    extra={"packages_dir": str(folder / "packages")})


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    settings = unit_settings(tmp_path)
    fakes: dict[str, FakeRay] = {}

    def factory(name, url, token):
        fakes.setdefault(name, FakeRay(name, url, token))
        return fakes[name]

    app = create_app(settings, client_factory=factory, run_controller=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        ctx = app.state.ctx
        ctx.controller.refresh_clusters()
        yield client, ctx, fakes


def spec(**over):
    base = {"name": "mnist", "workload": "cnn", "resources": {"workers": 1},
            "training": {"max_steps": 5}}
    base.update(over)
    return base


def submit(client, **over):
    resp = client.post("/v1/jobs", json={"spec": spec(**over)})
    assert resp.status_code == 201, resp.text
    return resp.json()


def row_count(ctx):
    with ctx.db.session() as s:
        return len(jobs_repo.list_jobs(s, limit=1000))


# ----------------------------------------------------------------------------- auth


def test_healthz_needs_no_token(server):
    client, _, _ = server
    resp = client.get("/healthz", headers={"Authorization": ""})
    assert resp.status_code == 200 and resp.json()["ok"] is True


def test_missing_or_unknown_token_is_401(server):
    client, _, _ = server
    for path in ("/v1/jobs", "/v1/status", "/v1/clusters"):
        resp = client.get(path, headers={"Authorization": ""})
        assert resp.status_code == 401, path
        assert resp.json()["error"] == "unauthorized"
        resp = client.get(path, headers={"Authorization": "Bearer nope"})
        assert resp.status_code == 401, path
        assert TOKEN not in resp.text and "nope" not in resp.text


def test_every_api_route_but_healthz_needs_the_token(server):
    """The public surface is /healthz, the console's sign-on settings (/v1/auth/config: GET only,
    nothing secret) and the API reference; nothing else answers without the admin token,
    whatever the method (path parameters filled with a placeholder)."""
    import re

    client, _, _ = server
    paths = client.get("/openapi.json", headers={"Authorization": ""}).json()["paths"]
    assert set(paths["/v1/auth/config"]) == {"get"}
    checked = 0
    for template, methods in paths.items():
        if template in ("/healthz", "/v1/auth/config"):
            continue
        path = re.sub(r"{[^}]+}", "x", template)
        for method in methods:
            resp = client.request(method.upper(), path, headers={"Authorization": ""})
            assert resp.status_code == 401, (method, template, resp.status_code)
            checked += 1
    assert checked > 20


def test_openapi_page_is_served(server):
    client, _, _ = server
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/logs", "/v1/jobs/{job_id}/cancel",
            "/v1/clusters", "/v1/clusters/{name}", "/v1/status", "/healthz"} <= set(paths)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("body,field,words", [
    ({"spec": spec(ressources={"workers": 1})}, "ressources", "did you mean 'resources'"),
    ({"spec": spec(workload="cnnn")}, "workload", "did you mean 'cnn'"),
    ({"spec": spec(resources={"workers": 0})}, "resources.workers", "must be >= 1"),
    ({"spec": spec(deepspeed={"zero_stage": 4})}, "deepspeed.zero_stage", "0, 1, 2, 3"),
    ({"spec": "name: [unclosed"}, "", "malformed YAML"),
    ({"spec": spec(resources={"workers": 8})}, "resources.workers",
     "needs 8 CPUs in total but the largest cluster, 'local', has 2"),
    ({"spec": spec(resources={"workers": 1, "cluster": "locl"})}, "resources.cluster", "did you mean 'local'"),
    ({"spec": spec(checkpoint={"storage": "s3://bucket/x"})}, "checkpoint.storage", "credentials"),
    ({"spec": spec(working_dir="./code")}, "working_dir", "cannot read your local folder"),
    ({"spec": spec(), "working_dir_zip_b64": "!!!"}, "working_dir_zip_b64", "base64"),
    ({"spec": spec(), "working_dir_zip_b64": base64.b64encode(b"not a zip").decode()},
     "working_dir_zip_b64", "not a zip"),
    ({"spec": spec(), "extra": 1}, "extra", "unknown key"),
    ({}, "spec", "required"),
])
def test_rejected_submissions_name_the_field_and_leave_no_trace(server, body, field, words):
    client, ctx, _ = server
    resp = client.post("/v1/jobs", json=body)
    assert resp.status_code == 422, resp.text
    data = resp.json()
    assert words in data["message"], data
    if field:
        assert any(i["field"] == field for i in data["issues"]), data
    assert row_count(ctx) == 0
    assert not (ctx.settings.extra and __import__("pathlib").Path(ctx.settings.extra["packages_dir"]).exists()
                and any(__import__("pathlib").Path(ctx.settings.extra["packages_dir"]).iterdir()))


def test_capacity_rejection_is_typed(server):
    client, _, _ = server
    data = client.post("/v1/jobs", json={"spec": spec(resources={"workers": 8})}).json()
    assert data["error"] == "exceeds_capacity"


def test_s3_with_credentials_in_settings_is_accepted(server):
    client, ctx, fakes = server
    ctx.settings.s3_key, ctx.settings.s3_secret = "AKIAKEY123", "SECRETVALUE999"
    ctx.settings.s3_endpoint_url = "http://127.0.0.1:9000"
    job = submit(client, checkpoint={"storage": "s3://bucket/x"})
    assert job["state"] == "PENDING"
    text = client.get(f"/v1/jobs/{job['id']}").text
    assert "SECRETVALUE999" not in text and "AKIAKEY123" not in text
    ctx.controller.tick()
    env = fakes["local"].submissions[0]["runtime_env"]["env_vars"]
    assert env["TRAINYARD_STORAGE"] == "s3://bucket/x"
    assert env["TRAINYARD_S3_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert env["AWS_ACCESS_KEY_ID"] == "AKIAKEY123" and env["AWS_SECRET_ACCESS_KEY"] == "SECRETVALUE999"
    # a runner that prints the secret does not leak it through the logs route
    fakes["local"].set(fakes["local"].submissions[0]["submission_id"], "RUNNING", logs="key=SECRETVALUE999\n")
    assert client.get(f"/v1/jobs/{job['id']}/logs").text == "key=***\n"


def test_s3_credentials_in_the_spec_are_accepted(server):
    client, ctx, fakes = server
    job = submit(client, checkpoint={"storage": "s3://bucket/x", "endpoint_url": "http://s3.local:9000"},
                 env={"AWS_ACCESS_KEY_ID": "k-in-spec", "AWS_SECRET_ACCESS_KEY": "s-in-spec", "MODE": "x"})
    assert job["state"] == "PENDING"
    shown = client.get(f"/v1/jobs/{job['id']}").json()["spec"]["env"]
    # every env value is hidden, not only the ones whose name looks secret
    assert shown == {"AWS_ACCESS_KEY_ID": "***", "AWS_SECRET_ACCESS_KEY": "***", "MODE": "***"}
    ctx.controller.tick()
    env = fakes["local"].submissions[0]["runtime_env"]["env_vars"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "s-in-spec"  # the runner still gets it


# ----------------------------------------------------------------------------- lifecycle


def test_submit_dispatch_run_succeed(server):
    client, ctx, fakes = server
    job = submit(client)
    assert job["state"] == "PENDING" and job["phase"] == "PENDING"
    ctx.controller.tick()
    ray = fakes["local"]
    assert len(ray.submissions) == 1
    sub = ray.submissions[0]
    assert sub["submission_id"] == f"trainyard-{job['id']}-1"
    assert sub["entrypoint"] == f"python -m trainyard.runner job --job-id {job['id']}"
    env = sub["runtime_env"]["env_vars"]
    assert json.loads(env["TRAINYARD_SPEC"])["name"] == "mnist"
    assert env["TRAINYARD_JOB_ID"] == job["id"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"
    assert env["TRAINYARD_STORAGE"].startswith("file://")
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "PENDING" and got["phase"] == "SUBMITTED" and got["cluster"] == "local"

    sid = sub["submission_id"]
    ray.set(sid, "RUNNING", logs='TRAINYARD_PROGRESS {"step": 3, "total_steps": 5, "epoch": 0, "metrics": {"loss": 1.5}}\n')
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "RUNNING" and got["progress"]["step"] == 3 and got["started_at"]

    result = {"metrics": {"accuracy": 0.91}, "mlflow_run_id": "r123", "mlflow_experiment_id": "7",
              "model_name": "mnist", "model_version": "1", "checkpoint": "file:///x"}
    ray.set(sid, "SUCCEEDED", logs=ray.jobs[sid]["logs"] + "TRAINYARD_RESULT " + json.dumps(result) + "\n")
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "SUCCEEDED" and got["metrics"] == {"accuracy": 0.91}
    assert got["mlflow_run_id"] == "r123"
    assert got["mlflow_url"] == "http://mlflow.example:5000/#/experiments/7/runs/r123"
    assert [e["to"] for e in got["events"]] == ["PENDING", "DISPATCHING", "SUBMITTED", "RUNNING", "SUCCEEDED"]
    assert got["ended_at"] and got["progress"] is None


def test_logs_follow_with_offset(server):
    client, ctx, fakes = server
    job = submit(client)
    assert client.get(f"/v1/jobs/{job['id']}/logs").text == ""
    ctx.controller.tick()
    sid = fakes["local"].submissions[0]["submission_id"]
    fakes["local"].set(sid, "RUNNING", logs="line one\n")
    resp = client.get(f"/v1/jobs/{job['id']}/logs")
    assert resp.text == "line one\n" and resp.headers["x-trainyard-next-offset"] == "9"
    fakes["local"].set(sid, "RUNNING", logs="line one\nline two\n")
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"offset": 9}).text == "line two\n"


def test_failed_job_keeps_the_reason(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    sid = fakes["local"].submissions[0]["submission_id"]
    fakes["local"].set(sid, "FAILED", logs='TRAINYARD_ERROR {"error": "invalid_spec", "message": "hyperparameters.x: bad"}\n',
                       message="Job entrypoint command failed with exit code 1")
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "FAILED"
    assert "hyperparameters.x: bad" in got["message"] and "exit code 1" in got["message"]


def test_queue_waits_for_capacity_then_runs_in_order(server):
    client, ctx, fakes = server
    first = submit(client, resources={"workers": 2})
    second = submit(client, name="second")
    ctx.controller.tick()
    ray = fakes["local"]
    assert [s["metadata"]["trainyard_job_id"] for s in ray.submissions] == [first["id"]]
    got = client.get(f"/v1/jobs/{second['id']}").json()
    assert got["phase"] == "PENDING" and got["message"].startswith("waiting:")
    ray.set(ray.submissions[0]["submission_id"], "SUCCEEDED")
    ctx.controller.tick()
    assert [s["metadata"]["trainyard_job_id"] for s in ray.submissions] == [first["id"], second["id"]]


def test_cancel_pending_is_immediate(server):
    client, ctx, fakes = server
    job = submit(client)
    got = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert got["state"] == "CANCELLED"
    ctx.controller.tick()
    assert fakes["local"].submissions == []
    # again: idempotent
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "CANCELLED"


def test_cancel_running_waits_for_ray(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[0]["submission_id"]
    ray.set(sid, "RUNNING")
    ctx.controller.tick()
    ray.down = True
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "RUNNING" and got["message"].startswith("unreachable: state unknown")
    ray.down = False
    ctx.controller.tick()
    assert client.get(f"/v1/jobs/{job['id']}").json()["message"] == "running"
    ray.down = True  # the stop cannot reach Ray: the job must stay "cancelling", not CANCELLED
    got = client.post(f"/v1/jobs/{job['id']}/cancel").json()
    assert got["phase"] == "CANCELLING" and got["state"] == "RUNNING"
    ctx.controller.tick()
    assert client.get(f"/v1/jobs/{job['id']}").json()["phase"] == "CANCELLING"
    ray.down = False
    ctx.controller.tick(refresh=True)  # retries the stop; Ray reports STOPPED on the next look
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "CANCELLED" and sid in ray.stops


def test_cancel_finished_job_is_a_conflict(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    fakes["local"].set(fakes["local"].submissions[0]["submission_id"], "SUCCEEDED")
    ctx.controller.tick()
    resp = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 409 and resp.json()["error"] == "conflict"


def test_unknown_job_is_404_with_a_hint(server):
    client, _, _ = server
    job = submit(client)
    last = "y" if job["id"].endswith("x") else "x"  # a changed id, whatever its last character
    resp = client.get(f"/v1/jobs/{job['id'][:-1]}{last}")
    assert resp.status_code == 404 and "did you mean" in resp.json()["message"]


def test_list_filters(server):
    client, ctx, _ = server
    a = submit(client)
    b = submit(client, name="other", project="vision")
    client.post(f"/v1/jobs/{a['id']}/cancel")
    assert [j["id"] for j in client.get("/v1/jobs", params={"state": "pending"}).json()["jobs"]] == [b["id"]]
    assert [j["id"] for j in client.get("/v1/jobs", params={"project": "vision"}).json()["jobs"]] == [b["id"]]
    resp = client.get("/v1/jobs", params={"state": "RUNING"})
    assert resp.status_code == 422 and "did you mean 'RUNNING'" in resp.json()["message"]
    row = client.get("/v1/jobs").json()["jobs"][0]
    assert {"id", "name", "state", "project", "cluster", "created_at", "workers"} <= set(row)
    assert "spec" not in row  # table-friendly: no nested spec in lists


# ----------------------------------------------------------------------------- reconciliation


def test_crash_after_write_ahead_resubmits_the_same_submission(server):
    client, ctx, fakes = server
    job = submit(client)
    # what a crash between "record DISPATCHING" and "call Ray" leaves behind
    ctx.controller.dispatcher.write_ahead(job["id"], "local")
    assert fakes.get("local") is None or fakes["local"].submissions == []
    ctx.controller.tick()  # reconcile: Ray does not know it -> submit under the same id
    ray = fakes["local"]
    assert [s["submission_id"] for s in ray.submissions] == [f"trainyard-{job['id']}-1"]
    ctx.controller.tick()
    assert len(ray.submissions) == 1


def test_duplicate_submission_is_adopted_not_run_twice(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[0]["submission_id"]
    # the server died after Ray accepted but before it recorded SUBMITTED
    with ctx.db.session() as s:
        row = jobs_repo.get_job(s, job["id"])
        row.phase = "DISPATCHING"
    ctx.controller.dispatcher.submit(job["id"])
    assert len(ray.submissions) == 1
    assert client.get(f"/v1/jobs/{job['id']}").json()["phase"] == "SUBMITTED"
    assert sid


def test_driver_gone_is_never_shown_running(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    ray = fakes["local"]
    ray.set(ray.submissions[0]["submission_id"], "RUNNING")
    ctx.controller.tick()
    ray.jobs.clear()  # the cluster was restarted
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "FAILED" and "driver is gone" in got["message"]


def test_job_lost_before_it_started_is_requeued_with_a_new_attempt(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.tick()
    ray = fakes["local"]
    ray.jobs.clear()
    ctx.controller.tick()  # SUBMITTED and gone -> PENDING, then dispatched again
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["attempt"] == 2 and got["submission_id"].endswith("-2")
    assert [s["submission_id"][-2:] for s in ray.submissions] == ["-1", "-2"]


def test_ray_refusal_fails_the_job_with_the_reason(server):
    client, ctx, fakes = server
    job = submit(client)
    ctx.controller.refresh_clusters()
    ray = fakes["local"]

    def refuse(**kwargs):
        raise SubmitRejected("cluster 'local' refused POST /api/jobs/: ValueError: bad runtime_env")

    ray.submit = refuse
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "FAILED" and "bad runtime_env" in got["message"]


def test_unreachable_cluster_keeps_jobs_and_says_why(server):
    client, ctx, fakes = server
    job = submit(client)
    fakes["local"].down = True
    ctx.controller.tick(refresh=True)
    got = client.get(f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "PENDING" and "unreachable" in got["message"]
    status = client.get("/v1/status").json()
    assert status["clusters"][0]["reachable"] is False and status["jobs"]["PENDING"] == 1


# ----------------------------------------------------------------------------- working_dir


def _zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def test_working_dir_is_uploaded_and_referenced(server):
    client, ctx, fakes = server
    data = _zip({"mywork.py": "WORKLOAD = None\n"})
    resp = client.post("/v1/jobs", json={"spec": spec(workload="mywork:WORKLOAD", working_dir="./code"),
                                         "working_dir_zip_b64": base64.b64encode(data).decode()})
    assert resp.status_code == 201, resp.text
    ctx.controller.tick()
    ray = fakes["local"]
    uri = ray.submissions[0]["runtime_env"]["working_dir"]
    assert uri.startswith("gcs://_ray_pkg_") and ray.packages[uri[len("gcs://"):]] == data


# ----------------------------------------------------------------------------- clusters


def test_clusters_list_add_remove(server):
    client, ctx, fakes = server
    listed = client.get("/v1/clusters").json()["clusters"]
    assert [c["name"] for c in listed] == ["local"] and listed[0]["resources_total"] == {"CPU": 2.0}
    resp = client.post("/v1/clusters", json={"name": "big", "address": "http://10.0.0.5:8265",
                                             "token": "secret-ray-token", "check": False})
    assert resp.status_code == 201, resp.text
    assert "secret-ray-token" not in resp.text and resp.json()["auth"] == "token"
    assert "secret-ray-token" not in client.get("/v1/clusters").text
    assert client.post("/v1/clusters", json={"name": "big", "address": "http://x:1", "check": False}).status_code == 409
    bad = client.post("/v1/clusters", json={"name": "Big!", "address": "http://x:1"})
    assert bad.status_code == 422 and bad.json()["field"] == "name"
    bad = client.post("/v1/clusters", json={"name": "x", "address": "10.0.0.1:8265"})
    assert bad.status_code == 422 and bad.json()["field"] == "address"
    assert client.delete("/v1/clusters/big").status_code == 204
    assert client.delete("/v1/clusters/big").status_code == 404


def test_clusters_take_tokens_by_value_never_a_server_file(server, tmp_path):
    client, ctx, fakes = server
    secret_file = tmp_path / "server-only.txt"
    secret_file.write_text("server-side-secret-content\n")
    resp = client.post("/v1/clusters", json={"name": "f", "address": "http://10.0.0.5:8265",
                                             "token_file": str(secret_file), "check": False})
    assert resp.status_code == 422 and resp.json()["field"] == "token_file", resp.text
    assert "server-side-secret-content" not in resp.text and "`token`" in resp.text
    assert [c["name"] for c in client.get("/v1/clusters").json()["clusters"]] == ["local"]


def test_cluster_with_active_jobs_cannot_be_removed(server):
    client, ctx, _ = server
    submit(client)
    ctx.controller.tick()
    resp = client.delete("/v1/clusters/local")
    assert resp.status_code == 409 and "active job" in resp.json()["message"]


def test_pinned_job_goes_to_its_cluster(server):
    client, ctx, fakes = server
    client.post("/v1/clusters", json={"name": "big", "address": "http://10.0.0.5:8265", "check": False})
    fakes["big"].cpus = 8.0
    ctx.controller.refresh_clusters()
    job = submit(client, resources={"workers": 4, "cluster": "big"})
    ctx.controller.tick()
    assert client.get(f"/v1/jobs/{job['id']}").json()["cluster"] == "big"
    assert fakes["local"].submissions == []


def test_the_server_imports_no_torch_deepspeed_or_ray():
    import subprocess
    import sys

    code = ("import sys, trainyard.api.app, trainyard.sdk, trainyard.api.__main__; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'deepspeed', 'ray', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

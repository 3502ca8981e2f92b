"""Every route of the API x every kind of caller, against the real server over HTTP.

The routes come from the server's own OpenAPI document: a route that has no row in CASES
fails the test, so a new route cannot be added without saying who may call it. Callers: no
token, a revoked token, an expired token, a viewer of the project, a member of another
project, a member, a maintainer, an admin. Identities are made through the API itself.
Runs on SQLite, and on PostgreSQL where its server tools are installed.

The server runs with no Ray cluster and no MLflow behind it (Ray's address refuses
connections, MLflow is not configured): authorization is decided before either is contacted, and jobs stay queued.
"""
from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest

from trainyard.local.processes import free_port, start_process, stop_process

pytestmark = pytest.mark.integration

CALLERS = ("none", "revoked", "expired", "viewer", "other", "member", "maintainer", "admin")
PROJECT = "matrix"
DEAD = "http://127.0.0.1:1"  # nothing listens: Ray and MLflow are down


def job_spec(name: str) -> dict:
    return {"name": name, "workload": "cnn", "project": PROJECT, "resources": {"workers": 1},
            "training": {"max_steps": 1}}


def sweep_spec(name: str) -> dict:
    return {**job_spec(name), "training": {"epochs": 1}, "sweep": {"scheduler": "asha", "num_trials": 2}}


def expect(*, viewer: int, other: int, member: int, maintainer: int, admin: int, anonymous: int = 401) -> dict:
    return {"none": anonymous, "revoked": anonymous, "expired": anonymous, "viewer": viewer, "other": other,
            "member": member, "maintainer": maintainer, "admin": admin}


ANY = dict(viewer=200, other=200, member=200, maintainer=200, admin=200)
ADMIN_ONLY = dict(viewer=403, other=403, member=403, maintainer=403)
SERVE_DOWN = dict(viewer=502, other=502, member=502, maintainer=502, admin=502)
NO_MLFLOW = dict(viewer=422, other=422, member=422, maintainer=422, admin=422)
READ_PROJECT = dict(viewer=200, other=404, member=200, maintainer=200, admin=200)

# (method, route) -> (path params or a function of the world, body, expected status per caller).
# The world is built once; callers run in CALLERS order, so a later caller sees what an
# earlier one did (a maintainer cancels a job the admin then cancels again: idempotent).
Case = tuple[dict[str, str], Optional[Any], dict[str, int]]
CASES: dict[tuple[str, str], Callable[[dict], Case]] = {
    ("GET", "/healthz"): lambda w: ({}, None, expect(**ANY, anonymous=200)),
    ("GET", "/v1/status"): lambda w: ({}, None, expect(**ANY)),
    ("GET", "/v1/me"): lambda w: ({}, None, expect(**ANY)),
    # what the console needs before anyone signs in: public, and holds nothing secret
    ("GET", "/v1/auth/config"): lambda w: ({}, None, expect(**ANY, anonymous=200)),
    # jobs
    ("GET", "/v1/jobs"): lambda w: ({}, None, expect(**ANY)),
    ("POST", "/v1/jobs"): lambda w: ({}, {"spec": job_spec("submitted")},
                                     expect(viewer=403, other=404, member=201, maintainer=201, admin=201)),
    ("POST", "/v1/jobs/validate"): lambda w: ({}, {"spec": job_spec("checked")},
                                              expect(viewer=403, other=404, member=200, maintainer=200, admin=200)),
    ("GET", "/v1/jobs/{job_id}"): lambda w: ({"job_id": w["job"]}, None, expect(**READ_PROJECT)),
    ("GET", "/v1/jobs/{job_id}/logs"): lambda w: ({"job_id": w["job"]}, None, expect(**READ_PROJECT)),
    ("GET", "/v1/jobs/{job_id}/metrics"): lambda w: ({"job_id": w["job"]}, None, expect(**READ_PROJECT)),
    ("GET", "/v1/queue"): lambda w: ({}, None, expect(**ANY)),
    ("POST", "/v1/jobs/{job_id}/cancel"): lambda w: ({"job_id": w["job"]}, None,
                                                     expect(viewer=403, other=404, member=403, maintainer=200,
                                                            admin=200)),
    # sweeps
    ("GET", "/v1/sweeps"): lambda w: ({}, None, expect(**ANY)),
    ("POST", "/v1/sweeps"): lambda w: ({}, {"spec": sweep_spec("swept")},
                                       expect(viewer=403, other=404, member=201, maintainer=201, admin=201)),
    ("POST", "/v1/sweeps/validate"): lambda w: ({}, {"spec": sweep_spec("checked")},
                                                expect(viewer=403, other=404, member=200, maintainer=200,
                                                       admin=200)),
    ("GET", "/v1/sweeps/{sweep_id}"): lambda w: ({"sweep_id": w["sweep"]}, None, expect(**READ_PROJECT)),
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): lambda w: ({"sweep_id": w["sweep"]}, None,
                                                         expect(viewer=403, other=404, member=403,
                                                                maintainer=200, admin=200)),
    # clusters: all see them, admins change them
    ("GET", "/v1/clusters"): lambda w: ({}, None, expect(**ANY)),
    ("POST", "/v1/clusters"): lambda w: ({}, {"name": "matrix-new", "address": "http://127.0.0.1:2", "check": False},
                                         expect(**ADMIN_ONLY, admin=201)),
    ("DELETE", "/v1/clusters/{name}"): lambda w: ({"name": "matrix-gone"}, None, expect(**ADMIN_ONLY, admin=204)),
    # users, tokens
    ("POST", "/v1/users"): lambda w: ({}, {"name": "newcomer"}, expect(**ADMIN_ONLY, admin=201)),
    ("GET", "/v1/users"): lambda w: ({}, None, expect(**ADMIN_ONLY, admin=200)),
    ("DELETE", "/v1/users/{name}"): lambda w: ({"name": "leaver"}, None, expect(**ADMIN_ONLY, admin=204)),
    ("POST", "/v1/tokens"): lambda w: ({}, {"name": "more"}, expect(viewer=201, other=201, member=201,
                                                                   maintainer=201, admin=201)),
    ("GET", "/v1/tokens"): lambda w: ({}, None, expect(**ANY)),
    # the member's spare token: its owner revokes it, an admin may too (again: idempotent)
    ("DELETE", "/v1/tokens/{token_id}"): lambda w: ({"token_id": w["spare_token"]}, None,
                                                    expect(viewer=404, other=404, member=204, maintainer=404,
                                                           admin=204)),
    # projects
    ("POST", "/v1/projects"): lambda w: ({}, {"name": "brand-new"}, expect(**ADMIN_ONLY, admin=201)),
    ("GET", "/v1/projects"): lambda w: ({}, None, expect(**ANY)),
    ("GET", "/v1/projects/{name}"): lambda w: ({"name": PROJECT}, None, expect(**READ_PROJECT)),
    ("PUT", "/v1/projects/{name}/members/{user}"): lambda w: (
        {"name": PROJECT, "user": "bystander"}, {"role": "viewer"},
        expect(viewer=403, other=404, member=403, maintainer=200, admin=200)),
    ("DELETE", "/v1/projects/{name}/members/{user}"): lambda w: (
        {"name": PROJECT, "user": "departing"}, None,
        expect(viewer=403, other=404, member=403, maintainer=204, admin=204)),
    ("PUT", "/v1/projects/{name}/quota"): lambda w: (
        {"name": PROJECT}, {"weight": 2, "nominal": {"CPU": 4}, "budget": {"gpu_hours": 10, "window_days": 7}},
        expect(**ADMIN_ONLY, admin=200)),
    ("GET", "/v1/audit"): lambda w: ({}, None, expect(**ADMIN_ONLY, admin=200)),
    # serving. Serve and MLflow are down here, so past authentication every caller meets them
    # (502, 422): what each role may do to a real endpoint and model is tested where they run
    # (test_serving.py's REST test). What this shows: no route answers without a valid token,
    # and deploying into a project is refused by role before anything is asked of Serve.
    ("POST", "/v1/endpoints"): lambda w: ({}, {"model": "nomodel", "project": PROJECT},
                                          expect(viewer=403, other=404, member=403, maintainer=502, admin=502)),
    ("GET", "/v1/endpoints"): lambda w: ({}, None, expect(**SERVE_DOWN)),
    ("GET", "/v1/endpoints/{name}"): lambda w: ({"name": "noep"}, None, expect(**SERVE_DOWN)),
    ("DELETE", "/v1/endpoints/{name}"): lambda w: ({"name": "noep"}, None, expect(**SERVE_DOWN)),
    ("POST", "/v1/endpoints/{name}/predict"): lambda w: ({"name": "noep"}, {"inputs": [1]}, expect(**SERVE_DOWN)),
    ("GET", "/v1/endpoints/{name}/openapi.json"): lambda w: ({"name": "noep"}, None, expect(**SERVE_DOWN)),
    ("POST", "/v1/endpoints/{name}/keys"): lambda w: ({"name": "noep"}, {"name": "k"}, expect(**SERVE_DOWN)),
    ("GET", "/v1/endpoints/{name}/keys"): lambda w: ({"name": "noep"}, None, expect(**SERVE_DOWN)),
    ("DELETE", "/v1/endpoints/{name}/keys/{key_id}"): lambda w: ({"name": "noep", "key_id": "0" * 12}, None,
                                                                 expect(**SERVE_DOWN)),
    ("POST", "/v1/models/{name}/promote"): lambda w: ({"name": "nomodel"}, {}, expect(**NO_MLFLOW)),
    ("POST", "/v1/models/{name}/rollback"): lambda w: ({"name": "nomodel"}, {}, expect(**NO_MLFLOW)),
    ("GET", "/v1/models/{name}/history"): lambda w: ({"name": "nomodel"}, None, expect(**NO_MLFLOW)),
    ("GET", "/v1/promotions/{pid}"): lambda w: ({"pid": "abc123"}, None,
                                                expect(viewer=404, other=404, member=404, maintainer=404, admin=404)),
}


class MatrixServer:
    def __init__(self, root: Path, db_url: str | None):
        self.root = root
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.admin_token = "matrix-admin-" + os.urandom(8).hex()
        (home / "admin.token").write_text(self.admin_token + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_url = db_url or f"sqlite:///{home / 'trainyard.db'}"
        self.env = {"TRAINYARD_HOME": str(home), "TRAINYARD_DB_URL": self.db_url,
                    "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
                    # MLflow is down here, whatever this test process's environment says (an
                    # earlier test may leave MLFLOW_TRACKING_URI, which the server falls back to)
                    "TRAINYARD_RAY_DASHBOARD_URL": DEAD, "TRAINYARD_MLFLOW_URI": "", "MLFLOW_TRACKING_URI": "",
                    "TRAINYARD_POLL_INTERVAL_S": "1"}
        self.pid: int | None = None

    def __enter__(self) -> "MatrixServer":
        proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1",
                                        "--port", str(self.port)], url=self.url, health_url=f"{self.url}/healthz",
                             log_file=self.root / "server.log", env=self.env, timeout=60)
        self.pid = proc.pid
        return self

    def __exit__(self, *exc) -> None:
        if self.pid:
            stop_process(self.pid)

    def log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")


def _ok(resp: httpx.Response, code: int = 200) -> dict:
    assert resp.status_code == code, f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text}"
    return resp.json() if resp.content else {}


def build_world(srv: MatrixServer) -> tuple[dict[str, str], dict[str, Any]]:
    """Users, roles and tokens, through the API; returns (caller -> token, world)."""
    admin = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}, timeout=30)
    with admin:
        for name in ("viewer", "other", "member", "maintainer", "leaver", "bystander", "departing"):
            _ok(admin.post("/v1/users", json={"name": name}), 201)
        _ok(admin.post("/v1/projects", json={"name": PROJECT}), 201)
        _ok(admin.post("/v1/projects", json={"name": "elsewhere"}), 201)
        for user, project, role in (("viewer", PROJECT, "viewer"), ("other", "elsewhere", "member"),
                                    ("member", PROJECT, "member"), ("maintainer", PROJECT, "maintainer"),
                                    ("departing", PROJECT, "member")):
            _ok(admin.put(f"/v1/projects/{project}/members/{user}", json={"role": role}))
        tokens = {"admin": srv.admin_token, "none": ""}
        for user in ("viewer", "other", "member", "maintainer"):
            tokens[user] = _ok(admin.post("/v1/tokens", json={"name": "matrix", "user": user}), 201)["token"]
        revoked = _ok(admin.post("/v1/tokens", json={"name": "revoked", "user": "member"}), 201)
        _ok(admin.delete(f"/v1/tokens/{revoked['id']}"), 204)
        tokens["revoked"] = revoked["token"]
        expired = _ok(admin.post("/v1/tokens", json={"name": "expired", "user": "member", "expires_in_days": 1}), 201)
        tokens["expired"] = expired["token"]
        spare = _ok(admin.post("/v1/tokens", json={"name": "spare", "user": "member"}), 201)
        _ok(admin.post("/v1/clusters", json={"name": "matrix-gone", "address": "http://127.0.0.1:3",
                                             "check": False}), 201)
    # no route makes a token expire sooner than a day: move this one's expiry into the past in the store
    from trainyard.store import Database
    from trainyard.store.models import ApiTokenRow

    db = Database(srv.db_url)
    try:
        with db.session() as s:
            s.get(ApiTokenRow, expired["id"]).expires_at = datetime.now(timezone.utc) - timedelta(minutes=1)
    finally:
        db.dispose()
    as_maintainer = {"Authorization": f"Bearer {tokens['maintainer']}"}
    job = _ok(httpx.post(f"{srv.url}/v1/jobs", json={"spec": job_spec("target")}, headers=as_maintainer), 201)
    sweep = _ok(httpx.post(f"{srv.url}/v1/sweeps", json={"spec": sweep_spec("target")}, headers=as_maintainer), 201)
    assert job["owner"] == "maintainer" and job["project"] == PROJECT
    world = {"job": job["id"], "sweep": sweep["id"], "spare_token": spare["id"]}
    return tokens, world


def run_matrix(srv: MatrixServer) -> None:
    tokens, world = build_world(srv)
    doc = httpx.get(f"{srv.url}/openapi.json").json()
    routes = [(method.upper(), path) for path, ops in doc["paths"].items() for method in ops]
    missing = sorted(set(routes) - set(CASES))
    assert not missing, f"routes with no row in the role matrix (add them to CASES): {missing}"
    stale = sorted(set(CASES) - set(routes))
    assert not stale, f"rows for routes the server does not have: {stale}"
    wrong: list[str] = []
    with httpx.Client(base_url=srv.url, timeout=30) as http:
        for method, template in routes:
            params, body, expected = CASES[(method, template)](world)
            path = template.format(**params)
            for caller in CALLERS:
                headers = {"Authorization": f"Bearer {tokens[caller]}"} if tokens[caller] else {}
                resp = http.request(method, path, json=body, headers=headers)
                if resp.status_code != expected[caller]:
                    wrong.append(f"{method} {template} as {caller}: {resp.status_code} (expected "
                                 f"{expected[caller]}) {resp.text[:160]}")
                for token in tokens.values():
                    assert not token or token not in resp.text, f"{method} {path} echoed a token"
    assert not wrong, "\n".join(wrong)
    # every state-changing request was audited, refused ones included; no token is in the trail
    audit = httpx.get(f"{srv.url}/v1/audit", params={"limit": 1000},
                      headers={"Authorization": f"Bearer {srv.admin_token}"}).json()
    from trainyard.api.audit import UNAUDITED_SUFFIXES  # predictions and spec checks change nothing

    mutating = [r for r in routes if r[0] in ("POST", "PUT", "PATCH", "DELETE") and not r[1].endswith(UNAUDITED_SUFFIXES)]
    actions = {e["action"] for e in audit["events"]}
    assert {f"{m} {p}" for m, p in mutating} <= actions
    refused = [e for e in audit["events"] if e["outcome"] == "refused"]
    assert {e["actor"] for e in refused} >= {"anonymous", "viewer", "other", "member"}
    text = str(audit) + srv.log()
    assert not [c for c, t in tokens.items() if t and t in text], "a token reached the audit trail or the log"
    assert "Traceback" not in srv.log()


def test_route_role_matrix_on_sqlite(test_root):
    with MatrixServer(test_root / "matrix-sqlite", None) as srv:
        run_matrix(srv)


def test_route_role_matrix_on_postgres(test_root, request):
    pg_url = request.getfixturevalue("pg_url")
    with MatrixServer(test_root / "matrix-postgres", pg_url) as srv:
        run_matrix(srv)


# PostgreSQL, as tests/integration/test_server_postgres.py starts it (skips where it is absent)
from test_server_postgres import pg_url  # noqa: E402,F401

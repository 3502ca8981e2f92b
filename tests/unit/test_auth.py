"""Roles, principals and tokens (pure), and the API's identity rules through the app in process."""
from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from trainyard.api.app import create_app
from trainyard.api.auth import authorize
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role, higher, parse_role
from trainyard.auth.tokens import hash_token, new_token, same_hash, token_id
from trainyard.config import Settings
from trainyard.errors import AuthError, NotFoundError, SpecError
from trainyard.store import teams as teams_repo
from trainyard.store.models import ApiTokenRow, AuditEventRow

ADMIN = "unit-legacy-admin-token-0001"


# ----------------------------------------------------------------------------- pure


def test_roles_are_ordered_and_parsed_with_did_you_mean():
    assert Role.VIEWER < Role.MEMBER < Role.MAINTAINER
    assert parse_role("Maintainer") is Role.MAINTAINER and parse_role(" viewer ") is Role.VIEWER
    with pytest.raises(SpecError) as info:
        parse_role("mantainer")
    assert info.value.field == "role" and "did you mean 'maintainer'" in str(info.value)
    with pytest.raises(SpecError):
        parse_role("owner")
    assert higher(Role.VIEWER, Role.MEMBER) is Role.MEMBER and higher(None, Role.VIEWER) is Role.VIEWER


def test_principal_roles_and_visibility():
    p = Principal(user="a", roles={"vision": Role.MEMBER})
    assert p.role_in("vision") is Role.MEMBER and p.role_in("nlp") is None
    assert p.visible_projects() == frozenset({"vision"})
    with pytest.raises(TypeError):
        p.roles["nlp"] = Role.MAINTAINER  # read-only: cached principals are shared
    admin = Principal(user="root", admin=True)
    assert admin.role_in("anything") is Role.MAINTAINER and admin.visible_projects() is None


def test_tokens_are_hashed_and_never_the_hash():
    made = new_token()
    assert made.token.startswith(f"tyk_{made.id}_") and token_id(made.token) == made.id
    assert made.sha256 == hashlib.sha256(made.token.encode()).hexdigest() == hash_token(made.token)
    assert made.sha256 != made.token and made.token not in repr(made)
    assert same_hash(made.sha256, hash_token(made.token)) and not same_hash(made.sha256, hash_token("x"))
    assert new_token().token != made.token and token_id("tyk_zz_abc") is None


def test_authorize_hides_other_projects_and_checks_roles_and_owners():
    member = Principal(user="m", roles={"p": Role.MEMBER})
    with pytest.raises(NotFoundError) as hidden:
        authorize(member, project="q", need=Role.VIEWER, what="job", ident="j-1")
    missing = NotFoundError("job", "j-1")
    assert str(hidden.value) == str(missing) and hidden.value.status == 404
    authorize(member, project="p", need=Role.MEMBER, what="job", ident="j-1", owner="m")
    with pytest.raises(AuthError) as info:
        authorize(member, project="p", need=Role.MEMBER, what="job", ident="j-1", owner="x", doing="cancel it")
    assert info.value.status == 403 and "owner or a maintainer of project 'p'" in str(info.value)
    with pytest.raises(AuthError) as info:
        authorize(member, project="p", need=Role.MAINTAINER, what="job", ident="j-1")
    assert info.value.status == 403 and "maintainer role" in str(info.value)
    authorize(Principal(user="x", roles={"p": Role.MAINTAINER}), project="p", need=Role.MEMBER, what="job",
              ident="j", owner="m")


# ----------------------------------------------------------------------------- through the app


@pytest.fixture()
def api(tmp_path):
    (tmp_path / "admin.token").write_text(ADMIN + "\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://127.0.0.1:1")
    app = create_app(settings, run_controller=False)
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client, app.state.ctx


def _as(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_the_admin_token_file_is_admins_token(api):
    client, ctx = api
    assert client.get("/v1/me").json() == {"user": "admin", "kind": "user", "admin": True, "via": "token",
                                           "projects": {"default": "admin"}}
    tokens = client.get("/v1/tokens").json()["tokens"]
    assert [t["name"] for t in tokens] == ["admin-token"]
    with ctx.db.session() as s:
        assert s.query(ApiTokenRow).one().sha256 == hash_token(ADMIN)


def test_a_token_appears_in_no_list_log_or_audit_row(api, caplog):
    client, ctx = api
    caplog.set_level(logging.DEBUG)
    assert client.post("/v1/users", json={"name": "ci", "kind": "service"}).status_code == 201
    made = client.post("/v1/tokens", json={"name": "pipeline", "user": "ci", "expires_in_days": 30})
    assert made.status_code == 201
    token = made.json()["token"]
    assert client.get("/v1/me", headers=_as(token)).json()["user"] == "ci"
    texts = [client.get("/v1/tokens?user=ci").text, client.get("/v1/audit").text, caplog.text,
             client.get("/v1/users").text]
    assert all(token not in t and ADMIN not in t for t in texts)
    with ctx.db.session() as s:
        row = s.get(ApiTokenRow, made.json()["id"])
        assert row.sha256 != token and token not in row.sha256 and row.sha256 == hash_token(token)
        for event in s.query(AuditEventRow):
            assert token not in str(vars(event)) and ADMIN not in str(vars(event))


def test_revoked_expired_unknown_and_disabled_are_401_saying_which(api):
    client, ctx = api
    client.post("/v1/users", json={"name": "bob"})
    made = client.post("/v1/tokens", json={"name": "t", "user": "bob"}).json()
    assert client.get("/v1/me", headers=_as(made["token"])).status_code == 200
    assert client.delete(f"/v1/tokens/{made['id']}").status_code == 204
    resp = client.get("/v1/me", headers=_as(made["token"]))
    assert resp.status_code == 401 and "revoked" in resp.json()["message"]
    second = client.post("/v1/tokens", json={"name": "t2", "user": "bob"}).json()
    with ctx.db.session() as s:
        s.get(ApiTokenRow, second["id"]).expires_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    ctx.auth.forget()
    resp = client.get("/v1/me", headers=_as(second["token"]))
    assert resp.status_code == 401 and "expired" in resp.json()["message"]
    assert client.get("/v1/me", headers=_as("tyk_000000000000_" + "x" * 43)).status_code == 401
    third = client.post("/v1/tokens", json={"name": "t3", "user": "bob"}).json()
    assert client.delete("/v1/users/bob").status_code == 204
    assert client.get("/v1/me", headers=_as(third["token"])).status_code == 401
    assert client.delete("/v1/users/admin").status_code == 409


def test_members_see_their_projects_only_and_cancel_only_their_own(api):
    client, ctx = api
    for user in ("ann", "ben"):
        client.post("/v1/users", json={"name": user})
    client.post("/v1/projects", json={"name": "vision", "description": "images"})
    client.put("/v1/projects/vision/members/ann", json={"role": "member"})
    client.put("/v1/projects/vision/members/ben", json={"role": "member"})
    ann = client.post("/v1/tokens", json={"name": "a", "user": "ann"}).json()["token"]
    ben = client.post("/v1/tokens", json={"name": "b", "user": "ben"}).json()["token"]
    spec = {"name": "j", "workload": "cnn", "project": "vision", "training": {"max_steps": 1}}
    job = client.post("/v1/jobs", json={"spec": spec}, headers=_as(ann)).json()
    assert job["owner"] == "ann" and job["project"] == "vision"
    hidden = client.post("/v1/jobs", json={"spec": {**spec, "project": "default"}}).json()
    assert hidden["owner"] == "admin"
    listed = client.get("/v1/jobs", headers=_as(ben)).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    missing = client.get("/v1/jobs/nope-0", headers=_as(ben)).json()["message"].replace("nope-0", "X")
    assert client.get(f"/v1/jobs/{hidden['id']}", headers=_as(ben)).json()["message"].replace(hidden["id"], "X") \
        == missing
    resp = client.post(f"/v1/jobs/{job['id']}/cancel", headers=_as(ben))
    assert resp.status_code == 403 and "owner or a maintainer" in resp.json()["message"]
    resp = client.post("/v1/jobs", json={"spec": {**spec, "project": "default"}}, headers=_as(ben))
    assert resp.status_code == 404 and "project 'default'" in resp.json()["message"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=_as(ann)).json()["state"] == "CANCELLED"
    assert client.get("/v1/status", headers=_as(ben)).json()["jobs"]["CANCELLED"] == 1
    assert [p["name"] for p in client.get("/v1/projects", headers=_as(ben)).json()["projects"]] == ["vision"]
    shown = client.get("/v1/projects/vision", headers=_as(ben)).json()
    assert shown["role"] == "member" and {m["user"] for m in shown["members"]} == {"ann", "ben"}
    assert client.put("/v1/projects/vision/members/ben", json={"role": "viewer"},
                      headers=_as(ann)).status_code == 403
    events = client.get("/v1/audit?actor=ben&outcome=refused").json()
    assert events["total"] == 2 and all(e["status_code"] in (403, 404) for e in events["events"])
    assert client.get("/v1/audit", headers=_as(ben)).status_code == 403


def test_a_failed_audit_write_does_not_fail_the_request(api, monkeypatch, caplog):
    client, _ = api

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(teams_repo, "record_audit", broken)
    assert client.post("/v1/projects", json={"name": "nlp"}).status_code == 201
    assert "could not write the audit row" in caplog.text


def test_a_jwt_without_single_sign_on_is_401_saying_so(api):
    client, _ = api
    try:
        import trainyard.auth.oidc  # noqa: F401
    except ImportError:
        resp = client.get("/v1/me", headers=_as("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"))
        assert resp.status_code == 401 and "single sign-on is not available" in resp.json()["message"]
    else:
        pytest.skip("this tree has single sign-on; its own tests cover JWTs")

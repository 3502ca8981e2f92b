"""Single sign-on settings (TRAINYARD_OIDC_*) and the pure half of the verifier: claims to identity.

The verifier against a real issuer stand-in (HTTP, keys, signed tokens) is
tests/integration/test_oidc.py.
"""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainyard.auth.oidc import OidcVerifier, user_name_for
from trainyard.auth.roles import Role
from trainyard.config import Settings, parse_group_roles
from trainyard.errors import AuthError, TrainyardError

ISSUER = "https://idp.example.com/realms/ml"


def _env(monkeypatch, tmp_path, **values):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    for name, value in values.items():
        monkeypatch.setenv(f"TRAINYARD_OIDC_{name.upper()}", value)


def test_settings_read_from_the_environment(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, issuer=ISSUER, audience="trainyard", user_claim="preferred_username",
         group_roles="ml-team=vision:member, ml-team=nlp:viewer ,/ops/admins=*:admin")
    s = Settings.from_env()
    assert (s.oidc_issuer, s.oidc_audience, s.oidc_user_claim, s.oidc_groups_claim, s.oidc_jwks_url) == (
        ISSUER, "trainyard", "preferred_username", "groups", None)
    assert s.oidc_group_roles == {"ml-team": {"vision": "member", "nlp": "viewer"}, "/ops/admins": {"*": "admin"}}
    assert OidcVerifier.configured(s) and not OidcVerifier.configured(Settings())
    assert s.public()["oidc_group_roles"] == s.oidc_group_roles  # nothing secret in it


def test_group_names_with_commas_use_the_json_form(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, issuer=ISSUER, audience="trainyard",
         group_roles='{"CN=ml,OU=groups,DC=corp": {"vision": "maintainer"}, "x=y": {"*": "admin"}}')
    assert Settings.from_env().oidc_group_roles == {"CN=ml,OU=groups,DC=corp": {"vision": "maintainer"},
                                                    "x=y": {"*": "admin"}}
    # in the comma form a group may hold '=' (the entry splits at its last one)
    assert parse_group_roles("a=b=vision:viewer") == {"a=b": {"vision": "viewer"}}


@pytest.mark.parametrize("text, words", [
    ("ml-team=vision", "is not group=project:role"),
    ("ml-team:vision:member", "is not group=project:role"),
    ("ml-team=vision:owner", "role 'owner' is not known; use one of viewer, member, maintainer, or *:admin"),
    ("ml-team=vision:admin", "admin is cluster-wide"),
    ("ml-team=*:member", "admin is cluster-wide"),
    ("ml-team=Vision:member", "project 'Vision' is not a valid project name"),
    ("=vision:member", "the group must be"),
    ("ml=vision:member,ml=vision:viewer", "already maps project 'vision' to 'member'"),
    ("{not json", "is not valid JSON"),
    ('{"ml": "vision:member"}', "must map to {project: role}"),
])
def test_bad_group_roles_name_the_variable_and_the_entry(monkeypatch, tmp_path, text, words):
    _env(monkeypatch, tmp_path, group_roles=text)
    with pytest.raises(TrainyardError) as exc:
        Settings.from_env()
    assert exc.value.field == "TRAINYARD_OIDC_GROUP_ROLES"
    assert words in str(exc.value), str(exc.value)
    with pytest.raises(ValidationError, match="oidc_group_roles"):
        Settings(oidc_group_roles=text)


def test_issuer_needs_an_audience_and_https(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, issuer=ISSUER)
    with pytest.raises(TrainyardError) as exc:
        Settings.from_env()
    assert exc.value.field == "TRAINYARD_OIDC_AUDIENCE" and "client id" in str(exc.value)
    for bad in ("http://idp.example.com", "ftp://idp.example.com", "https://", "https://idp.example.com/?a=1"):
        with pytest.raises(ValidationError, match="oidc_issuer"):
            Settings(oidc_issuer=bad, oidc_audience="x")
    with pytest.raises(ValidationError, match="oidc_jwks_url"):
        Settings(oidc_jwks_url="http://keys.example.com/jwks")
    # plain http only to this machine (a test issuer, an issuer behind a local proxy)
    assert Settings(oidc_issuer="http://127.0.0.1:8080/x", oidc_audience="x").oidc_issuer
    assert Settings(oidc_issuer="http://localhost:8080", oidc_audience="x").oidc_issuer


def test_user_names_from_claims_are_valid_and_distinct():
    assert user_name_for("alice") == "alice"
    names = {user_name_for(v) for v in ("alice@example.com", "Alice@example.com", "alice.example@com",
                                        "alice-example-com", "x" * 300 + "@example.com")}
    assert len(names) == 5
    for name in names:
        assert len(name) <= 63 and name == name.lower() and not name.startswith("-")
    assert user_name_for("alice@example.com").startswith("alice-example-com-")
    assert user_name_for("@@@").startswith("oidc-")


def test_claims_to_identity():
    v = OidcVerifier(Settings(oidc_issuer=ISSUER, oidc_audience="trainyard",
                              oidc_group_roles="a=vision:viewer,b=vision:maintainer,b=nlp:member,root=*:admin"))
    who = v.identity({"email": "bob@example.com", "groups": ["a", "b"]})
    assert dict(who.roles) == {"vision": Role.MAINTAINER, "nlp": Role.MEMBER} and not who.admin
    assert v.identity({"email": "bob@example.com", "groups": "root"}).admin  # one group as a string
    assert v.identity({"email": "bob@example.com"}).roles == {}
    with pytest.raises(AuthError, match="missing user claim 'email'"):
        v.identity({"sub": "123"})
    with pytest.raises(AuthError, match="at most 1000"):
        v.identity({"email": "bob@example.com", "groups": [f"g{i}" for i in range(1001)]})
    with pytest.raises(AuthError, match="not configured"):
        OidcVerifier(Settings())


def test_console_client_id_and_scopes_are_checked(monkeypatch, tmp_path):
    _env(monkeypatch, tmp_path, issuer=ISSUER, audience="console", client_id="console", scopes="openid email groups")
    s = Settings.from_env()
    assert (s.oidc_client_id, s.oidc_scopes) == ("console", "openid email groups")
    assert Settings().oidc_scopes == "openid email profile" and Settings().oidc_client_id is None
    for bad, words in (("email profile", "lacks 'openid'"), ("openid  email", "not a scope list"),
                       ('openid "x"', "not a scope list"), ("openid openid", "each scope once"),
                       ("openid " + "x" * 600, "not a scope list")):
        with pytest.raises(ValidationError, match="oidc_scopes") as exc:
            Settings(oidc_issuer=ISSUER, oidc_audience="a", oidc_scopes=bad)
        assert words in str(exc.value)
    with pytest.raises(ValidationError, match="needs an issuer"):
        Settings(oidc_client_id="console")
    for bad in ("has space", "x" * 257, "tab\tin"):
        with pytest.raises(ValidationError, match="not a client id"):
            Settings(oidc_issuer=ISSUER, oidc_audience="a", oidc_client_id=bad)
    monkeypatch.setenv("TRAINYARD_OIDC_SCOPES", "profile")
    with pytest.raises(TrainyardError) as exc:
        Settings.from_env()
    assert exc.value.field == "TRAINYARD_OIDC_SCOPES" and "openid" in str(exc.value)


def _auth_config(tmp_path, **oidc) -> dict:
    from fastapi.testclient import TestClient

    from trainyard.api.app import create_app

    token_file = tmp_path / "admin.token"
    token_file.write_text("unit-admin-token-123456\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(token_file),
                        storage=f"file://{tmp_path / 'storage'}", **oidc)
    with TestClient(create_app(settings, run_controller=False)) as client:
        resp = client.get("/v1/auth/config")  # no token: the login page asks before anyone signed in
        assert resp.status_code == 200, resp.text
        return resp.json()


def test_auth_config_tells_the_console_how_to_sign_in(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    assert _auth_config(tmp_path) == {"sso": False, "issuer": None, "client_id": None, "scopes": None,
                                      "redirect_path": None, "token": None}
    # an issuer for API clients, but no console client: the console keeps to pasted tokens
    assert _auth_config(tmp_path, oidc_issuer=ISSUER, oidc_audience="trainyard")["sso"] is False
    same = _auth_config(tmp_path, oidc_issuer=ISSUER, oidc_audience="console", oidc_client_id="console")
    assert same == {"sso": True, "issuer": ISSUER, "client_id": "console", "scopes": "openid email profile",
                    "redirect_path": "/auth/callback", "token": "id_token"}
    # the server's audience is an API's: only the access token carries it
    api = _auth_config(tmp_path, oidc_issuer=ISSUER, oidc_audience="trainyard-api", oidc_client_id="console")
    assert api["token"] == "access_token"

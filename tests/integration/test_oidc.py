"""Single sign-on against a real issuer stand-in (tests/support/oidc_issuer.py): a local HTTP
server (discovery + JWKS, and the code flow the console's test uses), RSA and EC keys made
there, real JWTs signed with PyJWT. No outside service.

Refusals are 401s that say why and never repeat the token; an issuer that cannot be reached
is a 503.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.oidc_issuer import Issuer

from trainyard.auth.oidc import OidcVerifier, looks_like_jwt, user_name_for
from trainyard.auth.roles import Role
from trainyard.config import Settings
from trainyard.errors import AuthError

AUDIENCE = "trainyard-test"
ROLES = "ml-team=vision:member,ml-leads=vision:maintainer,ml-leads=nlp:viewer,ops=*:admin"


@pytest.fixture(scope="module")
def issuer():
    idp = Issuer(api_audience=AUDIENCE)
    idp.add_key("rsa-1")
    idp.add_key("ec-1", kind="ec")
    yield idp
    idp.close()


def _settings(issuer, **over) -> Settings:
    return Settings(oidc_issuer=issuer.url, oidc_audience=AUDIENCE, oidc_group_roles=ROLES, **over)


@pytest.fixture(scope="module")
def verifier(issuer):
    return OidcVerifier(_settings(issuer))


def _refused(verifier, token: str, *, status: int = 401) -> str:
    with pytest.raises(AuthError) as exc:
        verifier.verify(token)
    err = exc.value
    assert err.status == status, str(err)
    text = json.dumps(err.to_dict())
    assert token not in text and token.split(".")[1][-24:] not in text  # never echoes the token
    return str(err)


def test_valid_token_gives_the_user_and_the_roles_of_its_groups(issuer, verifier):
    identity = verifier.verify(issuer.token())
    assert identity.user == user_name_for("alice@example.com")
    assert identity.user.startswith("alice-example-com-") and len(identity.user) <= 63
    assert identity.groups == ("ml-team",)
    assert dict(identity.roles) == {"vision": Role.MEMBER} and identity.admin is False

    # several groups: the highest role per project wins; *:admin makes an admin
    lead = verifier.verify(issuer.token("ec-1", groups=["ml-team", "ml-leads", "ops", "unmapped"]))
    assert dict(lead.roles) == {"vision": Role.MAINTAINER, "nlp": Role.VIEWER} and lead.admin is True
    assert lead.groups == ("ml-team", "ml-leads", "ops", "unmapped")

    # no groups claim: a user without roles (memberships stored on the server still apply)
    bare = verifier.verify(issuer.token(groups=None))
    assert bare.roles == {} and bare.admin is False and bare.groups == ()


def test_user_claim_is_configurable_and_never_falls_back(issuer):
    by_sub = OidcVerifier(_settings(issuer, oidc_user_claim="sub"))
    assert by_sub.verify(issuer.token()).user == "248289761001"
    message = _refused(by_sub, issuer.token(sub=None))
    assert "missing claim 'sub'" in message or "missing user claim 'sub'" in message
    by_name = OidcVerifier(_settings(issuer, oidc_user_claim="preferred_username"))
    message = _refused(by_name, issuer.token())
    assert "missing user claim 'preferred_username'" in message and "TRAINYARD_OIDC_USER_CLAIM" in message
    assert "reserved account 'admin'" in _refused(by_name, issuer.token(preferred_username="admin"))


def test_wrong_audience(issuer, verifier):
    message = _refused(verifier, issuer.token(aud="some-other-app"))
    assert "wrong audience" in message and AUDIENCE in message


def test_expired(issuer, verifier):
    now = int(time.time())
    assert "expired" in _refused(verifier, issuer.token(iat=now - 3600, exp=now - 120))
    # inside the clock-skew leeway it still passes
    assert verifier.verify(issuer.token(iat=now - 3600, exp=now - 5)).user


def test_not_valid_yet(issuer, verifier):
    assert "not valid yet" in _refused(verifier, issuer.token(nbf=int(time.time()) + 600))


def test_wrong_issuer(issuer, verifier):
    assert "wrong issuer" in _refused(verifier, issuer.token(iss="https://evil.example.com"))


def test_bad_signature_and_missing_claims(issuer, verifier):
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "bad signature" in _refused(verifier, issuer.token("rsa-1", key=impostor))
    assert "missing claim 'exp'" in _refused(verifier, issuer.token(exp=None))
    assert "not verified" in _refused(verifier, issuer.token(email_verified=False))
    assert "not a list of strings" in _refused(verifier, issuer.token(groups={"ml-team": 1}))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_alg_none_and_hmac_with_the_public_key_are_refused(issuer, verifier):
    claims = jwt.decode(issuer.token(), options={"verify_signature": False})
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'kid': 'rsa-1'}).encode())}.{_b64(json.dumps(claims).encode())}."
    assert looks_like_jwt(unsigned)
    assert "algorithm 'none' is not accepted" in _refused(verifier, unsigned)

    # the classic confusion: HS256 with the issuer's public key (which anyone can fetch) as secret
    pem = issuer.keys["rsa-1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    head = f"{_b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{_b64(json.dumps(claims).encode())}"
    forged = f"{head}.{_b64(hmac.new(pem, head.encode(), hashlib.sha256).digest())}"
    assert "algorithm 'HS256' is not accepted" in _refused(verifier, forged)

    # RS256 in the header over an EC key's kid: the key decides the algorithm, not the token
    wrong = issuer.token("ec-1", alg="RS256", key=issuer.keys["rsa-1"])
    assert "does not match" in _refused(verifier, wrong)


def test_unknown_key_id_refreshes_once_then_refuses(issuer):
    fresh = OidcVerifier(_settings(issuer), refresh_cooldown_s=0)
    assert fresh.verify(issuer.token()).user
    hits = issuer.jwks_hits
    assert fresh.verify(issuer.token("ec-1")).user  # cached: no fetch
    assert issuer.jwks_hits == hits

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = _refused(fresh, issuer.token("never-published", key=stranger))
    assert "unknown key id 'never-published'" in message
    assert issuer.jwks_hits == hits + 1  # exactly one refresh

    # a key the issuer starts publishing (rotation) is found by that one refresh
    issuer.add_key("rsa-2")
    assert fresh.verify(issuer.token("rsa-2")).user
    assert issuer.jwks_hits == hits + 2


def test_made_up_key_ids_do_not_flood_the_issuer(issuer):
    guarded = OidcVerifier(_settings(issuer))  # default cooldown between forced refreshes
    assert guarded.verify(issuer.token()).user
    hits = issuer.jwks_hits
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for n in range(5):
        assert "unknown key id" in _refused(guarded, issuer.token(f"made-up-{n}", key=stranger))
    assert issuer.jwks_hits == hits


def test_issuer_unreachable_or_lying_is_a_503(issuer):
    down = OidcVerifier(Settings(oidc_issuer="http://127.0.0.1:9/nothing", oidc_audience=AUDIENCE), timeout_s=2)
    assert "could not be reached" in _refused(down, issuer.token(), status=503)
    issuer.discovery_issuer = "https://someone-else.example.com"
    try:
        liar = OidcVerifier(_settings(issuer))
        assert "names issuer" in _refused(liar, issuer.token(), status=503)
    finally:
        issuer.discovery_issuer = None


def test_explicit_jwks_url_skips_discovery(issuer):
    direct = OidcVerifier(_settings(issuer, oidc_jwks_url=f"{issuer.url}/jwks"))
    issuer.discovery_issuer = "https://not-consulted.example.com"  # discovery would fail
    try:
        assert direct.verify(issuer.token()).user
    finally:
        issuer.discovery_issuer = None


def test_what_looks_like_a_jwt(issuer):
    assert looks_like_jwt(issuer.token())
    assert not looks_like_jwt("tyk_0123456789ab_" + "x" * 43)
    assert not looks_like_jwt("Qm9ndXMtbGVnYWN5LWFkbWluLXRva2Vu")  # the legacy admin token's shape
    assert not looks_like_jwt("eyJ.a")
    assert not looks_like_jwt("eyJh." + "a" * 20000 + ".b")


def test_a_real_server_takes_single_sign_on_tokens(issuer, test_root):
    """The server process, configured with this issuer, over real HTTP: a signed-in user gets the
    roles their groups map to, sees only those projects, and a stored membership adds to them."""
    import httpx
    from test_route_roles import MatrixServer

    root = test_root / "oidc-server"
    server = MatrixServer(root, None)
    server.env.update({"TRAINYARD_OIDC_ISSUER": issuer.url, "TRAINYARD_OIDC_AUDIENCE": AUDIENCE,
                       "TRAINYARD_OIDC_GROUP_ROLES": ROLES})
    with server, httpx.Client(base_url=server.url, timeout=30) as http:
        admin = {"Authorization": f"Bearer {server.admin_token}"}
        for project in ("vision", "nlp", "secret"):
            assert http.post("/v1/projects", json={"name": project}, headers=admin).status_code == 201
        token = issuer.token()
        sso = {"Authorization": f"Bearer {token}"}
        me = http.get("/v1/me", headers=sso).json()
        assert me["via"] == "oidc" and me["user"] == user_name_for("alice@example.com")
        assert me["projects"] == {"vision": "member"} and me["admin"] is False
        assert {p["name"] for p in http.get("/v1/projects", headers=sso).json()["projects"]} == {"vision"}
        job = {"spec": {"name": "sso-job", "workload": "cnn", "project": "vision", "resources": {"workers": 1}}}
        made = http.post("/v1/jobs", json=job, headers=sso)
        assert made.status_code == 201 and made.json()["owner"] == me["user"], made.text
        assert http.post("/v1/jobs", json={"spec": {**job["spec"], "project": "secret"}},
                         headers=sso).status_code == 404
        # a membership stored on the server adds to what the groups give
        assert http.put(f"/v1/projects/secret/members/{me['user']}", json={"role": "viewer"},
                        headers=admin).status_code == 200
        assert http.get("/v1/me", headers=sso).json()["projects"] == {"vision": "member", "secret": "viewer"}
        # refused tokens: 401, and the audit trail names no token
        for bad in (issuer.token(aud="someone-else"), issuer.token(exp=int(time.time()) - 3600)):
            resp = http.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
            assert resp.status_code == 401 and bad not in resp.text
        audit = http.get("/v1/audit", headers=admin).text
        assert token not in audit and me["user"] in audit
    assert token not in server.log()


def test_the_stand_ins_code_flow_checks_pkce(issuer):
    """What the console's sign-on relies on: a code is given only to a registered redirect URI,
    is exchanged only with the verifier of its challenge, and only once."""
    import secrets
    from urllib.parse import parse_qs, urlsplit

    import httpx

    from support.oidc_issuer import s256

    back = "http://127.0.0.1:1/auth/callback"
    issuer.clients["console-test"] = {back}
    verifier = secrets.token_urlsafe(48)

    def code() -> str:
        resp = httpx.get(f"{issuer.url}/authorize", params={
            "response_type": "code", "client_id": "console-test", "redirect_uri": back, "scope": "openid email",
            "state": "st", "nonce": "n-1", "code_challenge": s256(verifier), "code_challenge_method": "S256"})
        assert resp.status_code == 302, resp.text
        query = parse_qs(urlsplit(resp.headers["location"]).query)
        assert query["state"] == ["st"]
        return query["code"][0]

    def exchange(code: str, code_verifier: str) -> httpx.Response:
        return httpx.post(f"{issuer.url}/token", data={"grant_type": "authorization_code", "code": code,
                                                       "client_id": "console-test", "redirect_uri": back,
                                                       "code_verifier": code_verifier})

    first = code()
    wrong = exchange(first, secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert exchange(first, verifier).status_code == 400  # a refused code is spent too
    good = exchange(code(), verifier)
    assert good.status_code == 200, good.text
    console = OidcVerifier(Settings(oidc_issuer=issuer.url, oidc_audience="console-test",
                                    oidc_client_id="console-test"))
    assert console.verify(good.json()["id_token"]).user == user_name_for("alice@example.com")
    assert jwt.decode(good.json()["id_token"], options={"verify_signature": False})["nonce"] == "n-1"
    # no code for a redirect URI the client did not register, nor without PKCE
    assert httpx.get(f"{issuer.url}/authorize", params={"response_type": "code", "client_id": "console-test",
                                                        "redirect_uri": "http://evil.example/cb"}).status_code == 400
    assert httpx.get(f"{issuer.url}/authorize", params={"response_type": "code", "client_id": "console-test",
                                                        "redirect_uri": back, "scope": "openid"}).status_code == 400

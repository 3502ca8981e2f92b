"""A minimal but real OpenID Connect issuer for tests, over HTTP on 127.0.0.1.

- discovery (`/.well-known/openid-configuration`) and the key set (`/jwks`), RSA and EC keys
  made here, tokens signed with PyJWT;
- the authorization-code flow with PKCE (RFC 7636) for public clients: `/authorize` approves
  the test user at once and redirects back with a one-time code (only to a redirect URI
  registered for the client, only with an S256 code_challenge); `/token` gives a signed ID
  token (aud: the client id, the request's nonce) and access token (aud: `api_audience`) only
  when the code_verifier hashes to that challenge. Each refusal is recorded in `refusals`.

CORS is open, as an issuer serving browser apps has it for discovery, keys and tokens.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["Issuer", "s256"]

_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 4.1
CODE_TTL_S = 60


def s256(verifier: str) -> str:
    """The S256 code_challenge of a code_verifier (RFC 7636 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


class Issuer:
    """Start it, add keys (`add_key`), register clients (`clients[client_id] = {redirect URIs}`);
    `user` is the claims of whoever the authorize endpoint signs in."""

    def __init__(self, *, api_audience: str = "trainyard-test"):
        self.api_audience = api_audience
        self.keys: dict[str, object] = {}  # kid -> private key
        self.published: list[str] = []  # kids in the JWKS
        self.signing_kid: str | None = None  # what /token signs with (the first key added)
        self.jwks_hits = 0
        self.discovery_issuer: str | None = None  # what discovery claims (default: itself)
        self.clients: dict[str, set[str]] = {}
        self.user: dict = {"sub": "248289761001", "email": "alice@example.com", "email_verified": True,
                           "groups": ["ml-team"]}
        self.codes: dict[str, dict] = {}
        self.refusals: list[str] = []
        self.tokens_issued = 0
        self._lock = threading.Lock()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_OPTIONS(self):  # noqa: N802 (CORS preflight)
                self._send(204, None)

            def do_GET(self):  # noqa: N802 (http.server's name)
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    self._send(200, issuer.discovery())
                elif parts.path == "/jwks":
                    issuer.jwks_hits += 1
                    self._send(200, {"keys": [issuer.jwk(kid) for kid in issuer.published]})
                elif parts.path == "/authorize":
                    status, where = issuer.authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
                    if status == 302:
                        self.send_response(302)
                        self.send_header("Location", where)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self._send(status, {"error": "invalid_request", "error_description": where})
                else:
                    self.send_error(404)

            def do_POST(self):  # noqa: N802
                if urlsplit(self.path).path != "/token":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(min(length, 64 * 1024)).decode()).items()}
                status, body = issuer.exchange(form)
                self._send(status, body)

            def _send(self, status: int, body: dict | None):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header("Access-Control-Allow-Headers", "Content-Type, Authorization")
                self.send_header("Cache-Control", "no-store")
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ keys and tokens
    def add_key(self, kid: str, *, kind: str = "rsa", publish: bool = True):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
            else ec.generate_private_key(ec.SECP256R1())
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
            self.signing_kid = self.signing_kid or kid
        return key

    def jwk(self, kid: str) -> dict:
        public = self.keys[kid].public_key()
        alg = "RS256" if isinstance(public, rsa.RSAPublicKey) else "ES256"
        data = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public))
        return {**data, "kid": kid, "use": "sig", "alg": alg}

    def token(self, kid: str | None = None, *, alg: str | None = None, key=None, **claims) -> str:
        """A signed JWT for the test user; `claims` override (None removes a claim)."""
        kid = kid or self.signing_kid or "rsa-1"
        now = int(time.time())
        body = {"iss": self.url, "aud": self.api_audience, "iat": now, "exp": now + 300, **self.user, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        private = key or self.keys[kid]
        alg = alg or ("RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256")
        return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})

    def discovery(self) -> dict:
        return {"issuer": self.discovery_issuer or self.url, "jwks_uri": f"{self.url}/jwks",
                "authorization_endpoint": f"{self.url}/authorize", "token_endpoint": f"{self.url}/token",
                "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"],
                "code_challenge_methods_supported": ["S256"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                "token_endpoint_auth_methods_supported": ["none"], "scopes_supported": ["openid", "email", "profile"]}

    # ------------------------------------------------------------------ the code flow
    def _refuse(self, reason: str) -> str:
        self.refusals.append(reason)
        return reason

    def authorize(self, q: dict[str, str]) -> tuple[int, str]:
        """(302, redirect) approving the test user, or (400, why). Never redirects to an
        unregistered URI (RFC 6749 4.1.2.1)."""
        client, redirect = q.get("client_id", ""), q.get("redirect_uri", "")
        if redirect not in self.clients.get(client, ()):
            return 400, self._refuse(f"unknown client {client!r} or unregistered redirect_uri {redirect!r}")
        if q.get("response_type") != "code":
            return 400, self._refuse(f"response_type {q.get('response_type')!r}: only code")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return 400, self._refuse("a public client must send an S256 code_challenge (PKCE)")
        if "openid" not in q.get("scope", "").split(" "):
            return 400, self._refuse("scope lacks openid")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = {"client_id": client, "redirect_uri": redirect, "challenge": q["code_challenge"],
                                "nonce": q.get("nonce"), "scope": q["scope"], "expires": time.time() + CODE_TTL_S}
        return 302, f"{redirect}?{urlencode({'code': code, 'state': q.get('state', '')})}"

    def exchange(self, form: dict[str, str]) -> tuple[int, dict]:
        """The token endpoint: (200, tokens) or (400, an RFC 6749 5.2 error)."""
        def bad(error: str, why: str) -> tuple[int, dict]:
            return 400, {"error": error, "error_description": self._refuse(why)}

        if form.get("grant_type") != "authorization_code":
            return bad("unsupported_grant_type", f"grant_type {form.get('grant_type')!r}")
        with self._lock:  # one use per code, even when the exchange fails
            grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["expires"] < time.time():
            return bad("invalid_grant", "unknown, used or expired code")
        if form.get("client_id") != grant["client_id"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return bad("invalid_grant", "client_id or redirect_uri differ from the authorization request")
        verifier = form.get("code_verifier", "")
        if not _VERIFIER_RE.match(verifier) or not secrets.compare_digest(s256(verifier), grant["challenge"]):
            return bad("invalid_grant", "code_verifier does not match the code_challenge")
        extra = {"nonce": grant["nonce"]} if grant["nonce"] else {}
        id_token = self.token(aud=grant["client_id"], azp=grant["client_id"], **extra)
        self.tokens_issued += 1
        return 200, {"token_type": "Bearer", "expires_in": 300, "scope": grant["scope"],
                     "id_token": id_token, "access_token": self.token()}

    def close(self):
        self.server.shutdown()
        self.server.server_close()

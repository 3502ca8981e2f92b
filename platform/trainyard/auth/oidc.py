"""Single sign-on: the server accepts JWTs from one OIDC issuer besides its own API tokens.

A token is accepted when its signature checks out against the issuer's published keys (JWKS;
RS256 or ES256 only, so neither `none` nor an HMAC "signed" with the public key gets in), its
`iss` is exactly TRAINYARD_OIDC_ISSUER, its `aud` holds TRAINYARD_OIDC_AUDIENCE, and it is
inside its `exp`/`nbf` window (30 s of clock skew allowed). Then:

- the user is the TRAINYARD_OIDC_USER_CLAIM claim (default `email`). There is no fallback to
  another claim: the same person under two names would split their jobs and roles. When the
  claim is `email` and the token says `email_verified: false`, it is refused. A value that is
  a valid user name (lower-case letters, digits, '-') is the name; any other (an email, say)
  becomes a readable slug plus 12 hex of its sha256, `alice-example-com-1f0e...`, so that two
  different values never share a name. The local `admin` account cannot be reached this way:
  make a group admin with `group=*:admin` instead.
- the groups are the TRAINYARD_OIDC_GROUPS_CLAIM claim (a list of strings; a single string is
  one group), and TRAINYARD_OIDC_GROUP_ROLES turns them into project roles (the highest role a
  project gets from any group wins) and admin.

Keys: discovered from `<issuer>/.well-known/openid-configuration` unless TRAINYARD_OIDC_JWKS_URL
names them, fetched with a timeout and cached (PyJWKClient). A key id the cache does not know
triggers one refresh of the key set, at most once per cooldown (a flood of made-up key ids does
not become a flood of requests to the issuer), and is refused if it is still unknown.
Every refusal is an AuthError (401) naming the reason; none repeats the token. An issuer that
cannot be reached is an AuthError with status 503: the caller's token may well be fine.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

import jwt
from jwt import PyJWKClient

from trainyard.auth.roles import Role
from trainyard.config import Settings, oidc_url_problem
from trainyard.errors import AuthError
from trainyard.specs import NAME_RE

__all__ = ["OidcIdentity", "OidcVerifier", "looks_like_jwt", "user_name_for", "ACCEPTED_ALGORITHMS"]

# asymmetric only: the server holds public keys, and a token signed with one of them as an
# HMAC secret, or not signed at all, must not verify
ACCEPTED_ALGORITHMS = ("RS256", "ES256")
LEEWAY_S = 30
MAX_TOKEN_CHARS = 16 * 1024  # far above what issuers send; a bound on what we parse
MAX_GROUPS = 1000
_JWT_RE = re.compile(r"^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_NAME_RE = re.compile(NAME_RE)  # user names are names like any other
_RESERVED_USERS = frozenset({"admin", "anonymous"})
_HASH_HEX = 12


@dataclass(frozen=True)
class OidcIdentity:
    user: str
    groups: tuple[str, ...]
    roles: Mapping[str, Role]
    admin: bool


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (header.payload.signature, the header a base64url JSON object): what an
    issuer hands out, and what neither an API token (`tyk_...`) nor the admin token looks like."""
    return isinstance(token, str) and len(token) <= MAX_TOKEN_CHARS and _JWT_RE.match(token) is not None


def user_name_for(value: str) -> str:
    """The Trainyard user name of a user-claim value: the value itself when it is a valid name,
    else `<slug>-<12 hex of sha256(value)>` (one value, one name; two values, two names)."""
    if _NAME_RE.match(value):
        return value
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")[: 63 - _HASH_HEX - 1].strip("-") or "oidc"
    return f"{slug}-{hashlib.sha256(value.encode()).hexdigest()[:_HASH_HEX]}"


def _refused(reason: str, fix: str | None = None) -> AuthError:
    return AuthError(f"OIDC token refused: {reason}", fix=fix or "sign in again to get a fresh token")


def _shown(value: Any, limit: int = 40) -> str:
    """A claim or header value for a message: bounded, and never the token itself."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class OidcVerifier:
    """Verifies one issuer's tokens. One per server: it caches the discovery document and the
    key set, and is safe to share between threads."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0, jwks_lifespan_s: float = 300.0,
                 refresh_cooldown_s: float = 30.0, retry_after_failure_s: float = 5.0):
        if not self.configured(settings):
            raise AuthError("single sign-on is not configured", status=503,
                            fix="set TRAINYARD_OIDC_ISSUER and TRAINYARD_OIDC_AUDIENCE")
        self.issuer: str = settings.oidc_issuer  # type: ignore[assignment]
        self.audience: str = settings.oidc_audience  # type: ignore[assignment]
        self.user_claim = settings.oidc_user_claim
        self.groups_claim = settings.oidc_groups_claim
        self.group_roles = settings.oidc_group_roles
        self.timeout_s = timeout_s
        self._jwks_lifespan_s = jwks_lifespan_s
        self._refresh_cooldown_s = refresh_cooldown_s
        self._retry_after_failure_s = retry_after_failure_s
        self._jwks_url: str | None = settings.oidc_jwks_url
        self._client: PyJWKClient | None = None
        self._lock = threading.Lock()
        self._failed_at: float | None = None
        self._failure = ""

    @staticmethod
    def configured(settings: Settings) -> bool:
        return bool(settings.oidc_issuer and settings.oidc_audience)

    # ------------------------------------------------------------------ keys
    def _unavailable(self, what: str) -> AuthError:
        return AuthError(f"the sign-in provider could not be reached: {what}", status=503,
                         fix="try again shortly; if it persists, check TRAINYARD_OIDC_ISSUER "
                             "(and TRAINYARD_OIDC_JWKS_URL) on the server")

    def _discover(self) -> str:
        import httpx

        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=self.timeout_s, follow_redirects=False)
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(f"discovery at {url} failed ({type(exc).__name__})") from None
        if not isinstance(doc, dict):
            raise self._unavailable(f"discovery at {url} did not answer a JSON object")
        # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was asked for
        if doc.get("issuer") != self.issuer:
            raise self._unavailable(f"discovery at {url} names issuer {_shown(doc.get('issuer'), 120)}, "
                                    f"not {self.issuer!r}")
        jwks = doc.get("jwks_uri")
        problem = oidc_url_problem(jwks) if isinstance(jwks, str) else "is missing"
        if problem:
            raise self._unavailable(f"discovery at {url}: jwks_uri {problem}")
        return jwks

    def _jwk_client(self) -> PyJWKClient:
        with self._lock:
            if self._client is not None:
                return self._client
            # an issuer that is down is asked again after a pause, not on every request
            if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_after_failure_s:
                raise self._unavailable(self._failure)
            try:
                url = self._jwks_url or self._discover()
            except AuthError as exc:
                self._failed_at, self._failure = time.monotonic(), exc.message.split(": ", 1)[-1]
                raise
            self._client = PyJWKClient(url, cache_jwk_set=True, lifespan=self._jwks_lifespan_s,
                                       timeout=self.timeout_s, cooldown_duration=self._refresh_cooldown_s)
            self._failed_at = None
            return self._client

    def _signing_key(self, kid: str):
        client = self._jwk_client()
        try:
            return client.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise self._unavailable(f"fetching its keys from {client.uri} failed") from None
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
            if "Unable to find a signing key" in str(exc):
                raise _refused(f"unknown key id {_shown(kid)}: the issuer does not publish it",
                               fix="sign in again; if it persists, the token is not from this issuer") from None
            raise self._unavailable(f"its key set at {client.uri} is not usable ({type(exc).__name__})") from None

    # ------------------------------------------------------------------ tokens
    def verify(self, token: str) -> OidcIdentity:
        if not looks_like_jwt(token):
            raise _refused("not a JWT (header.payload.signature)" if len(token or "") <= MAX_TOKEN_CHARS
                           else f"longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _refused("malformed header") from None
        alg = header.get("alg")
        if alg not in ACCEPTED_ALGORITHMS:
            raise _refused(f"algorithm {_shown(alg)} is not accepted (only {', '.join(ACCEPTED_ALGORITHMS)})",
                           fix="use an ID or access token signed by the issuer")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("the header names no key id (kid)", fix="use an ID or access token signed by the issuer")
        key = self._signing_key(kid)
        try:
            claims = jwt.decode(token, key, algorithms=list(ACCEPTED_ALGORITHMS), audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_S,
                                options={"require": ["exp", "iss", "aud"], "verify_signature": True,
                                         "enforce_minimum_key_length": True})
        except jwt.ExpiredSignatureError:
            raise _refused("expired") from None
        except jwt.InvalidAudienceError:
            raise _refused(f"wrong audience: this server accepts tokens for {self.audience!r}",
                           fix=f"ask the issuer for a token whose aud is {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise _refused(f"wrong issuer: this server accepts tokens from {self.issuer!r}",
                           fix="sign in with the issuer this server trusts") from None
        except jwt.ImmatureSignatureError:
            raise _refused("not valid yet (nbf or iat is in the future)",
                           fix="check the clocks of this server and the issuer") from None
        except jwt.InvalidSignatureError:
            raise _refused("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(f"missing claim {exc.claim!r}") from None
        except jwt.InvalidAlgorithmError:
            raise _refused(f"algorithm {_shown(alg)} does not match the issuer's key {_shown(kid)}") from None
        except (jwt.InvalidKeyError, jwt.PyJWTError) as exc:
            raise _refused(f"invalid ({type(exc).__name__})") from None
        return self.identity(claims)

    def identity(self, claims: Mapping[str, Any]) -> OidcIdentity:
        """The identity verified claims describe (pure: claims in, identity out)."""
        raw = claims.get(self.user_claim)
        if not isinstance(raw, str) or not raw.strip():
            raise _refused(f"missing user claim {self.user_claim!r}",
                           fix="have the issuer include it, or set TRAINYARD_OIDC_USER_CLAIM to a claim "
                               "its tokens carry (sub, preferred_username)")
        if len(raw) > 320:
            raise _refused(f"user claim {self.user_claim!r} is longer than 320 characters")
        if self.user_claim == "email" and claims.get("email_verified") is False:
            raise _refused("the email address is not verified by the issuer",
                           fix="verify the address with the issuer, then sign in again")
        user = user_name_for(raw)
        if user in _RESERVED_USERS:
            raise _refused(f"user claim {self.user_claim!r} names the reserved account {user!r}",
                           fix="map an issuer group to admin with TRAINYARD_OIDC_GROUP_ROLES=group=*:admin")
        groups = self._groups(claims.get(self.groups_claim))
        roles: dict[str, Role] = {}
        admin = False
        for group in groups:
            for project, role in self.group_roles.get(group, {}).items():
                if project == "*":
                    admin = admin or role == "admin"
                    continue
                granted = Role[role.upper()]
                if granted > roles.get(project, 0):
                    roles[project] = granted
        return OidcIdentity(user=user, groups=groups, roles=roles, admin=admin)

    def _groups(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            raise _refused(f"groups claim {self.groups_claim!r} is not a list of strings",
                           fix="set TRAINYARD_OIDC_GROUPS_CLAIM to the claim that lists the user's groups")
        if len(value) > MAX_GROUPS:
            raise _refused(f"groups claim {self.groups_claim!r} lists {len(value)} groups; at most {MAX_GROUPS}")
        return tuple(dict.fromkeys(value))


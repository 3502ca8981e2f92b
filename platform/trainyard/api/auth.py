"""Who is calling, and may they: bearer tokens -> `Principal`, then role checks.

`current_principal` (a FastAPI dependency, through HTTPBearer so that OpenAPI documents it)
turns `Authorization: Bearer <token>` into a Principal:

    tyk_<id>_<secret>, or the legacy admin token  -> sha256 -> api_tokens row -> user + roles
    a JWT, when single sign-on is configured      -> trainyard.auth.oidc verifies it

No token, an unknown, expired or revoked one, or a disabled user: 401, with a message that
says which and how to get a working token. Tokens are never echoed or logged, and answers say
how to authenticate, never where the server keeps its files. Lookups are cached for a few
seconds; a change made through this server (revocation, roles, users) clears the cache.

`require_admin` answers 403 to non-admins. `authorize` applies the project roles: a project
the caller cannot see answers 404 with the text a missing object gets, so names do not leak.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from cachetools import TTLCache
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from trainyard.api.audit import audit_note
from trainyard.api.context import ServerContext
from trainyard.auth.principal import Principal
from trainyard.auth.roles import Role, higher, parse_role, role_name
from trainyard.auth.tokens import PREFIX, hash_token, same_hash
from trainyard.errors import AuthError, NotFoundError
from trainyard.store import Database
from trainyard.store import teams as repo

__all__ = ["current_principal", "principal_of", "remember_caller", "require_admin", "authorize", "bearer", "HOW_TO_AUTHENTICATE", "Authenticator",
           "principal_for_user"]

log = logging.getLogger("trainyard.api")

HOW_TO_AUTHENTICATE = ("send `Authorization: Bearer <token>` with your API token (`trainyard tokens create`; "
                       "on a new install, the admin token that `trainyard up` creates and prints); the SDK and "
                       "CLI send it for you (`trainyard login`, or set TRAINYARD_TOKEN)")
NEW_TOKEN = ("create a new one with `trainyard tokens create NAME` using another working token, or ask an "
             "admin of this server for one")

# auto_error=False: our own 401/403 bodies, in the shared error schema
bearer = HTTPBearer(auto_error=False, scheme_name="ApiToken",
                    description="A personal API token (or a single sign-on token where the server has an "
                                "issuer configured). " + HOW_TO_AUTHENTICATE[0].upper() + HOW_TO_AUTHENTICATE[1:])

CACHE_TTL_S = 5.0
_PRINCIPAL_KEY = "trainyard_principal"
TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class _Entry:
    principal: Optional[Principal]
    token_id: str
    expires_at: Optional[datetime]
    refusal: Optional[str]  # why the token is refused (revoked, disabled user), if it is


def _unknown() -> AuthError:
    return AuthError("the token is not valid for this server", status=401, fix=HOW_TO_AUTHENTICATE)


def principal_for_user(db_session, user: repo.UserRow, *, via: str = "token",
                       extra_roles: dict[str, Role] | None = None, admin: bool = False) -> Principal:
    roles = {p: parse_role(r) for p, r in repo.memberships(db_session, user.name).items()}
    for project, role in (extra_roles or {}).items():
        roles[project] = higher(roles.get(project), role)
    return Principal(user=user.name, kind=user.kind, admin=bool(user.admin or admin), roles=roles, via=via)


class Authenticator:
    """Token -> Principal, with a short in-process cache of lookups."""

    def __init__(self, db: Database, settings):
        self.db = db
        self.settings = settings
        self._cache: TTLCache = TTLCache(maxsize=4096, ttl=CACHE_TTL_S)
        self._lock = threading.Lock()
        self._touched: dict[str, float] = {}
        self._verifier = None

    def forget(self) -> None:
        """Drop every cached lookup: tokens, users or roles changed."""
        with self._lock:
            self._cache.clear()

    def principal_for(self, token: str) -> Principal:
        jwt_shaped = not token.startswith(PREFIX) and token.count(".") == 2
        if jwt_shaped:
            principal = self._oidc(token)
            if principal is not None:
                return principal
        digest = hash_token(token)
        with self._lock:
            entry = self._cache.get(digest)
        if entry is None:
            try:
                entry = self._load(digest)
            except AuthError:
                if jwt_shaped and not _oidc_available():
                    raise AuthError("single sign-on is not available on this server", status=401,
                                    fix=HOW_TO_AUTHENTICATE) from None
                raise
            with self._lock:
                self._cache[digest] = entry
        principal = self._admitted(entry)
        self._touch(entry.token_id)
        return principal

    def cached_principal(self, token: str) -> Optional[Principal]:
        """principal_for without touching the store: the principal (or the same AuthError) when
        the cache answers and no use is due to be recorded; None when principal_for must run
        (in a worker thread: it may read and write the store)."""
        if not token.startswith(PREFIX) and token.count(".") == 2:
            return None  # a single sign-on token: verified each time
        with self._lock:
            entry = self._cache.get(hash_token(token))
            if entry is None:
                return None
            last = self._touched.get(entry.token_id)
        if last is None or time.monotonic() - last >= TOUCH_EVERY_S:
            return None
        return self._admitted(entry)

    @staticmethod
    def _admitted(entry: _Entry) -> Principal:
        if entry.refusal:
            raise AuthError(entry.refusal, status=401, fix=NEW_TOKEN)
        now = datetime.now(timezone.utc)
        if entry.expires_at is not None and entry.expires_at <= now:
            raise AuthError(f"this token expired at {entry.expires_at.isoformat(timespec='seconds')}",
                            status=401, fix=NEW_TOKEN)
        assert entry.principal is not None
        return entry.principal

    def _load(self, digest: str) -> _Entry:
        with self.db.session() as s:
            row = repo.find_token_by_hash(s, digest)
            if row is None or not same_hash(row.sha256, digest):
                raise _unknown()
            if row.revoked_at is not None:
                return _Entry(None, row.id, row.expires_at,
                              f"this token was revoked at {row.revoked_at.isoformat(timespec='seconds')}")
            user = repo.find_user(s, row.user)
            if user is None or user.disabled:
                return _Entry(None, row.id, row.expires_at, f"user {row.user!r} is disabled on this server")
            return _Entry(principal_for_user(s, user), row.id, row.expires_at, None)

    def _touch(self, token_id: str) -> None:
        # last_used_at: at most one write a minute per token, so that reads stay reads
        now = time.monotonic()
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < TOUCH_EVERY_S:
                return
            if len(self._touched) > 10_000:
                self._touched.clear()
            self._touched[token_id] = now
        try:
            with self.db.session() as s:
                repo.touch_token(s, token_id)
        except Exception as exc:  # a busy store must not refuse a valid token
            log.warning("could not record the use of token %s: %s", token_id, type(exc).__name__)

    def _oidc(self, token: str) -> Optional[Principal]:
        """A principal from a single sign-on token; None when the token is not one (or SSO is off)."""
        try:
            from trainyard.auth import oidc
        except ImportError:  # this server has no single sign-on: the token may still be a stored one
            return None
        if not oidc.OidcVerifier.configured(self.settings) or not oidc.looks_like_jwt(token):
            return None
        if self._verifier is None:
            self._verifier = oidc.OidcVerifier(self.settings)
        identity = self._verifier.verify(token)
        with self.db.session() as s:
            user = repo.ensure_user(s, identity.user, kind="user")
            if user.disabled:
                raise AuthError(f"user {identity.user!r} is disabled on this server", status=401,
                                fix="ask an admin of this server")
            return principal_for_user(s, user, via="oidc", extra_roles=dict(identity.roles), admin=identity.admin)


def _oidc_available() -> bool:
    try:
        from trainyard.auth import oidc  # noqa: F401
    except ImportError:
        return False
    return True


def authenticator(ctx: ServerContext) -> Authenticator:
    if ctx.auth is None:
        ctx.auth = Authenticator(ctx.db, ctx.settings)
    return ctx.auth


async def current_principal(request: Request,
                            credentials: Optional[HTTPAuthorizationCredentials] = Security(bearer)) -> Principal:
    # async: a cached token is answered on the event loop; a plain `def` dependency costs
    # every request a hop to a worker thread and back. A lookup that needs the store runs
    # in a worker thread, as before. The context comes from the app, not as a dependency:
    # every request of every route solves this one, and each dependency costs it.
    token = (credentials.credentials if credentials is not None else "").strip()
    if not token:
        raise AuthError("this request needs a token", status=401, fix=HOW_TO_AUTHENTICATE)
    auth = authenticator(request.app.state.ctx)
    principal = auth.cached_principal(token)
    if principal is None:
        principal = await run_in_threadpool(auth.principal_for, token)
    return remember_caller(request, principal)


def remember_caller(request: Request, principal: Principal) -> Principal:
    """Record the request's caller: the audit trail's actor, and what `principal_of` reads.
    Whatever stands in for `current_principal` must call it too, or the hot routes answer 401."""
    audit_note(request).actor = principal.user
    request.scope.setdefault("state", {})[_PRINCIPAL_KEY] = principal
    return principal


def principal_of(request: Request) -> Principal:
    """The caller, as the router's `current_principal` dependency found it: for a hot route
    that takes it from there instead of declaring the dependency again (FastAPI solves each
    declared dependency per request, cached or not). 401 when none ran: never anonymous."""
    principal = (request.scope.get("state") or {}).get(_PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise AuthError("this request needs a token", status=401, fix=HOW_TO_AUTHENTICATE)
    return principal


async def require_admin(principal: Principal = Depends(current_principal)) -> Principal:
    if not principal.admin:
        raise AuthError(f"this needs an admin of the server, and {principal.user!r} is not one", status=403,
                        fix="ask an admin of this server")
    return principal


def authorize(principal: Principal, *, project: str, need: Role, what: str, ident: str,
              owner: str | None = None, doing: str = "do this") -> None:
    """Raise unless `principal` may act with role `need` on `what` `ident` of `project`.

    Not visible -> NotFoundError(what, ident), the very error a missing object gets; visible
    but the role is too low -> 403 naming the role needed; need=MEMBER with `owner`: a member
    acts only on their own objects."""
    role = principal.role_in(project)
    if role is None:
        raise NotFoundError(what, ident)
    if role < need:
        raise AuthError(f"you need the {role_name(need)} role in project {project!r} to {doing}; "
                        f"{principal.user!r} is {role_name(role)}", status=403,
                        fix=f"ask a maintainer of project {project!r} or an admin")
    if need == Role.MEMBER and owner is not None and role == Role.MEMBER and owner != principal.user:
        raise AuthError(f"only its owner or a maintainer of project {project!r} may {doing}; "
                        f"{what} {ident!r} belongs to {owner!r}", status=403,
                        fix=f"ask {owner!r} or a maintainer of project {project!r}")

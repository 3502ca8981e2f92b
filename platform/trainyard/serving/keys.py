"""Endpoint keys: what a request to a non-public endpoint on Serve's HTTP port must carry.

Pure (hashlib, hmac, secrets): the replicas check keys with this module, the server makes
them with it. No ray, no torch, no I/O but `server_secret`.

- A key is `tye_<12 hex id>_<secrets.token_urlsafe(32)>`, shown once at creation. Only the
  sha256 of the whole key is kept, in the endpoint deployment's `user_config` ("auth"), next
  to the traffic split: adding or revoking a key reaches every replica without a restart,
  through the same apply-and-wait as a traffic change.
- The check hashes the presented key and compares that digest with every stored hash
  (`hmac.compare_digest`, no early exit): its time does not depend on the key, only on how
  many keys the endpoint has (a handful; MAX_KEYS bounds it).
- The server reaches its endpoints with an internal key of its own (predictions forwarded by
  `POST /v1/endpoints/{name}/predict`, the stats the promotion reads). It is not stored at
  all: it is HMAC-SHA256(server secret, endpoint name), recomputed when needed, where the
  server secret is the key that already encrypts the store's secrets ($TRAINYARD_SECRET_KEY or
  home/secret.key). Only its sha256 goes into user_config, like the others'. So there is no
  new secret to keep, back up or rotate: servers sharing a store share the key and so reach
  the same endpoints, a restarted server reaches what it deployed, and a leaked internal key
  opens one endpoint, not all. It is never listed, and revoking keys never touches it.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

__all__ = ["KEY_PREFIX", "MAX_KEYS", "KEY_NAME_RE", "HOW_TO_AUTHENTICATE", "EndpointAuth", "new_key",
           "hash_key", "matches", "bearer_of", "internal_key", "server_secret"]

KEY_PREFIX = "tye_"
MAX_KEYS = 64  # the check compares with each stored hash: keep it a handful
KEY_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY_RE = re.compile(r"^tye_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
_INTERNAL_CONTEXT = b"trainyard endpoint internal key v1\x00"

HOW_TO_AUTHENTICATE = ("send `Authorization: Bearer <endpoint key>`; a maintainer of the endpoint's project "
                       "creates keys with POST /v1/endpoints/{name}/keys on the Trainyard server, or predict "
                       "through the server (POST /v1/endpoints/{name}/predict) with your Trainyard token")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def looks_like_key(text: str) -> bool:
    return bool(_KEY_RE.match(text))


def new_key(name: str, *, now: datetime | None = None) -> tuple[str, dict]:
    """A fresh key and the record kept of it (no key text in the record)."""
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    created = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    return key, {"id": key_id, "name": name, "sha256": hash_key(key), "created_at": created}


def matches(presented: str, hashes: Sequence[str]) -> bool:
    """Whether `presented` is one of the keys whose sha256 hex digests are `hashes`.

    Every hash is compared, whatever matched before: the time depends on len(hashes) only."""
    digest = hash_key(presented).encode()
    found = False
    for stored in hashes:
        found |= hmac.compare_digest(digest, stored.encode())
    return found


def bearer_of(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <key>` header; None when there is none."""
    if not authorization:
        return None
    scheme, _, credential = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def internal_key(secret: bytes, endpoint: str) -> str:
    """The server's own key for `endpoint` (see the module's docstring)."""
    mac = hmac.new(secret, _INTERNAL_CONTEXT + endpoint.encode(), hashlib.sha256).hexdigest()
    return f"{KEY_PREFIX}{mac[:12]}_{mac[12:]}"


def server_secret() -> bytes:
    """The server's secret key (the store's Fernet key, from the same place the store reads it:
    $TRAINYARD_SECRET_KEY, else home/secret.key, created on first use)."""
    import os

    from trainyard.store import crypto

    env_key = os.environ.get(crypto.KEY_ENV)
    if env_key:
        return env_key.strip().encode()
    crypto.ensure_key()
    return crypto.key_file().read_bytes().strip()


@dataclass(frozen=True)
class EndpointAuth:
    """The "auth" part of an endpoint's user_config, as the replicas apply it."""

    public: bool = False
    internal: str | None = None  # sha256 of the server's internal key
    keys: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)  # {"id","name","sha256","created_at"}

    @classmethod
    def from_user_config(cls, data: Mapping | None) -> "EndpointAuth":
        """A config without "auth" (an endpoint deployed before keys existed) is closed: not public,
        no key; its next deploy or key change opens it to its keys."""
        if not data:
            return cls()
        keys = tuple(dict(k) for k in data.get("keys") or () if isinstance(k, Mapping) and k.get("sha256"))
        return cls(public=data.get("public") is True, internal=data.get("internal") or None, keys=keys)

    def to_user_config(self) -> dict:
        return {"public": self.public, "internal": self.internal, "keys": [dict(k) for k in self.keys]}

    def hashes(self) -> tuple[str, ...]:
        return tuple(k["sha256"] for k in self.keys) + ((self.internal,) if self.internal else ())

    def listed(self) -> list[dict]:
        """What a list of keys may show: never the hash, never the internal key."""
        return [{"id": k["id"], "name": k["name"], "created_at": k.get("created_at")} for k in self.keys]

    def check(self, authorization: str | None, *, endpoint: str, open_path: bool) -> tuple[int, dict] | None:
        """None when the request may pass, else (status, JSON body).

        `open_path`: a path a public endpoint serves to anyone (predict, openapi.json)."""
        if self.public and open_path:
            return None
        presented = bearer_of(authorization)
        fix = HOW_TO_AUTHENTICATE.replace("{name}", endpoint)
        if presented is None:
            return 401, {"error": "unauthorized", "message": f"endpoint {endpoint!r} needs a key", "fix": fix}
        if not matches(presented, self.hashes()):
            return 403, {"error": "forbidden",
                         "message": f"the key is not valid for endpoint {endpoint!r} (unknown or revoked)",
                         "fix": fix}
        return None

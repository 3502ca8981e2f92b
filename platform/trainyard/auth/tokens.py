"""Personal API tokens: `tyk_<12 hex id>_<secret>`, stored only as the sha256 of the whole token.

The id is public (lists show it, revocation names it); the secret is shown once, when the
token is made. A lookup hashes the presented token, finds the row by that hash (indexed) and
compares the hashes in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["PREFIX", "NewToken", "new_token", "hash_token", "token_id", "same_hash", "TOKEN_ID_RE"]

PREFIX = "tyk_"
TOKEN_ID_RE = r"^[0-9a-f]{12}$"
_TOKEN_RE = re.compile(r"^tyk_([0-9a-f]{12})_[A-Za-z0-9_-]{20,128}$")


@dataclass(frozen=True)
class NewToken:
    id: str
    token: str  # shown once; never stored, logged or listed
    sha256: str

    def __repr__(self) -> str:  # a token must not reach a log through a repr
        return f"NewToken(id={self.id!r}, token='***')"


def new_token() -> NewToken:
    ident = secrets.token_hex(6)
    token = f"{PREFIX}{ident}_{secrets.token_urlsafe(32)}"
    return NewToken(id=ident, token=token, sha256=hash_token(token))


def hash_token(token: str) -> str:
    """sha256 hex of the whole token (also of a legacy admin token, which has no prefix)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_id(token: str) -> str | None:
    """The id part of a well-formed `tyk_` token, else None."""
    match = _TOKEN_RE.match(token)
    return match.group(1) if match else None


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

"""`Idempotency-Key` for creating routes: a retried request answers the same, and creates once.

    same key, same request       -> the first answer again (same id), nothing created
    same key, another request    -> 409 naming the key
    no key                       -> every request creates

Keys live in the store (idempotency_keys). Jobs and sweeps record theirs in the transaction
that creates the row (api.routes.jobs.submit_kind), so even a retry that races the first
request creates nothing; other routes record theirs when they are done (their resources have
unique names, or their effect is declarative, so a race cannot create twice).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.api.context import ServerContext
from trainyard.errors import ConflictError
from trainyard.store import idempotency as repo

__all__ = ["IdempotencyKey", "Idempotency", "idempotency_for", "KEY_RE", "REPLAYED_HEADER"]

KEY_RE = r"^[!-~]{0,255}$"  # printable ASCII, no spaces: a UUID, a ULID, a hash... ("": no key)
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKey = Annotated[Optional[str], Header(
    alias="Idempotency-Key", max_length=255, pattern=KEY_RE,
    description="Makes the request safe to retry: the same key with the same body returns the first "
                "answer and creates nothing; with another body it is a 409. One key per logical request "
                "(the SDK and CLI send one).")]


@dataclass(frozen=True)
class Idempotency:
    key: str
    route: str
    fingerprint: str

    def replay(self, ctx: ServerContext) -> Optional[JSONResponse]:
        """The stored answer for this key, or None when the key is new."""
        with ctx.db.session() as s:
            row = repo.find_key(s, self.key)
            if row is None:
                return None
            if row.fingerprint != self.fingerprint:
                raise ConflictError(
                    f"Idempotency-Key {self.key[:80]!r} was already used with a different request "
                    f"({row.route})", field="Idempotency-Key", value=self.key[:80],
                    fix="send a new key for a new request; resend the same body to retry the old one")
            return JSONResponse(row.response, status_code=row.status_code, headers={REPLAYED_HEADER: "true"})

    def record_in(self, session: Session, *, status_code: int, response: dict[str, Any],
                  resource_id: str | None = None) -> None:
        repo.record_key(session, key=self.key, fingerprint=self.fingerprint, route=self.route,
                        status_code=status_code, response=response, resource_id=resource_id)

    def run(self, ctx: ServerContext, create: Callable[[], Any], *, status_code: int,
            resource_id: Callable[[Any], Optional[str]] = lambda _r: None) -> Any:
        """Replay, or create and then record (for routes whose creation is not one transaction)."""
        replayed = self.replay(ctx)
        if replayed is not None:
            return replayed
        result = create()
        body = result if isinstance(result, dict) else None
        if body is None:
            return result
        try:
            with ctx.db.session() as s:
                self.record_in(s, status_code=status_code, response=body, resource_id=resource_id(body))
        except IntegrityError:  # a twin request finished first: answer as it did
            return self.replay(ctx) or result
        return result


def fingerprint(method: str, route: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    digest = hashlib.sha256(f"{method} {route}\n".encode())
    digest.update(canonical.encode())
    return digest.hexdigest()


def idempotency_for(key: Optional[str], *, method: str, route: str, body: Any) -> Optional[Idempotency]:
    if not key:
        return None
    return Idempotency(key=key, route=f"{method} {route}"[:128], fingerprint=fingerprint(method, route, body))

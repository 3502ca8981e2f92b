"""The audit trail: one row per state-changing request (POST, PUT, PATCH, DELETE), allowed or
refused, written before the answer leaves (a client that saw the answer finds the row).

Routes and the auth dependency fill in what only they know through `audit_note(request)`:
the actor, the object's type, id and project. Never the token, never a body. A failed audit
write is logged and the answer goes out as it was: the trail must not turn a success into a 500.

The row goes through the server's group committer (controller/group_commit.py), the one that
submissions use: under load, audit rows and job rows share commits instead of each request
taking SQLite's one write lock for a transaction of its own (which made concurrent requests
queue in SQLite's busy-wait, up to 100 ms a retry). The answer still waits for that commit.
Predictions are data, not state, and a spec check (`.../validate`) creates nothing: neither is
audited (the console checks a spec each time its author stops typing).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import anyio
from starlette.requests import Request

__all__ = ["AuditNote", "audit_note", "AuditMiddleware", "AUDITED_METHODS", "outcome_for", "record_in",
           "mark_recorded"]

log = logging.getLogger("trainyard.api.audit")

AUDITED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNAUDITED_SUFFIXES = ("/predict", "/jobs/validate", "/sweeps/validate")
_KEY = "trainyard_audit"
_SINGULAR = {"jobs": "job", "sweeps": "sweep", "clusters": "cluster", "users": "user", "tokens": "token",
             "projects": "project", "endpoints": "endpoint", "models": "model", "promotions": "promotion",
             "audit": "audit"}


@dataclass
class AuditNote:
    actor: Optional[str] = None
    object_type: Optional[str] = None
    object_id: Optional[str] = None
    project: Optional[str] = None
    # (event id, status): the row a route wrote in its own transaction (record_in), committed
    written: Optional[tuple[int, int]] = None


def audit_note(request: Request) -> AuditNote:
    state = request.scope.setdefault("state", {})
    note = state.get(_KEY)
    if note is None:
        note = state[_KEY] = AuditNote()
    return note


def record_in(request: Request, session, *, status: int):
    """Write the request's audit row in the caller's transaction, as answered `status`; its id.

    For a route whose own write is what it audits (a submission): the row is committed with
    that write, so the answer waits for one commit, not two. Once that transaction committed,
    call mark_recorded: the middleware then writes no second row, and corrects this one if
    the answer that leaves has another status."""
    from trainyard.store import teams

    return teams.record_audit(session, **_fields(request.scope, status))


def mark_recorded(request: Request, event_id, *, status: int) -> None:
    """`event_id`: what record_in returned (an int, or the PendingId of a batched row, read
    here: after the commit)."""
    audit_note(request).written = (int(event_id), status)


def _fields(scope, status: int) -> dict:
    note: AuditNote = (scope.get("state") or {}).get(_KEY) or AuditNote()
    route = scope.get("route")
    path = str(scope.get("path", ""))
    template = getattr(route, "path", None) or path
    kind, ident = _from_path(path)
    client = scope.get("client")
    return dict(actor=(note.actor or "anonymous")[:64], action=f"{scope.get('method', '')} {template}"[:200],
                object_type=(note.object_type or kind)[:32], object_id=(note.object_id or ident),
                project=note.project, status_code=status, outcome=outcome_for(status),
                source_ip=(client[0][:64] if client else None))


def outcome_for(status: int) -> str:
    if status < 400:
        return "ok"
    return "error" if status >= 500 else "refused"


def _from_path(path: str) -> tuple[str, Optional[str]]:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "v1":
        kind = _SINGULAR.get(parts[1], parts[1][:32])
        return kind, (parts[2][:128] if len(parts) > 2 else None)
    return (parts[0][:32] if parts else "server"), None


class AuditMiddleware:
    def __init__(self, app, *, committer_of):
        self.app = app
        # app -> GroupCommitter (the app's context is built before its middleware runs)
        self.committer_of = committer_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in AUDITED_METHODS \
                or str(scope.get("path", "")).endswith(UNAUDITED_SUFFIXES):
            return await self.app(scope, receive, send)
        written = False

        async def record(status: int) -> None:
            nonlocal written
            if written:
                return
            written = True
            note: Optional[AuditNote] = (scope.get("state") or {}).get(_KEY)
            if note is not None and note.written is not None and note.written[1] == status:
                return  # committed with the route's own write (record_in): no thread, no commit
            try:
                await anyio.to_thread.run_sync(self._write, scope, status)
            except Exception as exc:  # noqa: BLE001  (logged by type only: a message may quote values)
                log.error("could not write the audit row of %s %s (status %s): %s", scope.get("method"),
                          str(scope.get("path", ""))[:200], status, type(exc).__name__)

        async def send_audited(message):
            if message["type"] == "http.response.start":
                await record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        except BaseException:
            await record(500)
            raise

    def _write(self, scope, status: int) -> None:
        from trainyard.store import teams

        note: Optional[AuditNote] = (scope.get("state") or {}).get(_KEY)
        if note is not None and note.written is not None:  # the answer is not what record_in wrote
            event_id = note.written[0]

            def correct(session) -> None:
                teams.correct_audit(session, event_id, status_code=status, outcome=outcome_for(status))

            self.committer_of(scope["app"]).run(correct)
            return
        fields = _fields(scope, status)

        def write(session) -> None:
            teams.record_audit(session, want_id=False, **fields)

        # returns once the commit that holds the row returned (a failed one raises here)
        self.committer_of(scope["app"]).run(write)

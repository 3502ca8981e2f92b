"""Submissions answered below FastAPI's routing: the same route code, the same answers.

`POST /v1/jobs` and `POST /v1/sweeps` are the platform's hot write path: a burst of
submissions is what a shared fleet sends. Measured with py-spy at 32 clients (share of the
GIL's samples), FastAPI's routing around the route took about 40%: matching, solving the
router's dependency and the body (17%), and the layers an answer passes on its way out. This
layer takes the common case and calls the route's own endpoint with what FastAPI would have
given it, found the way FastAPI finds it:

    the body            json.loads, then the route's body model (FastAPI's own two steps)
    the caller          the router's dependency's work: Bearer token -> cached principal
    Idempotency-Key     the header, when it matches the route's pattern

Before the endpoint runs, anything else goes to the full stack with the body already read,
and nothing has changed yet: a token the cache does not hold (the full path looks it up, so
a bad token costs one lookup, not two), a body that is not JSON or that the model refuses
(FastAPI's 422 names the fields), another content type, a body over the route's limit.
Once the endpoint runs it may commit, so nothing is handed over: its exceptions get the
app's own handlers, looked up as Starlette's exception middleware looks them up, and one
without a handler goes on to the catch-all 500.

It sits inside the audit trail and the catch-all (app.create_app), so each request is audited
and bounded as before. The OpenAPI document still describes the routes, which answer
whatever this layer hands over. tests/unit/test_submit_fast_path.py compares its answers
with an app built without it.
"""
from __future__ import annotations

import json
import re
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.requests import Request

from trainyard.api.auth import authenticator, remember_caller
from trainyard.api.errors import trainyard_error_response
from trainyard.api.idempotency import KEY_RE
from trainyard.errors import TrainyardError

__all__ = ["FastSubmit", "SubmitRoute", "submit_route"]

_KEY = re.compile(KEY_RE)
_JSON_TYPES = ("application/json", "application/json; charset=utf-8")


@dataclass(frozen=True)
class SubmitRoute:
    """A creating route this layer may answer: its endpoint (called as FastAPI calls it, with
    `body`, `request` and `idempotency_key`), its body model and its body limit."""
    endpoint: Callable[..., Awaitable[Any]]
    body_model: type[BaseModel]
    max_body: int


def submit_route(endpoint: Callable[..., Awaitable[Any]], *, max_body: int) -> SubmitRoute:
    """The route of `endpoint`, its body model read from its own annotation (one source)."""
    return SubmitRoute(endpoint, typing.get_type_hints(endpoint)["body"], max_body)


class _HandOver(Exception):
    """The full stack answers this request."""


class FastSubmit:
    """ASGI middleware: `routes` maps a path to the SubmitRoute that answers its POST.
    `counts` (served, handed_over) is shared with the caller, for tests and /v1/status."""

    def __init__(self, app, *, routes: dict[str, SubmitRoute], counts: Counter | None = None):
        self.app = app
        self.routes = routes
        self.counts = counts if counts is not None else Counter()

    async def __call__(self, scope, receive, send):
        route = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None or scope.get("method") != "POST" or scope.get("root_path"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if headers.get("content-type", "").lower() not in _JSON_TYPES \
                or not _length_within(headers.get("content-length"), route.max_body):
            return await self._hand_over(scope, receive, send)
        chunks: list[bytes] = []
        if not await _read_body(receive, chunks, route.max_body):
            return await self._hand_over(scope, _replaying(chunks, receive, complete=False), send)
        replay = _replaying(chunks, receive, complete=True)
        state_before = dict(scope.get("state") or {})
        request = Request(scope, receive)
        try:
            call = self._prepare(route, request, headers, b"".join(chunks))
        except _HandOver:
            scope["state"] = state_before  # as it was: the full stack starts over
            return await self._hand_over(scope, replay, send)
        except TrainyardError as exc:  # a refused token, as the router's dependency refuses it
            response = trainyard_error_response(exc)
        else:
            # From here the route's code runs and may commit: nothing is handed over again.
            # Its errors get the app's own handlers, as FastAPI's exception middleware gives
            # them; one with no handler goes on to the catch-all 500.
            try:
                response = await call()
            except Exception as exc:
                handler = _handler_for(request.app, exc)
                if handler is None:
                    raise
                response = await handler(request, exc)
        self.counts["served"] += 1
        await response(scope, receive, send)

    def _prepare(self, route: SubmitRoute, request: Request, headers: Headers, raw: bytes):
        """The route's call, with what FastAPI would pass it; _HandOver when FastAPI would
        answer otherwise (or must look something up first). Changes nothing but the scope."""
        # in FastAPI's order, so that a request with several faults gets the same answer: the
        # body is parsed, then the router's dependency (the caller), then header and body checks
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise _HandOver from None
        scheme, token = get_authorization_scheme_param(headers.get("authorization"))
        token = token.strip() if scheme.lower() == "bearer" else ""
        principal = authenticator(request.app.state.ctx).cached_principal(token) if token else None
        if principal is None:
            raise _HandOver  # no token, or one the cache does not hold: the full path looks it up
        remember_caller(request, principal)
        key = headers.get("idempotency-key")
        if key is not None and not _KEY.fullmatch(key):
            raise _HandOver  # the route's header pattern answers 422
        try:
            body = route.body_model.model_validate(data)
        except (ValueError, RecursionError):  # the model's refusal (a ValidationError): a 422 naming fields
            raise _HandOver from None
        return lambda: route.endpoint(body=body, request=request, idempotency_key=key)

    async def _hand_over(self, scope, receive, send):
        self.counts["handed_over"] += 1
        await self.app(scope, receive, send)


def _handler_for(app, exc: Exception):
    """The app's exception handler for `exc`, looked up along its classes as Starlette does."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


def _replaying(chunks: list[bytes], receive, *, complete: bool):
    """A receive that gives the bytes already read, then what is left of the request."""
    given = False

    async def replay():
        nonlocal given
        if not given:  # one message even for an empty body: the route waits for it
            given = True
            body = b"".join(chunks)
            chunks.clear()
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()  # the rest of the body, or the client's disconnect
    return replay


def _length_within(value: Optional[str], limit: int) -> bool:
    if value is None:
        return True  # chunked: counted while read
    # ASCII digits, and few of them: str.isdigit() also takes '²', which int() refuses, and
    # int() refuses more than 4,300 digits; anything odd is the full stack's to answer
    return value.isascii() and value.isdigit() and len(value) <= 20 and int(value) <= limit


async def _read_body(receive, chunks: list[bytes], limit: int) -> bool:
    """Read the body into `chunks`; False (and what was read kept in `chunks`) when it goes
    past `limit` or the client left: the full stack answers that."""
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            return False
        if not message.get("more_body", False):
            return True

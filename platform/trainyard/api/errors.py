"""One error schema for every non-2xx answer: `{"error", "message", "issues", ...}`.

TrainyardError -> err.to_dict() with err.status; FastAPI's own errors (request validation,
unknown route, wrong method, body too large, unparsable body) and anything unexpected are
rewritten into the same shape. Bodies are bounded and always encodable: values are cut,
NaN/inf become strings, nested input is summarised; a request body is never echoed whole.
"""
from __future__ import annotations

import logging
import math
import traceback
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from trainyard.errors import FieldIssue, SpecError, TrainyardError

__all__ = ["install_error_handlers", "BodyLimitAsJSON", "ErrorBody", "IssueBody", "error_responses", "bounded", "error_body",
           "trainyard_error_response"]

log = logging.getLogger("trainyard.api")

_MAX_TEXT = 300  # characters of any string value kept in an error body
_MAX_MESSAGE = 4000
_MAX_ITEMS = 20  # list items / mapping keys kept
_MAX_DEPTH = 4
_MAX_ISSUES = 50


class IssueBody(BaseModel):
    """One problem with one field."""

    model_config = ConfigDict(extra="allow")

    field: str = Field(..., description="Dotted path of the field, '' for the whole request.")
    message: str
    value: Any = Field(None, description="The value given (cut to a few hundred characters).")
    fix: Optional[str] = Field(None, description="What to do instead.")


class ErrorBody(BaseModel):
    """The body of every error answer."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(..., description="Machine-readable code: invalid_spec, not_found, conflict, "
                                        "unauthorized, forbidden, too_large, cluster_error, internal, ...")
    message: str = Field(..., description="What went wrong, for a person.")
    issues: list[IssueBody] = Field(..., description="One entry per bad field; empty when no field is at fault.")
    field: Optional[str] = None
    value: Any = None
    fix: Optional[str] = None


_DESCRIPTIONS = {
    400: "Bad request: the body could not be read, or a value is not allowed",
    401: "No token: send `Authorization: Bearer <token>`",
    403: "The token is not valid for this server",
    404: "Not found (the message lists what exists)",
    405: "Method not allowed",
    409: "Conflict: the state does not allow it, or the Idempotency-Key was used with another body",
    413: "Request body too large (the message names the limit)",
    422: "Invalid request: `issues` names each bad field, what was wrong and the fix",
    429: "Too many at once: the caller already holds as many of this resource as allowed (the message says which)",
    502: "A Ray cluster or MLflow did not answer as expected",
    503: "A backend (MLflow, Serve) is not configured or not ready",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with the shared ErrorBody schema."""
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS.get(code, "Error")} for code in codes}


def bounded(value: Any, depth: int = 0) -> Any:
    """A JSON-encodable, size-bounded copy of `value` (for error bodies)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**63 else _cut(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # 'nan', 'inf': JSON has no such numbers
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", "replace"))
    if depth >= _MAX_DEPTH:
        return "..."
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out = [bounded(v, depth + 1) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            out.append(f"... {len(items) - _MAX_ITEMS} more")
        return out
    if isinstance(value, dict):
        out_d: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                out_d["..."] = f"{len(value) - _MAX_ITEMS} more keys"
                break
            out_d[_cut(str(k), 80)] = bounded(v, depth + 1)
        return out_d
    return _cut(repr(value))


def _cut(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_body(data: dict[str, Any]) -> dict[str, Any]:
    """Give any error dict the shared shape, bounded."""
    body: dict[str, Any] = {}
    body["error"] = _cut(str(data.get("error") or "error"), 64)
    body["message"] = _cut(str(data.get("message") or body["error"]), _MAX_MESSAGE)
    issues = data.get("issues") or []
    body["issues"] = []
    for issue in list(issues)[:_MAX_ISSUES]:
        issue = dict(issue) if isinstance(issue, dict) else {"field": "", "message": str(issue)}
        body["issues"].append({"field": _cut(str(issue.get("field") or ""), 200),
                               "message": _cut(str(issue.get("message") or ""), _MAX_MESSAGE),
                               "value": bounded(issue.get("value")),
                               "fix": None if issue.get("fix") is None else _cut(str(issue["fix"]), _MAX_MESSAGE)})
    for key, value in data.items():
        if key in ("error", "message", "issues"):
            continue
        if key == "value":
            body[key] = bounded(value)
        elif key in ("field", "fix"):
            body[key] = None if value is None else _cut(str(value), _MAX_MESSAGE)
        else:
            body[_cut(str(key), 64)] = bounded(value)
    return body


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (("." if out else "") + part)
    return out or "body"


def _json(data: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(data), status_code=status, headers=headers)


def _status_code(exc: StarletteHTTPException) -> tuple[str, str]:
    return {
        400: ("bad_request", "the request body could not be read"),
        401: ("unauthorized", "this request needs a token"),
        403: ("forbidden", "not allowed"),
        404: ("not_found", "no such route"),
        405: ("method_not_allowed", "this route does not take this method"),
        413: ("too_large", "the request body is too large"),
    }.get(exc.status_code, ("error", str(exc.detail)))


def _too_large_body(limit: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"error": "too_large", "message": "the request body is too large",
                            "fix": "send less: leave data and checkpoints out of a working_dir (read them from "
                                   "storage) and keep specs small"}
    if isinstance(limit, int):
        data["message"] = (f"the request body is larger than this route's limit of {limit} bytes "
                           f"({limit / (1024 * 1024):.1f} MiB)")
        data["limit_bytes"] = limit
    return data


class BodyLimitAsJSON:
    """Starlette's body limiter answers 413 in plain text from inside the route; give that
    answer the shared error schema, with the limit named."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        replaced = False

        async def send_json(message):
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 413:
                ctype = dict(message.get("headers") or []).get(b"content-type", b"")
                if ctype.startswith(b"text/plain"):
                    replaced = True
                    response = JSONResponse(error_body(_too_large_body(scope.get(MAX_BODY_SIZE_SCOPE_KEY))),
                                            status_code=413)
                    await response(scope, receive, send)
                    return
            if replaced and message["type"] == "http.response.body":
                return
            await send(message)

        await self.app(scope, receive, send_json)


class CatchAll:
    """Anything unexpected: a JSON 500 in the shared schema, logged by type and code lines only
    (an exception's text may hold a spec's env or a token: SQL errors quote the whole INSERT)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_tracking(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            frames = "".join(traceback.format_tb(exc.__traceback__)[-8:])
            log.error("unhandled %s on %s %s\n%s", type(exc).__name__, scope.get("method", "")[:16],
                      str(scope.get("path", ""))[:200], frames)
            if started:  # the answer is on its way: the client sees a cut connection
                return
            response = JSONResponse(error_body({"error": "internal",
                                                "message": f"internal server error ({type(exc).__name__})",
                                                "fix": "this is a bug in Trainyard: report it with the server log"}),
                                    status_code=500)
            await response(scope, receive, send)


def trainyard_error_response(exc: TrainyardError) -> JSONResponse:
    """The answer to a TrainyardError: its own status and dict (the app's handler, and the
    submission fast path's: api.fastpath)."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _json(exc.to_dict(), exc.status, headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_middleware(BodyLimitAsJSON)

    @app.exception_handler(TrainyardError)
    async def _trainyard(request: Request, exc: TrainyardError):
        return trainyard_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        issues = []
        for err in exc.errors()[:_MAX_ISSUES]:
            field = _field(err.get("loc", ()))
            kind = err.get("type")
            msg = str(err.get("msg", "invalid"))
            if kind == "missing":
                msg = "is required"
            elif kind == "extra_forbidden":
                msg = "unknown key"
            elif kind == "json_invalid":
                msg = f"is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')})"
            # never echo request bodies back: they may carry secrets (env, tokens)
            issues.append(FieldIssue(field, msg))
        if not issues:
            issues.append(FieldIssue("body", "invalid request"))
        return _json(SpecError(issues, source="request").to_dict(), 422)

    @app.exception_handler(ResponseValidationError)
    async def _answer_drift(request: Request, exc: ResponseValidationError):
        # the server built an answer its own response_model refuses: a bug here, not a bad
        # request. The log names the fields (never their values, which may be anything).
        fields = sorted({_field(err.get("loc", ())) for err in exc.errors()[:_MAX_ISSUES]})
        log.error("answer of %s %s breaks its response model at: %s", request.method[:16],
                  request.url.path[:200], ", ".join(fields))
        return _json({"error": "internal", "message": "internal server error (the answer broke the API schema)",
                      "fix": "this is a bug in Trainyard: report it with the server log"}, 500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code, message = _status_code(exc)
        data: dict[str, Any] = {"error": code, "message": message}
        if exc.status_code == 413:
            data = _too_large_body(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY))
        elif exc.status_code == 404:
            data["message"] = f"no route {request.url.path[:200]!r}"
            data["fix"] = "see /docs for the routes this server has"
        elif exc.status_code == 405:
            data["message"] = f"{request.method[:16]} is not allowed on {request.url.path[:200]!r}"
            data["fix"] = "see /docs for the methods each route takes"
        elif exc.status_code == 400:
            # FastAPI's "error parsing the body" (not UTF-8, not JSON): an invalid request like any other
            return _json(SpecError([FieldIssue("body", "is not valid JSON text (UTF-8)",
                                               fix="send a JSON body with Content-Type: application/json")],
                                   source="request").to_dict(), 422)
        return _json(data, exc.status_code, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(PydanticValidationError)
    async def _model(request: Request, exc: PydanticValidationError):
        # a model built from request values inside a route (an endpoint spec, a policy): the
        # request was invalid, and the issues name its fields
        issues = [FieldIssue(_field(err.get("loc", ())), str(err.get("msg", "invalid")))
                  for err in exc.errors()[:_MAX_ISSUES]] or [FieldIssue("body", "invalid request")]
        return _json(SpecError(issues, source="request").to_dict(), 422)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, exc: RecursionError):
        return _json({"error": "invalid_spec", "message": "the request is nested too deeply",
                      "issues": [{"field": "body", "message": "is nested too deeply",
                                  "fix": "keep documents a few dozen levels deep at most"}]}, 422)

    # last: outside FastAPI's handlers, so that nothing re-raises the exception into a server log
    # line that quotes its text
    app.add_middleware(CatchAll)

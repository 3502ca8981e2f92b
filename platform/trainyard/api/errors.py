"""Errors as JSON: TrainyardError -> err.to_dict() with err.status; request errors -> 422."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from trainyard.errors import FieldIssue, SpecError, TrainyardError

__all__ = ["install_error_handlers"]

log = logging.getLogger("trainyard.api")


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (("." if out else "") + part)
    return out or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TrainyardError)
    async def _trainyard(request: Request, exc: TrainyardError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        issues = []
        for err in exc.errors():
            field = _field(err.get("loc", ()))
            msg = str(err.get("msg", "invalid"))
            if err.get("type") == "missing":
                msg = "is required"
            elif err.get("type") == "extra_forbidden":
                msg = "unknown key"
            # never echo request bodies back: they may carry secrets (env, tokens)
            issues.append(FieldIssue(field, msg))
        return JSONResponse(SpecError(issues, source="request").to_dict(), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"error": "internal", "message": f"internal server error ({type(exc).__name__})",
                "fix": "see the server log"}
        return JSONResponse(body, status_code=500)

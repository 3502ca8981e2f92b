"""Bearer-token auth: one admin token (settings.admin_token_file), compared in constant time.

Missing token -> 401, wrong token -> 403. The token is never echoed or logged.
"""
from __future__ import annotations

import hmac

from fastapi import Depends, Request

from trainyard.api.context import ServerContext, get_ctx
from trainyard.errors import AuthError

__all__ = ["require_admin"]


def require_admin(request: Request, ctx: ServerContext = Depends(get_ctx)) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not token.strip():
        raise AuthError("this request needs a token: send `Authorization: Bearer <token>`", status=401,
                        fix=f"use the admin token in {ctx.settings.admin_token_file} "
                            "(the SDK and CLI read it for you)")
    if not ctx.admin_token or not hmac.compare_digest(token.strip().encode(), ctx.admin_token.encode()):
        raise AuthError("the token is not valid for this server", status=403,
                        fix=f"use the admin token in {ctx.settings.admin_token_file}")

"""Bearer-token auth through FastAPI's HTTPBearer (which also documents it in OpenAPI).

One admin token, compared in constant time. Missing token -> 401, wrong token -> 403.
The token is never echoed or logged, and the answers say how to authenticate, never where
the server keeps its files.
"""
from __future__ import annotations

import hmac
from typing import Optional

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from trainyard.api.context import ServerContext, get_ctx
from trainyard.errors import AuthError

__all__ = ["require_admin", "bearer", "HOW_TO_AUTHENTICATE"]

HOW_TO_AUTHENTICATE = ("send `Authorization: Bearer <token>` with the server's admin token; `trainyard up` "
                       "creates it and prints how to use it, and the SDK and CLI read it for you "
                       "(or set TRAINYARD_TOKEN)")

# auto_error=False: our own 401/403 bodies, in the shared error schema
bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                    description="The server's admin token. " + HOW_TO_AUTHENTICATE[0].upper() + HOW_TO_AUTHENTICATE[1:])


def require_admin(credentials: Optional[HTTPAuthorizationCredentials] = Security(bearer),
                  ctx: ServerContext = Depends(get_ctx)) -> None:
    token = (credentials.credentials if credentials is not None else "").strip()
    if not token:
        raise AuthError("this request needs a token", status=401, fix=HOW_TO_AUTHENTICATE)
    expected = ctx.admin_token.encode()
    if not expected or not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected):
        raise AuthError("the token is not valid for this server", status=403,
                        fix="use this server's admin token: " + HOW_TO_AUTHENTICATE)

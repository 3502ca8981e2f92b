"""The OpenAPI document of an endpoint: the family's request and response schema."""
from __future__ import annotations

from trainyard.serving.config import route_prefix

__all__ = ["endpoint_openapi", "family_schemas"]

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                                           "field": {"type": "string"}, "fix": {"type": "string"}}}


def family_schemas(family: str | None) -> tuple[dict, dict]:
    """From the family's static metadata: the control plane imports no family."""
    from trainyard.families import registered, static_meta

    meta = static_meta(family) if family and family in registered() else None
    if meta is None:
        return {"type": "object"}, {"type": "object"}
    return dict(meta.request_schema or {"type": "object"}), dict(meta.response_schema or {"type": "object"})


def endpoint_openapi(name: str, family: str | None) -> dict:
    request, response = family_schemas(family)
    return {
        "openapi": "3.1.0",
        "info": {"title": f"Trainyard endpoint {name}", "version": "1",
                 "description": f"Model family: {family or 'unknown'}"},
        "paths": {f"{route_prefix(name)}/predict": {"post": {
            "summary": f"Predict with endpoint {name}",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {"description": "Prediction", "content": {"application/json": {"schema": response}}},
                "404": {"description": "Unknown endpoint", "content": {"application/json": {"schema": _ERROR}}},
                "422": {"description": "The payload has the wrong shape or type (names the field)",
                        "content": {"application/json": {"schema": _ERROR}}},
            }}}},
    }

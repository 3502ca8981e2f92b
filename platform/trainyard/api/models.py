"""The API's response models, for the server's routes: see trainyard.apitypes, where they live
so that the SDK and the CLI import them without FastAPI."""
from __future__ import annotations

from pydantic import BaseModel

from trainyard.apitypes import *  # noqa: F401,F403
from trainyard.apitypes import __all__ as _types

__all__ = [*_types, "answer", "validated"]


def answer(model: type[BaseModel], data: dict) -> dict:
    """`data` as `model` answers it (validated, defaults filled in, JSON-ready): what routes
    whose answer an Idempotency-Key records return, so that a replay equals the first answer."""
    return model.model_validate(data).model_dump(mode="json")


def validated(model: type[BaseModel], data: dict) -> BaseModel:
    """`data` as a `model` instance (validated, defaults filled in): a route that answers with
    `Response(validated(...).model_dump_json())` validates its answer once, where a returned
    dict is validated again against the route's response_model."""
    return model.model_validate(data)

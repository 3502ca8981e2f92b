"""pydantic's validation errors, retold as FieldIssues in the house style:

    resources.workers: must be >= 1, got 0
    resources.workers: must be an integer, got '2' (a string); write 2 without quotes
    ressources: unknown key; did you mean 'resources'?

Values are echoed only when short: a 50 MB description or an env value never comes back
in an error.
"""
from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from trainyard.errors import FieldIssue, did_you_mean
from trainyard.specs.limits import kind_of

__all__ = ["spec_issues_from_validation", "show"]

_BOUNDS = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "string_pattern_mismatch": "must match {pattern}",
}
_SECRET_SECTIONS = ("env",)
_FIELD_PREFIX = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")


def show(value: Any) -> str:
    """A value as the user wrote it in YAML, cut short."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (dict, list)):
        return f"{kind_of(value)} of {len(value)} item{'s' if len(value) != 1 else ''}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _echo(value: Any) -> Any:
    """The value an issue carries back in the error body: JSON-safe and short."""
    if isinstance(value, (bool, type(None))) or (isinstance(value, int) and value.bit_length() <= 63):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else show(value)
    if isinstance(value, str) and len(value) <= 60:
        return value
    return show(value)


def _number_text(value: str, kind: type) -> str | None:
    try:
        number = kind(value.strip())
    except ValueError:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return str(number)


def _type_message(etype: str, value: Any) -> tuple[str, str | None] | None:
    """(message, fix) for the strict-type errors, or None."""
    got = f"got {show(value)} ({kind_of(value)})"
    if etype in ("int_type", "int_parsing", "int_from_float"):
        if isinstance(value, str) and _number_text(value, int) is not None:
            return f"must be an integer, {got}", f"write {_number_text(value, int)} without quotes"
        if isinstance(value, float) and math.isfinite(value):
            return f"must be an integer, got {show(value)}", "write a whole number"
        return f"must be an integer, {got}", "write a whole number"
    if etype in ("float_type", "float_parsing"):
        if isinstance(value, str) and _number_text(value, float) is not None:
            return f"must be a number, {got}", f"write {value.strip()} without quotes"
        return f"must be a number, {got}", "write a number"
    if etype == "finite_number":
        return f"must be a finite number, got {show(value)}", "NaN and infinity are not allowed; write a number"
    if etype in ("bool_type", "bool_parsing"):
        return f"must be true or false, {got}", "write true or false without quotes"
    if etype == "string_type":
        return f"must be a string, {got}", f"quote it: '{show(value)}'" if isinstance(value, (int, float)) else None
    if etype in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, {got}", "write key: value pairs"
    if etype in ("list_type", "tuple_type"):
        return f"must be a list, {got}", "write [a, b] or one '- item' per line"
    return None


def _loc_to_field(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and ("[" in item and ("(" in item or "]" in item)):
            continue  # union/validator tags such as 'literal[...]' or 'function-after[...]'
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of `loc` (for 'did you mean')."""
    current: Any = model
    for item in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(item)
        if info is None:
            return []
        current = info.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _one(err: dict, model: type[BaseModel]) -> FieldIssue:
    loc = tuple(err.get("loc", ()))
    field = _loc_to_field(loc)
    etype = err.get("type", "")
    value = err.get("input")
    ctx = err.get("ctx") or {}
    secret = field.split(".")[0] in _SECRET_SECTIONS
    if etype == "extra_forbidden":
        known = _known_keys(model, loc)
        hint = did_you_mean(str(loc[-1]) if loc else "", known)
        return FieldIssue(field, f"unknown key;{hint}" if hint else "unknown key", None,
                          f"allowed keys here: {', '.join(known)}" if known else None)
    if etype == "missing":
        return FieldIssue(field, "is required")
    if etype in ("string_too_long", "too_long"):
        size = len(value) if hasattr(value, "__len__") else None
        limit = ctx.get("max_length")
        what = "characters" if etype == "string_too_long" else "items"
        return FieldIssue(field, f"is {size} {what} long, at most {limit}" if etype == "string_too_long"
                          else f"has {size} {what}, at most {limit}", None, f"use at most {limit} {what}")
    if etype == "string_too_short":
        return FieldIssue(field, "must not be empty", value if not secret else None)
    if etype in _BOUNDS:
        try:
            phrase = _BOUNDS[etype].format(**ctx)
        except (KeyError, IndexError):
            phrase = str(err.get("msg", "invalid"))
        return FieldIssue(field, f"{phrase}, got {show(value)}" if not secret else phrase,
                          _echo(value) if not secret else None)
    typed = _type_message(etype, value)
    if typed is not None:
        message, fix = typed
        if secret:
            message = message.split(", got")[0] + f" (got {kind_of(value)})"
        return FieldIssue(field, message, None if secret else _echo(value), fix)
    msg = str(err.get("msg", "invalid"))
    msg = re.sub(r"^(Value error|Assertion failed), ", "", msg)
    if etype == "value_error" and _FIELD_PREFIX.match(msg):
        # model-level validators already name their field: "deepspeed.offload: ..."
        fname, _, rest = msg.partition(": ")
        return FieldIssue(fname, rest, None if isinstance(value, dict) else _echo(value))
    if etype == "value_error" and not field and msg.split(" ", 1)[0].count(".") >= 1:
        fname, _, rest = msg.partition(" ")
        return FieldIssue(fname, rest, None)
    if "got" not in msg and etype != "value_error" and not secret:
        msg = f"{msg}, got {show(value)}"
    return FieldIssue(field, msg, None if secret else _echo(value))


def spec_issues_from_validation(exc: ValidationError, model: type[BaseModel]) -> list[FieldIssue]:
    """One FieldIssue per bad field (a union reports each branch: the first one wins)."""
    seen: dict[str, FieldIssue] = {}
    for err in exc.errors(include_url=False):
        issue = _one(err, model)
        seen.setdefault(issue.field, issue)
    return list(seen.values())

"""How big and how deep a spec may be, and the walk that enforces it on free-form parts.

Specs are small documents that many people send to one server. Every limit here exists so
that one request cannot cost the server more than a bounded amount of memory or CPU, or
make every later `jobs list` slow. The models' typed fields carry their own bounds; this
module checks what the models cannot see: the whole document's size and depth, and the
free-form mappings (`hyperparameters`, `data`, search spaces) whose values are `Any`.

The walk is iterative, so a document nested 20,000 levels deep is refused with an error,
never with a RecursionError.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from trainyard.errors import FieldIssue, SpecTooLargeError

__all__ = [
    "MAX_SPEC_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_KEY", "MAX_LIST",
    "MAX_DESCRIPTION", "MAX_ENV_VARS", "MAX_ENV_KEY", "MAX_ENV_VALUE", "MAX_FREEFORM_DEPTH",
    "MAX_FREEFORM_KEYS", "MAX_FREEFORM_BYTES", "MAX_NAME", "MAX_TEXT", "MAX_URL", "MAX_WORKERS",
    "MAX_SEED", "MAX_INT", "MIN_RESOURCE", "check_document", "freeform_issues", "kind_of",
]

MAX_SPEC_BYTES = 256 * 1024  # a spec is a page of YAML; the API answers 413 above this
MAX_DEPTH = 32  # nesting of the whole document (a sweep's search space is 5 deep)
MAX_NODES = 20_000  # values of every kind in one document
MAX_KEY = 256  # any one mapping key
MAX_LIST = 4096  # items of any one list
MAX_DESCRIPTION = 8192
MAX_RUNTIME_S = 30 * 24 * 3600  # a declared max_runtime_s above a month says nothing to a scheduler
MAX_ENV_VARS = 128
MAX_ENV_KEY = 128
MAX_ENV_VALUE = 16 * 1024
MAX_FREEFORM_DEPTH = 8  # hyperparameters / data: levels below the section
MAX_FREEFORM_KEYS = 512  # hyperparameters / data: keys at every level together
MAX_FREEFORM_BYTES = 64 * 1024  # hyperparameters / data: JSON size
MAX_NAME = 63  # names that become ids, Ray job names and MLflow names
MAX_TEXT = 256  # short free text: workload references, experiments, model names
MAX_URL = 2048
# A sanity ceiling, far above any cluster Trainyard runs on; the real bound is the
# registered clusters' capacity, checked at submission.
MAX_WORKERS = 100_000
MAX_SEED = 2**32 - 1  # what numpy's and Python's seeding take without folding
MAX_INT = 2**63 - 1  # the store keeps specs as JSON that SQL engines read as int64
# Ray's resource granularity is 1/10000 of a unit: a smaller request is rounded to 0.
MIN_RESOURCE = 0.0001


def kind_of(value: Any) -> str:
    """'a string', 'an integer' ...: how the YAML reader typed a value, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _path(parent: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def _text_problem(text: str) -> tuple[str, str] | None:
    """What makes a string unstorable anywhere, with the fix; None when nothing does.
    PostgreSQL text cannot hold NUL, and no environment or path can. A lone UTF-16 surrogate
    (JSON's "\\ud800" with no pair) is no character at all: it cannot be written as UTF-8, so
    the job could be stored yet never answered, logged or run."""
    if "\x00" in text:
        return "must not contain NUL characters", "remove the \\0"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"must not hold an unpaired UTF-16 surrogate ({text[exc.start]!r}): no text "
                    f"encoding can"), "write the character itself, or both halves of its \\uXXXX pair"
    return None


def check_document(data: Any, *, source: str | None = None) -> list[FieldIssue]:
    """Walk a parsed document once: raise SpecTooLargeError when it is too big or too deep;
    return issues for values no spec may hold (NaN, +-inf, out-of-range integers, non-string
    keys, strings no text encoding can hold, types YAML has but JSON lacks)."""
    issues: list[FieldIssue] = []
    nodes = 0
    size = 0  # a lower bound of its JSON size: enough to bound memory
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise SpecTooLargeError(f"the spec holds more than {MAX_NODES} values", source=source,
                                    limit=MAX_NODES, unit="values")
        if depth > MAX_DEPTH:
            raise SpecTooLargeError(f"the spec is nested more than {MAX_DEPTH} levels deep (at {path})",
                                    source=source, field=path.split(".")[0].split("[")[0] or "spec",
                                    limit=MAX_DEPTH, unit="levels")
        if isinstance(value, dict) or isinstance(value, Mapping):  # dict first: the ABC check costs more
            size += 2
            for key, item in value.items():
                if not isinstance(key, str):
                    issues.append(FieldIssue(_path(path, str(key)), f"keys must be strings, got {key!r} "
                                             f"({kind_of(key)})", None, f"quote the key: '{key}'"))
                    continue
                if len(key) > MAX_KEY:
                    issues.append(FieldIssue(path or "spec", f"has a key of {len(key)} characters, "
                                             f"at most {MAX_KEY}", None, "use a shorter key"))
                    continue
                problem = _text_problem(key)
                if problem is not None:
                    issues.append(FieldIssue(path or "spec", f"keys {problem[0]}", None, problem[1]))
                    continue
                size += len(key) + 4
                stack.append((_path(path, key), item, depth + 1))
        elif isinstance(value, (list, tuple)):
            if len(value) > MAX_LIST:
                issues.append(FieldIssue(path, f"has {len(value)} items, at most {MAX_LIST}", None,
                                         "use fewer items"))
                continue
            size += 2
            for index, item in enumerate(value):
                stack.append((_path(path, index), item, depth + 1))
        elif isinstance(value, str):
            # each field caps its own strings; what all of them add up to is capped here
            size += len(value) + 2
            problem = _text_problem(value)
            if problem is not None:
                issues.append(FieldIssue(path, problem[0], None, problem[1]))
        elif isinstance(value, bool) or value is None:
            size += 4
        elif isinstance(value, int):
            if abs(value) > MAX_INT:
                issues.append(FieldIssue(path, f"must be between {-MAX_INT} and {MAX_INT}, got "
                                         f"{_short_int(value)}", _short_int(value), "use a smaller number"))
            size += 8
        elif isinstance(value, float):
            if not math.isfinite(value):
                issues.append(FieldIssue(path, f"must be a finite number, got {_float_text(value)}",
                                         _float_text(value), "NaN and infinity are not allowed; write a number"))
            size += 8
        else:
            issues.append(FieldIssue(path, f"must be a string, number, boolean, list or mapping, got "
                                     f"{kind_of(value)}", None, "quote the value"))
        if size > MAX_SPEC_BYTES:
            raise SpecTooLargeError(f"the spec is larger than {MAX_SPEC_BYTES} bytes", source=source,
                                    limit=MAX_SPEC_BYTES, unit="bytes")
    return issues


def freeform_issues(section: str, value: Mapping[str, Any]) -> list[FieldIssue]:
    """Caps of a free-form section (hyperparameters, data): depth, keys, JSON size.

    Runs after check_document, so values are JSON-able and the walk is bounded."""
    if not value:  # most specs: nothing to walk, and a JSON encoder made for "{}" cost a submission 1%
        return []
    import json

    keys = 0
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict) or isinstance(item, Mapping):
            keys += len(item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    issues = []
    if deepest > MAX_FREEFORM_DEPTH:
        issues.append(FieldIssue(section, f"is nested {deepest} levels deep, at most {MAX_FREEFORM_DEPTH}", None,
                                 "flatten it"))
    if keys > MAX_FREEFORM_KEYS:
        issues.append(FieldIssue(section, f"has {keys} keys, at most {MAX_FREEFORM_KEYS}", None,
                                 "keep large configuration out of the spec (read it from storage)"))
    if not issues:
        size = len(json.dumps(value, separators=(",", ":")))
        if size > MAX_FREEFORM_BYTES:
            issues.append(FieldIssue(section, f"is {size} bytes as JSON, at most {MAX_FREEFORM_BYTES}", None,
                                     "keep large configuration out of the spec (read it from storage)"))
    return issues


def _float_text(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _short_int(value: int) -> str:
    # str() of a huge int is itself slow (and refused past 4300 digits): describe it instead
    return str(value) if value.bit_length() <= 128 else f"an integer of {value.bit_length()} bits"

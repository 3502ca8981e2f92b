"""Every error Trainyard raises on purpose.

Each carries what a user needs to fix the problem: the field, the value that was
given, and what to do instead. The REST API turns them into JSON bodies with the same
parts, and the CLI turns them into a message and an exit code.
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

__all__ = [
    "TrainyardError",
    "SpecError",
    "SpecTooLargeError",
    "FieldIssue",
    "NotFoundError",
    "ConflictError",
    "CapacityError",
    "AuthError",
    "ClusterError",
    "TooManyError",
    "StackError",
    "did_you_mean",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NOT_FOUND",
    "EXIT_UNREACHABLE",
    "EXIT_AUTH",
    "EXIT_CONFLICT",
    "EXIT_PREEMPTED",
]

# CLI exit codes. They are part of the public surface: scripts branch on them.
EXIT_OK = 0
EXIT_FAILED = 1  # the job/sweep ran and failed, or was cancelled
EXIT_USAGE = 2  # bad input: spec, flag, payload
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4  # the server or a cluster could not be reached
EXIT_AUTH = 5
EXIT_CONFLICT = 6  # e.g. a port is taken, a state transition is not allowed
# the job driver checkpointed and stopped when asked (preemption, SIGTERM): run it again to
# resume (sysexits' EX_TEMPFAIL, "try again later")
EXIT_PREEMPTED = 75


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """Return " did you mean 'x'?" when a close match exists, else ""."""
    matches = difflib.get_close_matches(str(value), list(known), n=1, cutoff=0.6)
    return f" did you mean '{matches[0]}'?" if matches else ""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TrainyardError(Exception):
    """Base class. `status` is the HTTP status the API answers with."""

    status = 400
    exit_code = EXIT_USAGE
    code = "error"

    def __init__(self, message: str, *, field: str | None = None, value: Any = None,
                 fix: str | None = None):
        self.message = message
        self.field = field
        self.value = value
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.fix and self.fix not in text:
            text = f"{text} ({self.fix})"
        return text

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": str(self)}
        if self.field is not None:
            body["field"] = self.field
        if self.value is not None:
            body["value"] = _jsonable(self.value)
        if self.fix:
            body["fix"] = self.fix
        return body


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


class FieldIssue:
    """One problem with one field of a spec."""

    __slots__ = ("field", "message", "value", "fix")

    def __init__(self, field: str, message: str, value: Any = None, fix: str | None = None):
        self.field, self.message, self.value, self.fix = field, message, value, fix

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        return f"{text}; {self.fix}" if self.fix else text

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message,
                "value": _jsonable(self.value), "fix": self.fix}


class SpecError(TrainyardError):
    """A spec, payload or argument is invalid. Holds one issue per bad field."""

    status = 422
    exit_code = EXIT_USAGE
    code = "invalid_spec"

    def __init__(self, issues: list[FieldIssue] | str, *, source: str | None = None,
                 field: str | None = None, value: Any = None, fix: str | None = None):
        if isinstance(issues, str):
            issues = [FieldIssue(field or "", issues, value, fix)]
        self.issues = issues
        self.source = source
        first = issues[0] if issues else FieldIssue("", "invalid")
        super().__init__(first.message, field=first.field or None, value=first.value, fix=first.fix)

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        if len(self.issues) == 1 and self.issues[0].field == self.source:
            head = ""  # "spec: spec: ..." says it twice
        if len(self.issues) == 1:
            return head + str(self.issues[0])
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        return f"{head}{len(self.issues)} problems:\n{lines}"

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["issues"] = [issue.to_dict() for issue in self.issues]
        return body


class SpecTooLargeError(SpecError):
    """A spec or payload is over a size or depth limit: the API answers 413."""

    status = 413
    code = "too_large"

    def __init__(self, message: "str | list[FieldIssue]", *, limit: int | None = None, unit: str = "bytes",
                 source: str | None = None, field: str | None = None, fix: str | None = None):
        self.limit = limit
        self.unit = unit
        if fix is None and limit is not None:
            fix = f"keep it under {limit} {unit}; large data belongs in storage, not in the spec"
        super().__init__(message, source=source, field=field or "spec", fix=fix)


class NotFoundError(TrainyardError):
    status = 404
    exit_code = EXIT_NOT_FOUND
    code = "not_found"

    def __init__(self, kind: str, name: Any, *, known: Iterable[str] = (), fix: str | None = None):
        hint = did_you_mean(str(name), known)
        super().__init__(f"{kind} {_short(name)} does not exist.{hint}".rstrip(),
                         field=None, value=name,
                         fix=fix or f"list them with `trainyard {kind}s list`")
        self.kind = kind


class ConflictError(TrainyardError):
    status = 409
    exit_code = EXIT_CONFLICT
    code = "conflict"


class CapacityError(SpecError):
    """The request can never fit where it is sent (as opposed to: not yet)."""

    code = "exceeds_capacity"


class AuthError(TrainyardError):
    status = 401
    exit_code = EXIT_AUTH
    code = "unauthorized"

    def __init__(self, message: str, *, status: int = 401, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.status = status
        if status == 403:
            self.code = "forbidden"


class TooManyError(TrainyardError):
    """The caller holds too many of a bounded server resource at once (followed logs): 429."""

    status = 429
    exit_code = EXIT_CONFLICT
    code = "too_many_requests"


class ClusterError(TrainyardError):
    """A Ray cluster (Jobs/Serve API) or another backend did not do what we asked."""

    status = 502
    exit_code = EXIT_UNREACHABLE
    code = "cluster_error"


class StackError(TrainyardError):
    """The local stack (`trainyard up`) could not start or stop a component."""

    status = 500
    exit_code = EXIT_CONFLICT
    code = "stack_error"

"""Where a job may write: checkpoint storage URLs, normalised and confined.

Pure: strings in, a normalised URL or an error out. The server's configured storage roots
(`Settings.storage_roots`, with the default storage folder always among them) are the only
places a `file://` URL may point under; `s3://` keys are normalised and may not climb out
of their bucket. A job's checkpoints then go under <storage>/<project>/<job_id>
(`trainyard.runner.storage.resolve_storage`, which owns that layout).
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterable, Sequence

from trainyard.errors import SpecError

__all__ = ["SCHEMES", "syntax_problem", "normalise_storage", "confine_storage"]

SCHEMES = ("file://", "s3://")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _climbs(path: str) -> bool:
    return any(part == ".." for part in path.split("/"))


def syntax_problem(url: str) -> str | None:
    """What is wrong with a storage URL on its own (no roots needed), or None."""
    if not url.startswith(SCHEMES):
        return f"must start with file:// or s3://, got {url!r}"
    if any(ord(c) < 32 or c == "\x7f" for c in url) or "\\" in url:
        return "must not hold control characters or backslashes"
    if url.startswith("s3://"):
        bucket, _, key = url[5:].partition("/")
        if len(bucket) < 3:
            return f"s3 bucket name must have at least 3 characters, got {bucket!r}"
        if not _BUCKET_RE.match(bucket):
            return f"s3 bucket name {bucket!r} is not valid (lower-case letters, digits, '.' and '-', 3-63)"
        if _climbs(key):
            return "must not contain '..': an s3 key cannot climb out of its prefix"
        return None
    path = url[len("file://"):]
    if not path.startswith("/"):
        return f"file:// storage needs an absolute path (file:///path), got {url!r}"
    if _climbs(path):
        return "must not contain '..' (give the absolute path of a folder under a storage root)"
    return None


def normalise_storage(url: str) -> str:
    """The URL with '.' segments, doubled and trailing slashes removed. Assumes syntax_problem is None."""
    scheme = "s3://" if url.startswith("s3://") else "file://"
    rest = url[len(scheme):]
    if scheme == "s3://":
        bucket, _, key = rest.partition("/")
        key = posixpath.normpath("/" + key).lstrip("/") if key else ""
        return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    return "file://" + posixpath.normpath(rest)


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/") or root == "/"


def confine_storage(url: str, *, roots: Sequence[str], field: str = "checkpoint.storage") -> str:
    """The normalised URL, or a SpecError that names the allowed roots.

    `roots`: the server's storage roots, each file:///path or s3://bucket[/prefix]. A
    file:// URL must lie under a file:// root; an s3:// URL under an s3:// root when the
    server names any (otherwise any bucket: the job brings its own credentials)."""
    problem = syntax_problem(url)
    if problem is not None:
        raise SpecError(problem, field=field, value=url[:200],
                        fix=f"use a folder under one of the storage roots: {_listed(roots)}")
    norm = normalise_storage(url)
    scheme = "s3://" if norm.startswith("s3://") else "file://"
    same = [normalise_storage(r) for r in roots if r.startswith(scheme) and syntax_problem(r) is None]
    if scheme == "s3://" and not same:
        return norm
    for root in same:
        if _under(norm[len(scheme):], root[len(scheme):]):
            return norm
    raise SpecError(f"{norm!r} is outside the server's storage roots", field=field, value=url[:200],
                    fix=f"use a folder under one of: {_listed(roots)}, or leave checkpoint.storage out")


def _listed(roots: Iterable[str]) -> str:
    return ", ".join(roots) or "(none configured)"

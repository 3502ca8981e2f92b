"""Opaque cursors for keyset paging of the jobs list. Pure: no I/O.

The list is ordered newest first by (created_at, id), both descending. A cursor is the
position of the last row of a page; the next page holds the rows strictly after it in that
order. Unlike an offset, a position does not move when new jobs arrive (they sort before
every page already read), so paging through the whole list while jobs are submitted yields
each job that existed when paging began exactly once.

The text is base64url of a small JSON object, versioned. Callers must treat it as opaque;
this module is the only one that reads it, and every way it can be wrong is a SpecError
that names the `cursor` field.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from trainyard.errors import SpecError

__all__ = ["Cursor", "encode_cursor", "decode_cursor", "MAX_CURSOR_LEN"]

# a version tag, a microsecond ISO time and a 64-character id, base64url: well under this
MAX_CURSOR_LEN = 256
_VERSION = 1
_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_FIX = "pass the next_cursor of the previous page unchanged, or leave cursor out to start at the newest job"


@dataclass(frozen=True)
class Cursor:
    """The (created_at, id) of the last job of a page."""

    created_at: datetime
    id: str


def encode_cursor(created_at: datetime, job_id: str) -> str:
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=timezone.utc)
    body = {"v": _VERSION, "t": created_at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
            "i": job_id}
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad(why: str, value: str) -> SpecError:
    return SpecError(f"is not a cursor this server issued ({why})", field="cursor", value=value[:40], fix=_FIX)


def decode_cursor(text: str) -> Cursor:
    """The position a cursor names; SpecError (field `cursor`) for anything else."""
    if not isinstance(text, str) or not text:
        raise _bad("empty", str(text))
    if len(text) > MAX_CURSOR_LEN:
        raise SpecError(f"is {len(text)} characters long, at most {MAX_CURSOR_LEN} are allowed", field="cursor",
                        value=text[:40], fix=_FIX)
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        body = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise _bad("not base64url JSON", text) from None
    if not isinstance(body, dict) or set(body) != {"v", "t", "i"}:
        raise _bad("wrong shape", text)
    if body["v"] != _VERSION:
        raise _bad(f"version {body['v']!r}", text)
    job_id, when = body["i"], body["t"]
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise _bad("bad job id", text)
    if not isinstance(when, str) or len(when) > 40:
        raise _bad("bad time", text)
    try:
        at = datetime.fromisoformat(when)
    except ValueError:
        raise _bad("bad time", text) from None
    if at.tzinfo is None:
        raise _bad("time without a zone", text)
    return Cursor(created_at=at.astimezone(timezone.utc), id=job_id)

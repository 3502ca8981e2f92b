"""Saved servers and their tokens ("contexts"), in the spirit of kubectl's.

`trainyard login` writes one; the SDK's `Client()` reads the current one when neither its
arguments nor TRAINYARD_URL name a server. The file is `<TRAINYARD_HOME>/contexts.json`:

    {"current": "prod", "contexts": {"prod": {"server": "https://ty.example.com", "token": "tyk_..."}}}

It holds tokens, so it is private (0600 in the 0700 home) and written atomically (a
temporary file renamed over it, under a lock), so a crash or two logins at once never
leave half a file. Its content is checked whole on every read: a hand-edited file that
is wrong fails with an error naming the file, the field and the fix, and never shows a token.

Lives beside the SDK (which needs it) rather than in the CLI (which the SDK must not import).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from trainyard import config
from trainyard.errors import NotFoundError, SpecError, did_you_mean

__all__ = ["FILE_NAME", "CONTEXT_NAME_RE", "MAX_CONTEXTS", "MAX_TOKEN_CHARS", "Context", "Contexts",
           "contexts_file", "load", "current", "token_for_server", "save_context", "use_context",
           "remove_context", "check_context_name", "check_server", "check_token", "default_name"]

FILE_NAME = "contexts.json"
# letters, digits, '.', '_', '-': a host name fits ("ty.example.com"), nothing a shell or a
# table would mangle does
CONTEXT_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_CONTEXTS = 200
MAX_URL_CHARS = 2048
# personal tokens are ~60 characters; an OIDC access token (a JWT) can be a few kilobytes
MAX_TOKEN_CHARS = 16384
MAX_FILE_BYTES = 4 * 1024 * 1024
_TOKEN_RE = re.compile(r"^[!-~]+$")  # printable ASCII, no spaces: what fits in a Bearer header
_REPAIR = "fix it by hand, or delete it and log in again with `trainyard login --server URL`"


@dataclass(frozen=True)
class Context:
    name: str
    server: str
    token: str = field(repr=False)  # never in a repr, a log or a traceback's locals

    def public(self) -> dict[str, str]:
        """What may be shown: everything but the token."""
        return {"name": self.name, "server": self.server}


@dataclass(frozen=True)
class Contexts:
    current: str | None
    contexts: Mapping[str, Context]

    def to_json(self) -> dict[str, Any]:
        return {"current": self.current,
                "contexts": {n: {"server": c.server, "token": c.token} for n, c in sorted(self.contexts.items())}}


def contexts_file() -> Path:
    return config.home() / FILE_NAME


# ----------------------------------------------------------------------------- checks (pure)


def check_context_name(name: Any, *, field_name: str = "--context") -> str:
    if not isinstance(name, str) or not re.fullmatch(CONTEXT_NAME_RE, name):
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise SpecError(f"must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                        f"got {shown}",
                        field=field_name, value=name if isinstance(name, str) else type(name).__name__,
                        fix="e.g. --context prod")
    return name


def check_server(url: Any, *, field_name: str = "--server") -> str:
    """A server URL as it is stored: http(s), a host, no credentials, query or fragment; no
    trailing slash."""
    fix = "give the server's base URL, e.g. https://trainyard.example.com or http://127.0.0.1:8080"
    if not isinstance(url, str) or not url.strip():
        raise SpecError("is empty", field=field_name, fix=fix)
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise SpecError(f"is longer than {MAX_URL_CHARS} characters", field=field_name, value=url[:80] + "...",
                        fix=fix)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise SpecError(f"is not a URL ({exc}), got {url[:200]!r}", field=field_name, value=url, fix=fix) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"must be an http:// or https:// URL with a host, got {url[:200]!r}", field=field_name,
                        value=url, fix=fix)
    if parts.username is not None or parts.password is not None:
        # a password in the URL would be shown wherever the server is named
        raise SpecError("must not hold a user name or password", field=field_name,
                        value=f"{parts.scheme}://***@{parts.hostname}", fix="give the token with --token-file or stdin")
    if parts.query or parts.fragment or any(ch.isspace() for ch in url):
        # the query is not echoed: it is where a careless URL carries a token
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"[:200] + ("?..." if parts.query else "")
        raise SpecError(f"must not hold a query, a fragment or spaces, got {shown!r}", field=field_name,
                        value=shown, fix=fix)
    return url.rstrip("/")


def check_token(token: Any, *, field_name: str = "token") -> str:
    """A bearer token as it is sent and stored. Messages never include the token."""
    if token is not None and not isinstance(token, str):
        raise SpecError(f"must be text, got {type(token).__name__}", field=field_name,
                        fix="give the token printed by `trainyard tokens create` (or your admin)")
    if not isinstance(token, str) or not token.strip():
        raise SpecError("is empty", field=field_name,
                        fix="give the token printed by `trainyard tokens create` (or your admin)")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise SpecError(f"is longer than {MAX_TOKEN_CHARS} characters; is it really a token?", field=field_name,
                        fix="give only the token, on one line")
    if not _TOKEN_RE.fullmatch(token):
        raise SpecError("holds spaces, line breaks or characters other than printable ASCII", field=field_name,
                        fix="give only the token, on one line (a file with anything else in it is not a token file)")
    return token


def default_name(server: str) -> str:
    """A context name from a server URL: its host, and its port when one is given."""
    parts = urlsplit(server)
    name = parts.hostname or "server"
    if parts.port:
        name = f"{name}-{parts.port}"
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-_")[:64] or "server"
    return name


def _parse(raw: Any, path: Path) -> Contexts:
    """Check the whole file; every error names the file, the field and the fix, never a token."""

    def bad(where: str, message: str, value: Any = None) -> SpecError:
        return SpecError(message, source=str(path), field=where, value=value, fix=_REPAIR)

    if not isinstance(raw, dict):
        raise bad("(top level)", f"must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"current", "contexts"})
    if unknown:
        raise bad(unknown[0], "is not a known key" + did_you_mean(unknown[0], ["current", "contexts"])
                  + "; the keys are current and contexts")
    items = raw.get("contexts", {})
    if not isinstance(items, dict):
        raise bad("contexts", f"must be an object of name -> {{server, token}}, got {type(items).__name__}")
    if len(items) > MAX_CONTEXTS:
        raise bad("contexts", f"holds {len(items)} contexts; at most {MAX_CONTEXTS} are kept")
    parsed: dict[str, Context] = {}
    for name, item in items.items():
        try:
            check_context_name(name, field_name=f"contexts.{name}")
        except SpecError as exc:
            raise bad(f"contexts.{name}", exc.message, name) from None
        where = f"contexts.{name}"
        if not isinstance(item, dict):
            raise bad(where, f"must be an object with server and token, got {type(item).__name__}")
        extra = sorted(set(item) - {"server", "token"})
        if extra:
            raise bad(f"{where}.{extra[0]}", "is not a known key; a context has only server and token")
        for key in ("server", "token"):
            if key not in item:
                raise bad(f"{where}.{key}", "is missing")
        try:
            server = check_server(item["server"], field_name=f"{where}.server")
        except SpecError as exc:
            raise bad(f"{where}.server", exc.message, exc.value) from None
        try:
            token = check_token(item["token"], field_name=f"{where}.token")
        except SpecError as exc:
            raise bad(f"{where}.token", exc.message) from None  # no value: it is a secret
        parsed[name] = Context(name=name, server=server, token=token)
    current_name = raw.get("current")
    if current_name is not None:
        if not isinstance(current_name, str):
            raise bad("current", f"must be a context name or null, got {type(current_name).__name__}")
        if current_name not in parsed:
            raise bad("current", "names no context in the file" + did_you_mean(current_name, parsed)
                      + (f"; known: {', '.join(sorted(parsed))}" if parsed else "; the file holds none"),
                      current_name)
    return Contexts(current=current_name, contexts=parsed)


# ----------------------------------------------------------------------------- the file


def load() -> Contexts:
    """The saved contexts (none when the file does not exist)."""
    path = contexts_file()
    try:
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise SpecError("is not a regular file", source=str(path), field=FILE_NAME, fix=_REPAIR)
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"is {size} bytes, more than a contexts file ever holds ({MAX_FILE_BYTES})",
                            source=str(path), field=FILE_NAME, fix=_REPAIR)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # written by hand, or copied from elsewhere: it holds tokens
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Contexts(current=None, contexts={})
    except UnicodeDecodeError:
        raise SpecError("is not UTF-8 text", source=str(path), field=FILE_NAME, fix=_REPAIR) from None
    except OSError as exc:
        raise SpecError(f"cannot be read: {exc.strerror}", source=str(path), field=FILE_NAME,
                        fix="make it readable by you (chmod 600), or delete it and log in again") from None
    if not text.strip():
        return Contexts(current=None, contexts={})
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the text around the error may be a token
        raise SpecError(f"is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                        source=str(path), field=FILE_NAME, fix=_REPAIR) from None
    return _parse(raw, path)


def current() -> Context | None:
    """The current context, or None when none is set."""
    data = load()
    return data.contexts[data.current] if data.current else None


def token_for_server(server: str) -> Context | None:
    """A saved context for this server URL (the current one first), or None. A token is only
    ever sent to the server it was saved for."""
    path = contexts_file()
    if not path.exists():
        return None
    data = load()
    want = server.rstrip("/")
    names = ([data.current] if data.current else []) + sorted(n for n in data.contexts if n != data.current)
    for name in names:
        if data.contexts[name].server == want:
            return data.contexts[name]
    return None


@contextmanager
def _locked() -> Iterator[Path]:
    """Hold the home's contexts lock: read-modify-write of the file is one step."""
    home = config.ensure_home()
    fd = os.open(home / ".contexts.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield home
    finally:
        os.close(fd)  # closing releases the lock


def _write(home: Path, data: Contexts) -> None:
    path = home / FILE_NAME
    fd, tmp = tempfile.mkstemp(prefix=".contexts.", suffix=".tmp", dir=home)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data.to_json(), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_context(name: str, *, server: str, token: str, make_current: bool = True) -> bool:
    """Add or replace a context; True when it replaced one of that name."""
    name = check_context_name(name)
    ctx = Context(name=name, server=check_server(server), token=check_token(token))
    with _locked() as home:
        data = load()
        if name not in data.contexts and len(data.contexts) >= MAX_CONTEXTS:
            raise SpecError(f"{MAX_CONTEXTS} contexts are saved already", field="--context", value=name,
                            fix="remove one with `trainyard context remove NAME`")
        replaced = name in data.contexts
        _write(home, Contexts(current=name if make_current else data.current,
                              contexts={**data.contexts, name: ctx}))
    return replaced


def _unknown(name: str, data: Contexts) -> NotFoundError:
    err = NotFoundError("context", name, known=data.contexts,
                        fix="list them with `trainyard context list`; add one with `trainyard login`")
    return err


def use_context(name: str) -> Context:
    """Make NAME the current context."""
    with _locked() as home:
        data = load()
        if name not in data.contexts:
            raise _unknown(name, data)
        _write(home, Contexts(current=name, contexts=data.contexts))
        return data.contexts[name]


def remove_context(name: str) -> bool:
    """Forget NAME and its token; True when it was the current one (then none is current)."""
    with _locked() as home:
        data = load()
        if name not in data.contexts:
            raise _unknown(name, data)
        was_current = data.current == name
        rest = {n: c for n, c in data.contexts.items() if n != name}
        _write(home, Contexts(current=None if was_current else data.current, contexts=rest))
        return was_current

"""One place that keeps secrets out of logs, errors and API responses.

Secrets here are: the admin and Ray tokens, registered clusters' tokens, S3 and MLflow
credentials, and the values of a spec's `env`. Each is *registered* once where it enters the
process (settings, the store's encrypted columns, the CLI reading a token file), and then:

- `redact(text)` replaces every registered secret (and any given inline) by `***`;
- `RedactingFilter`, installed on the server's, runner's and CLI's log handlers, applies it to
  every record, its arguments and its traceback, whichever logger wrote it;
- `masked_env` / `masked_spec` hide a spec's env values in what the API shows.

The registry is bounded (least recently registered secrets drop out first): a store with many
jobs re-registers a job's env whenever it reads that job back, which is when it can be logged.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Iterable, Mapping

__all__ = ["MASK", "MIN_SECRET_LEN", "register", "clear", "redact",
           "masked_env", "masked_spec", "env_secrets", "RedactingFilter", "install_log_filter"]

MASK = "***"
# shorter values ("1", "true", "debug") are no credential, and hiding them would turn every
# log line that holds such a common word into stars
MIN_SECRET_LEN = 6
_MAX_REGISTERED = 4096

_lock = threading.Lock()
_registered: "OrderedDict[str, None]" = OrderedDict()
_ordered: tuple[str, ...] | None = ()  # longest first, so a secret that contains another goes
# whole; None: rebuild on the next redact (listing many jobs registers many values at once)


def register(*values: str | None) -> None:
    """Remember values that must never be shown (None and short values are ignored)."""
    global _ordered
    fresh = [v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LEN]
    if not fresh:
        return
    with _lock:
        for value in fresh:
            if value in _registered:
                _registered.move_to_end(value)
                continue
            _registered[value] = None
            _ordered = None
            while len(_registered) > _MAX_REGISTERED:
                _registered.popitem(last=False)


def _secrets() -> tuple[str, ...]:
    global _ordered
    ordered = _ordered
    if ordered is None:
        with _lock:
            ordered = _ordered = tuple(sorted(_registered, key=len, reverse=True))
    return ordered


def clear() -> None:
    """Forget every registered secret (tests)."""
    global _ordered
    with _lock:
        _registered.clear()
        _ordered = ()


def env_secrets(spec: Mapping[str, Any] | None) -> list[str]:
    """The values of a spec's env that are long enough to be worth hiding."""
    env = (spec or {}).get("env") or {}
    if not isinstance(env, Mapping):
        return []
    return [str(v) for v in env.values() if v is not None and len(str(v)) >= MIN_SECRET_LEN]


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with every registered secret, and every value of `extra`, replaced by ***."""
    if not text:
        return text
    secrets = _secrets()
    more = [v for v in extra if isinstance(v, str) and len(v) >= MIN_SECRET_LEN]
    if more:
        secrets = tuple(sorted({*secrets, *more}, key=len, reverse=True))
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def masked_env(env: Mapping[str, Any] | None) -> dict[str, str]:
    """A spec's env as the API shows it: the names, never the values."""
    return {str(k): MASK for k in (env or {})}


def masked_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the API shows it: every env value masked."""
    env = spec.get("env")
    if not env or not isinstance(env, Mapping):
        return spec
    return {**spec, "env": masked_env(env)}


class RedactingFilter(logging.Filter):
    """Rewrites each record so that its message and traceback hold no registered secret.

    Installed on handlers (not loggers): a logger's filters see only records logged on that
    logger itself, a handler's see every record that reaches it, from any library.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as it would
            return True
        clean = redact(message)
        # only a record that held a secret is rewritten: formatters that read the args
        # (uvicorn's access log) keep working for all the others
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def install_log_filter(*logger_names: str) -> None:
    """Put the filter on every handler of the root logger and of the named loggers.

    Call after logging is configured (handlers exist); calling again is harmless.
    """
    names = ("", *logger_names)
    for name in names:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)

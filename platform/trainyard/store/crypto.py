"""Secrets at rest: Fernet encryption of cluster tokens and spec env values in the store.

The key is `$TRAINYARD_SECRET_KEY` (a Fernet key: `python -c "from cryptography.fernet import
Fernet; print(Fernet.generate_key().decode())"`, or a random passphrase of 32+ characters, from
which one is derived; the Helm chart's generated secret is one), or else `home/secret.key`,
created (0600) on first use. Several servers that share one database must share the key.

Encrypted values are stored as "fernet:<token>". Rows written before encryption hold plain
values and are still read as they are (read-time fallback); they are encrypted the next time
the row is written. The column types below do this transparently: the rest of the code only
ever sees plain values.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.types import TypeDecorator

from trainyard import redact
from trainyard.errors import TrainyardError

__all__ = ["PREFIX", "KEY_ENV", "key_file", "ensure_key", "encrypt", "decrypt", "EncryptedString", "SpecJSON"]

PREFIX = "fernet:"
KEY_ENV = "TRAINYARD_SECRET_KEY"
_lock = threading.Lock()
_cache: dict[tuple, Any] = {}


class SecretKeyError(TrainyardError):
    status = 500
    code = "secret_key"


def _key_from_env(value: str) -> bytes:
    """A Fernet key as given, or one derived from a long random passphrase (a generated
    Kubernetes secret holds 40 letters and digits, not a Fernet key)."""
    import base64
    import binascii
    import hashlib

    try:
        if len(base64.urlsafe_b64decode(value.encode())) == 32:
            return value.encode()
    except (binascii.Error, ValueError):
        pass
    if len(value) < 32:
        raise SecretKeyError(f"${KEY_ENV} must be a Fernet key or a passphrase of at least 32 characters, "
                             f"got {len(value)} characters", field=KEY_ENV,
                             fix="generate one with cryptography.fernet.Fernet.generate_key()")
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest())


def key_file() -> Path:
    from trainyard import config

    return config.home() / "secret.key"


def _fernet():
    from cryptography.fernet import Fernet

    env_key = os.environ.get(KEY_ENV)
    source = ("env", env_key) if env_key else ("file", str(key_file()))
    with _lock:
        cached = _cache.get(source)
        if cached is not None:
            return cached
        if env_key:
            raw = _key_from_env(env_key.strip())
        else:
            path = key_file()
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raw = path.read_bytes().strip()
            else:
                raw = Fernet.generate_key()
                with os.fdopen(fd, "wb") as fh:
                    fh.write(raw + b"\n")
        try:
            fernet = Fernet(raw)
        except (ValueError, TypeError):
            where = f"${KEY_ENV}" if env_key else str(key_file())
            raise SecretKeyError(f"{where} does not hold a Fernet key (32 url-safe base64-encoded bytes)",
                                 field=KEY_ENV, fix="generate one with cryptography.fernet.Fernet.generate_key()") from None
        _cache.clear()  # one key at a time; a test that changes home gets a fresh one
        _cache[source] = fernet
        return fernet


def ensure_key() -> None:
    """Load (or create) the key now: a bad $TRAINYARD_SECRET_KEY fails the start, not a request."""
    _fernet()


def encrypt(value: str) -> str:
    return PREFIX + _fernet().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    """Plain text of a stored value; a value without the prefix was stored before encryption."""
    if not value.startswith(PREFIX):
        return value
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(value[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a secret in the store cannot be decrypted with the current key", field=KEY_ENV,
            fix=f"start the server with the key it was written with (${KEY_ENV} or {key_file()})") from None


class EncryptedString(TypeDecorator):
    """A string column stored encrypted (cluster tokens). Size it for the ciphertext: about
    1.4 x the plain length + 80 characters."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        redact.register(value)
        return encrypt(value)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        plain = decrypt(value)
        redact.register(plain)
        return plain


class SpecJSON(TypeDecorator):
    """A job spec (JSON) whose `env` values are stored encrypted; the rest stays queryable."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        env = value.get("env") if isinstance(value, dict) else None
        if not env or not isinstance(env, dict):
            return value
        redact.register(*redact.env_secrets(value))
        return {**value, "env": {k: (encrypt(str(v)) if v is not None else None) for k, v in env.items()}}

    def process_result_value(self, value, dialect):
        env = value.get("env") if isinstance(value, dict) else None
        if not env or not isinstance(env, dict):
            return value
        plain = {k: (decrypt(v) if isinstance(v, str) else v) for k, v in env.items()}
        spec = {**value, "env": plain}
        redact.register(*redact.env_secrets(spec))
        return spec

"""Where Trainyard keeps its files, and the settings every component reads.

Everything lives under the Trainyard home folder: `$TRAINYARD_HOME`, default `~/.trainyard`.
The home is 0700 and every file in it 0600: the stack's processes run with umask 077.

    home/
      admin.token        the REST API's admin bearer token
      ray.token          the local Ray head's auth token
      mlflow.password    the local MLflow's admin password (basic auth; user `trainyard`)
      secret.key         the Fernet key of secrets at rest in the store, unless
                         $TRAINYARD_SECRET_KEY gives one (trainyard.store.crypto)
      stack.json         what `trainyard up` started: addresses and PIDs
      trainyard.db       the server's SQLite store
      mlflow/            MLflow's SQLite backend, basic-auth config and users, artifacts
      storage/           default checkpoint storage (file://)
      logs/              component logs

Server settings come from environment variables (TRAINYARD_*), so the same code runs
from `trainyard up`, in a container, or in a test.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["home", "ensure_home", "private_umask", "PRIVATE_UMASK", "read_secret", "ensure_secret",
           "Settings", "stack_file", "read_stack"]

# files the stack's processes create (database, WAL, logs, MLflow's files) are theirs alone
PRIVATE_UMASK = 0o077


def home() -> Path:
    path = Path(os.environ.get("TRAINYARD_HOME") or Path.home() / ".trainyard").expanduser()
    return path


def ensure_home() -> Path:
    """The home folder, created if absent, and made private (0700) either way."""
    path = home()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def private_umask() -> int:
    """Set the process umask so that what it creates from now on is private; returns the old one."""
    return os.umask(PRIVATE_UMASK)


def ensure_secret(path: Path) -> str:
    """Read a token file, creating it (mode 0600) with a fresh random token if absent."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # written by an older version, or by hand
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def stack_file() -> Path:
    return home() / "stack.json"


def read_stack() -> dict:
    try:
        return json.loads(stack_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class Settings(BaseSettings):
    """The server's configuration.

    `Settings.from_env()` reads the TRAINYARD_* variables (and the standard MLFLOW_TRACKING_URI,
    AWS_* ones) and fills what is unset from the Trainyard home. `Settings(...)` takes exactly
    what it is given, and the environment plays no part, so a server built in a test or
    embedded in a program is not steered by whatever its process happens to have exported.
    """

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", populate_by_name=True,
                                      validate_assignment=True, extra="forbid")

    db_url: str = ""
    admin_token_file: str = ""
    mlflow_uri: str = Field("", validation_alias=AliasChoices("TRAINYARD_MLFLOW_URI", "MLFLOW_TRACKING_URI"))
    # The default cluster: the Ray dashboard (Jobs/Serve REST API) and its token file.
    ray_dashboard_url: str = ""
    ray_token_file: str = ""
    ray_autoscaling_config: str | None = None  # its autoscaler YAML, when it autoscales
    storage: str = ""  # default checkpoint storage, file:// or s3://
    # Where a spec's checkpoint.storage may point (file:///path or s3://bucket/prefix), besides
    # `storage` itself, which is always allowed. TRAINYARD_STORAGE_ROOTS, comma-separated.
    storage_roots: Annotated[list[str], NoDecode] = Field(default_factory=list)
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("TRAINYARD_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"))
    s3_key: SecretStr | None = Field(None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "s3_key"))
    s3_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "s3_secret"))
    # MLflow basic auth, in the standard MLflow variables
    mlflow_username: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_USERNAME", "mlflow_username"))
    mlflow_password: SecretStr | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_PASSWORD", "mlflow_password"))
    poll_interval_s: float = Field(1.0, gt=0, le=3600)
    # what the driver command is (a stand-in runner in tests); {job_id} is replaced
    runner_entrypoint: str | None = None
    # the Python that demand requests run with on the cluster
    cluster_python: str = "python"
    # off: leave scaling to Ray's own demand
    autoscaler_demand: bool = True
    demand_running_grace_s: float = Field(0.0, ge=0)
    # Ray Serve's HTTP proxy: the port, the host clients reach it on, the host it binds
    serve_port: int | None = Field(None, ge=1, le=65535)
    serve_host: str | None = None
    serve_bind_host: str | None = None
    # hosts that `POST /v1/clusters` may register (and so that the server may call),
    # comma-separated; empty: any host
    cluster_hosts: str = ""
    extra: dict = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def from_env(cls) -> "Settings":
        """The settings of this process: TRAINYARD_* variables, then the home's defaults."""
        try:
            read = _FromEnvironment(extra={})
        except ValidationError as exc:
            raise _env_error(exc) from None
        values = {name: getattr(read, name) for name in cls.model_fields}
        h = home()
        # an empty variable means "the default", as it always has
        defaults = {"db_url": f"sqlite:///{h / 'trainyard.db'}", "admin_token_file": str(h / "admin.token"),
                    "ray_token_file": str(h / "ray.token"), "storage": f"file://{h / 'storage'}"}
        for name, default in defaults.items():
            values[name] = values[name] or default
        return cls(**values)

    @field_validator("storage_roots", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # one variable, several roots: the same spelling as PATH-like variables, not JSON
        if isinstance(value, str):
            return [root.strip() for root in value.split(",") if root.strip()]
        return value

    def allowed_storage_roots(self) -> list[str]:
        """The storage roots a spec may write under: the default storage, then the configured ones."""
        roots = [self.storage] if self.storage else []
        return roots + [r for r in self.storage_roots if r not in roots]

    def cluster_hosts_allowed(self) -> tuple[str, ...]:
        """The hosts clusters may be registered at, lower-case; () means any."""
        return tuple(h.strip().lower() for h in self.cluster_hosts.split(",") if h.strip())

    def public(self) -> dict:
        """Settings safe to show: no secrets."""
        data = self.model_dump()
        for key in _SECRET_SETTINGS:
            data[key] = "***" if getattr(self, key) else None
        return data

    def secret_values(self) -> list[str]:
        """The secrets these settings hold, revealed: for redaction, never for display."""
        return [v.get_secret_value() for v in (getattr(self, k) for k in _SECRET_SETTINGS) if v is not None]


class _FromEnvironment(Settings):
    """Settings whose unset fields come from the environment (see Settings.from_env)."""

    # an empty variable counts as unset (`TRAINYARD_MLFLOW_URI=` falls back to MLFLOW_TRACKING_URI)
    model_config = SettingsConfigDict(env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


_SECRET_SETTINGS = ("s3_key", "s3_secret", "mlflow_password")
_SECRET_FIELDS = {*_SECRET_SETTINGS, "aws_access_key_id", "aws_secret_access_key", "mlflow_tracking_password"}


def _env_error(exc: ValidationError) -> Exception:
    from trainyard.errors import TrainyardError

    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else ""
    var = name.upper() if name.upper().startswith(("TRAINYARD_", "AWS_", "MLFLOW_")) else f"TRAINYARD_{name.upper()}"
    secret = name.lower() in _SECRET_FIELDS
    value: Any = None if secret else err.get("input")
    return TrainyardError(f"{err['msg'].lower()}, got {'***' if secret else repr(value)}", field=var,
                          fix=f"set {var} to a valid value or unset it")

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

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["home", "ensure_home", "private_umask", "PRIVATE_UMASK", "read_secret", "ensure_secret",
           "Settings", "stack_file", "read_stack", "parse_group_roles", "oidc_url_problem", "OIDC_ROLES"]

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
    # the most of the time the controller's ticks may take: after a tick that used T seconds of
    # CPU the next waits at least T * (1 / share - 1), so that ticks over a very long queue (0.46 s each at
    # 50,000 queued, benchmarks/scheduler_scale.py) do not run back to back and hold the CPU
    # that the API shares with them (one process, one GIL) in a burst of submissions; Slurm's
    # sched_min_interval answers the same problem. 1: tick every poll_interval_s, whatever it costs
    controller_max_share: float = Field(0.25, gt=0, le=1)
    # the share the tick keeps to while the API is serving requests (controller/pacing.py):
    # requests first, the scheduler takes what they leave; capped at controller_max_share
    controller_busy_share: float = Field(0.05, gt=0, le=1)
    # followed logs (GET /v1/jobs/{id}/logs?follow=true) each hold a worker thread while open,
    # from a pool (40) that every synchronous route shares: at most this many at once per
    # user and on the whole server; past either, 429 (api/follows.py)
    log_follows_per_user: int = Field(4, ge=1, le=1000)
    log_follows_total: int = Field(24, ge=1, le=1000)
    # a RUNNING job whose workers print no new step for this long is STALLED (controller/stall.py);
    # a spec's failure.stall_timeout_s / failure.on_stall override these per job
    stall_timeout_s: float = Field(600.0, ge=1, le=7 * 24 * 3600)
    on_stall: Literal["stop", "requeue", "none"] = "requeue"
    # requeues of one job for stalling before it is failed instead (a job that always stalls)
    stall_max_requeues: int = Field(2, ge=0, le=100)
    # what the driver command is (a stand-in runner in tests); {job_id} is replaced
    runner_entrypoint: str | None = None
    # the Python that demand requests run with on the cluster
    cluster_python: str = "python"
    # off: leave scaling to Ray's own demand
    autoscaler_demand: bool = True
    demand_running_grace_s: float = Field(0.0, ge=0)
    # Preemption (docs/scheduling.md): a higher-priority job, or a project reclaiming its
    # guaranteed share, may stop a running job, which checkpoints and is queued again.
    # TRAINYARD_PREEMPTION=false turns it off. A job younger than the minimum runtime is never
    # preempted (no thrashing); one whose checkpoint has not come within the grace period is
    # stopped by Ray (the steps since its last checkpoint are lost) and queued all the same.
    preemption: bool = True
    preemption_min_runtime_s: float = Field(300.0, ge=0, le=30 * 86400)
    preemption_grace_s: float = Field(120.0, gt=0, le=86400)
    # Ray Serve's HTTP proxy: the port, the host clients reach it on, the host it binds
    serve_port: int | None = Field(None, ge=1, le=65535)
    serve_host: str | None = None
    serve_bind_host: str | None = None
    # retention: replayable Idempotency-Key answers are kept this long (a client retries within
    # minutes; a day is generous); audit events this many days (0 keeps them forever)
    idempotency_ttl_s: float = Field(86400.0, ge=60, le=90 * 86400)
    audit_retention_days: float = Field(90.0, ge=0, le=36500)
    # hosts that `POST /v1/clusters` may register (and so that the server may call),
    # comma-separated; empty: any host
    cluster_hosts: str = ""
    # Single sign-on (trainyard.auth.oidc): set the issuer to accept its JWTs besides API tokens.
    oidc_issuer: str | None = None  # exactly the tokens' `iss`, e.g. https://idp.example.com/realms/ml
    oidc_audience: str | None = Field(None, validate_default=True)  # the tokens' `aud`: required with an issuer
    # the issuer's JWKS; unset: the `jwks_uri` of <issuer>/.well-known/openid-configuration
    oidc_jwks_url: str | None = None
    # the claim that names the user; a value that is not a valid user name (an email is not)
    # becomes a readable slug plus a hash of the exact value (trainyard.auth.oidc.user_name_for)
    oidc_user_claim: str = Field("email", min_length=1, max_length=128)
    oidc_groups_claim: str = Field("groups", min_length=1, max_length=128)
    # group -> {project: role}; "*": "admin" makes the group's members admins. From the
    # environment: `group=project:role,...` (`ml-team=vision:member,ops=*:admin`), or the same
    # mapping as JSON (`{"CN=ml,OU=groups": {"vision": "member"}}`) for group names with ',' or '='
    oidc_group_roles: Annotated[dict[str, dict[str, str]], NoDecode] = Field(default_factory=dict)
    # the console's own sign-on (authorization code + PKCE, a public client: no secret). Set the
    # client id registered at the issuer for the console, with redirect URI
    # <server URL>/auth/callback. The console sends the ID token when the audience is this client
    # id, else the access token (whose `aud` must then be TRAINYARD_OIDC_AUDIENCE).
    oidc_client_id: str | None = Field(None, validate_default=True)
    oidc_scopes: str = Field("openid email profile", validate_default=True)
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

    @field_validator("oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _oidc_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        problem = oidc_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("oidc_audience")
    @classmethod
    def _audience_with_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value or None
        if value is None and info.data.get("oidc_issuer"):
            raise ValueError("an OIDC issuer is set, so the audience its tokens must carry is needed "
                             "(set TRAINYARD_OIDC_AUDIENCE to the client id the issuer puts in `aud`)")
        if value is not None and (len(value) > 256 or not value.strip() or value != value.strip()):
            raise ValueError("must be the tokens' `aud` value: 1-256 characters, no surrounding spaces")
        return value

    @field_validator("oidc_client_id")
    @classmethod
    def _client_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = value or None
        if value is None:
            return None
        if not info.data.get("oidc_issuer"):
            raise ValueError("a console client id needs an issuer: set TRAINYARD_OIDC_ISSUER (and "
                             "TRAINYARD_OIDC_AUDIENCE) too, or leave TRAINYARD_OIDC_CLIENT_ID unset")
        if not _CLIENT_ID_RE.match(value):
            raise ValueError(f"{value[:40]!r} is not a client id: 1-256 visible characters, no spaces "
                             f"(the id the issuer gave the console's registration)")
        return value

    @field_validator("oidc_scopes")
    @classmethod
    def _scopes(cls, value: str) -> str:
        scopes = value.split(" ") if isinstance(value, str) else []
        if not isinstance(value, str) or len(value) > 512 or not all(_SCOPE_RE.match(s) for s in scopes):
            raise ValueError(f"{str(value)[:60]!r} is not a scope list: scopes separated by single spaces, "
                             f"each of visible characters other than '\\' and '\"', at most 512 characters "
                             f"(e.g. 'openid email profile')")
        if "openid" not in scopes:
            raise ValueError(f"{value[:60]!r} lacks 'openid': the console signs in with OpenID Connect "
                             f"(e.g. 'openid email profile')")
        if len(set(scopes)) != len(scopes) or len(scopes) > 32:
            raise ValueError(f"{value[:60]!r}: each scope once, at most 32 of them")
        return value

    @field_validator("oidc_group_roles", mode="before")
    @classmethod
    def _group_roles(cls, value: Any) -> Any:
        return parse_group_roles(value)

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


# Project roles a group may grant (trainyard.auth.roles.Role by name), and the cluster-wide one
OIDC_ROLES = ("viewer", "member", "maintainer")
_ADMIN = "admin"
_PROJECT_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # specs.NAME_RE
_MAX_GROUP = 256
_CLIENT_ID_RE = re.compile(r"^[\x21-\x7e]{1,256}$")
_SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 3.3 scope-token
_MAX_ENTRIES = 1000
_MAPPING_HELP = ("write group=project:role entries separated by commas (roles: viewer, member, "
                 "maintainer; `group=*:admin` for admins), or a JSON object {group: {project: role}}")


def oidc_url_problem(url: str) -> str | None:
    """What is wrong with an issuer or JWKS URL, or None. Plain http only to this machine:
    keys fetched in the clear could be swapped on the way."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "must be an https:// URL"
    if parts.scheme not in ("https", "http") or not host or len(url) > 2048 or parts.query or parts.fragment:
        return "must be an https:// URL with a host, no query and no fragment"
    if parts.scheme == "http" and not _loopback(host):
        return "must use https:// (plain http only to this machine: localhost, 127.0.0.1)"
    return None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_group_roles(value: Any) -> dict[str, dict[str, str]]:
    """TRAINYARD_OIDC_GROUP_ROLES as {group: {project: role}}; ValueError naming the entry that
    is wrong. Text is `group=project:role,...` or a JSON object; a dict is checked as it is."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos}); {_MAPPING_HELP}") from None
        else:
            pairs = []
            for entry in (e.strip() for e in text.split(",")):
                if not entry:
                    continue
                group, eq, target = entry.rpartition("=")
                project, colon, role = target.partition(":")
                if not eq or not colon:
                    raise ValueError(f"entry {entry[:120]!r} is not group=project:role; {_MAPPING_HELP}")
                pairs.append((group.strip(), project.strip(), role.strip(), entry))
            return _checked_roles(pairs)
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, got {type(value).__name__}; {_MAPPING_HELP}")
    pairs = []
    for group, targets in value.items():
        if not isinstance(targets, dict):
            raise ValueError(f"group {str(group)[:120]!r} must map to {{project: role}}, got {str(targets)[:120]!r}")
        for project, role in targets.items():
            pairs.append((group, project, role, f"{group}={project}:{role}"))
    return _checked_roles(pairs)


def _checked_roles(pairs: list[tuple[Any, Any, Any, str]]) -> dict[str, dict[str, str]]:
    if len(pairs) > _MAX_ENTRIES:
        raise ValueError(f"has {len(pairs)} entries; at most {_MAX_ENTRIES}")
    out: dict[str, dict[str, str]] = {}
    for group, project, role, entry in pairs:
        where = f"entry {entry[:120]!r}"
        if not isinstance(group, str) or not group or len(group) > _MAX_GROUP or group != group.strip() \
                or any(ord(c) < 32 or c == "\x7f" for c in group):
            raise ValueError(f"{where}: the group must be 1-{_MAX_GROUP} printable characters")
        if not isinstance(role, str) or role not in (*OIDC_ROLES, _ADMIN):
            raise ValueError(f"{where}: role {str(role)[:40]!r} is not known; use one of "
                             f"{', '.join(OIDC_ROLES)}, or *:admin")
        if project == "*" or role == _ADMIN:
            if (project, role) != ("*", _ADMIN):
                raise ValueError(f"{where}: admin is cluster-wide and '*' means every project, so they go "
                                 f"together: write {group}=*:admin, or name one project with a project role")
        elif not isinstance(project, str) or not _PROJECT_RE.match(project):
            raise ValueError(f"{where}: project {str(project)[:80]!r} is not a valid project name "
                             f"(lower-case letters, digits and '-', at most 63)")
        roles = out.setdefault(group, {})
        if project in roles and roles[project] != role:
            raise ValueError(f"{where}: group {group!r} already maps project {project!r} to "
                             f"{roles[project]!r}; give each group one role per project")
        roles[project] = role
    return out


_SECRET_SETTINGS = ("s3_key", "s3_secret", "mlflow_password")
_SECRET_FIELDS = {*_SECRET_SETTINGS, "aws_access_key_id", "aws_secret_access_key", "mlflow_tracking_password"}


def _env_error(exc: ValidationError) -> Exception:
    from trainyard.errors import TrainyardError

    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else ""
    var = name.upper() if name.upper().startswith(("TRAINYARD_", "AWS_", "MLFLOW_")) else f"TRAINYARD_{name.upper()}"
    secret = name.lower() in _SECRET_FIELDS
    value: Any = None if secret else err.get("input")
    msg = err["msg"]
    if err.get("type") == "value_error" and (err.get("ctx") or {}).get("error") is not None:
        msg = str(err["ctx"]["error"])  # our own validators' words, without pydantic's "Value error, "
    msg = msg[:1].lower() + msg[1:]  # it follows "VARIABLE: "; names and values inside keep their case
    if isinstance(value, str) and len(value) > 200:
        value = value[:200] + "..."
    return TrainyardError(f"{msg}, got {'***' if secret else repr(value)}", field=var,
                          fix=f"set {var} to a valid value or unset it")

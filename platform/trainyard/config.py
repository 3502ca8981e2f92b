"""Where Trainyard keeps its files, and the settings every component reads.

Everything lives under the Trainyard home folder: `$TRAINYARD_HOME`, default `~/.trainyard`.

    home/
      admin.token        the REST API's admin bearer token (mode 0600)
      ray.token          the local Ray head's auth token (mode 0600)
      stack.json         what `trainyard up` started: addresses and PIDs
      trainyard.db       the server's SQLite store
      mlflow/            MLflow's SQLite backend and artifacts
      storage/           default checkpoint storage (file://)
      logs/              component logs

Server settings come from environment variables (TRAINYARD_*), so the same code runs
from `trainyard up`, in a container, or in a test.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["home", "read_secret", "ensure_secret", "Settings", "stack_file", "read_stack"]


def home() -> Path:
    path = Path(os.environ.get("TRAINYARD_HOME") or Path.home() / ".trainyard").expanduser()
    return path


def ensure_secret(path: Path) -> str:
    """Read a token file, creating it (mode 0600) with a fresh random token if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
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


@dataclass
class Settings:
    """The server's configuration. `from_env()` reads TRAINYARD_* variables."""

    db_url: str = ""
    admin_token_file: str = ""
    mlflow_uri: str = ""
    # The default cluster: the Ray dashboard (Jobs/Serve REST API) and its token file.
    ray_dashboard_url: str = ""
    ray_token_file: str = ""
    storage: str = ""  # default checkpoint storage, file:// or s3://
    s3_endpoint_url: str | None = None
    s3_key: str | None = field(default=None, repr=False)
    s3_secret: str | None = field(default=None, repr=False)
    poll_interval_s: float = 1.0
    # hosts that `POST /v1/clusters` may register (and so that the server may call), comma-separated;
    # empty: any host
    cluster_hosts: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> "Settings":
        h = home()
        env = os.environ
        return cls(
            db_url=env.get("TRAINYARD_DB_URL") or f"sqlite:///{h / 'trainyard.db'}",
            admin_token_file=env.get("TRAINYARD_ADMIN_TOKEN_FILE") or str(h / "admin.token"),
            mlflow_uri=env.get("TRAINYARD_MLFLOW_URI") or env.get("MLFLOW_TRACKING_URI", ""),
            ray_dashboard_url=env.get("TRAINYARD_RAY_DASHBOARD_URL", ""),
            ray_token_file=env.get("TRAINYARD_RAY_TOKEN_FILE") or str(h / "ray.token"),
            storage=env.get("TRAINYARD_STORAGE") or f"file://{h / 'storage'}",
            s3_endpoint_url=env.get("TRAINYARD_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3"),
            s3_key=env.get("AWS_ACCESS_KEY_ID"),
            s3_secret=env.get("AWS_SECRET_ACCESS_KEY"),
            poll_interval_s=float(env.get("TRAINYARD_POLL_INTERVAL_S", "1.0")),
            cluster_hosts=env.get("TRAINYARD_CLUSTER_HOSTS", ""),
        )

    def cluster_hosts_allowed(self) -> tuple[str, ...]:
        """The hosts clusters may be registered at, lower-case; () means any."""
        return tuple(h.strip().lower() for h in self.cluster_hosts.split(",") if h.strip())

    def public(self) -> dict:
        """Settings safe to show: no secrets."""
        data = asdict(self)
        for key in ("s3_key", "s3_secret"):
            data[key] = "***" if data[key] else None
        return data

"""Shared fixtures. Named after what they start (ray_head, mlflow_server, moto_s3).

Each starts a real component on private ports under one test root
($TRAINYARD_TEST_ROOT or a temp dir), and stops only what it started.
Markers: `slow` runs only with TRAINYARD_SLOW=1; `gpu` only where CUDA is available.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Ray reads this once, when it is imported: without it, Ray on Linux turns a loopback head's
# 127.0.0.1 into the machine's public address, where the local heads (bound to loopback) do
# not listen, and ray.init waits for the GCS forever. Set it before any test imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

REPO = Path(__file__).resolve().parents[1]


# The SDK's answers are typed models; `answer["field"]` still works for old callers but warns.
# The unit tests (and the CLI code they drive) use attributes, and this keeps them from
# sliding back; the integration and end-to-end tests still have older reads, which only warn.
_SHIM_IS_AN_ERROR = pytest.mark.filterwarnings("error:.*is deprecated. use the attribute:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    slow = os.environ.get("TRAINYARD_SLOW") == "1"
    unit = REPO / "tests" / "unit"
    for item in items:
        if unit in Path(str(item.path)).parents:
            item.add_marker(_SHIM_IS_AN_ERROR)
        if item.get_closest_marker("slow") and not slow:
            item.add_marker(pytest.mark.skip(reason="slow quality run: set TRAINYARD_SLOW=1 (make test-slow)"))
        if item.get_closest_marker("gpu"):
            try:
                import torch

                has_gpu = torch.cuda.is_available()
            except ImportError:
                has_gpu = False
            if not has_gpu:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session", autouse=True)
def _store_secret_key():
    """One store encryption key for the session (servers started here inherit it), so that no
    test writes a key into the real ~/.trainyard; tests of the key file unset it."""
    if os.environ.get("TRAINYARD_SECRET_KEY"):
        yield
        return
    from cryptography.fernet import Fernet

    os.environ["TRAINYARD_SECRET_KEY"] = Fernet.generate_key().decode()
    try:
        yield
    finally:
        os.environ.pop("TRAINYARD_SECRET_KEY", None)


@pytest.fixture(scope="session", autouse=True)
def _serve_port_per_worker():
    """Under pytest-xdist (`make test` runs two workers), each worker's stacks and servers get a
    Serve HTTP port of their own: Serve's default, 8000, is one port per machine, and two local
    Ray clusters serving on it at once would take each other's requests."""
    if not os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("TRAINYARD_SERVE_PORT"):
        yield
        return
    from trainyard.local.processes import free_port

    os.environ["TRAINYARD_SERVE_PORT"] = str(free_port())
    try:
        yield
    finally:
        os.environ.pop("TRAINYARD_SERVE_PORT", None)


@pytest.fixture(scope="session")
def test_root() -> Path:
    base = os.environ.get("TRAINYARD_TEST_ROOT")
    root = Path(tempfile.mkdtemp(prefix="ty-", dir=base or None))
    yield root
    if not base:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(test_root):
    """A real local Ray head (2 CPUs, token auth on, private ports and token).

    Yields a trainyard.local.processes.RayHead. While it runs, this process's environment
    points Ray clients at it (RAY_ADDRESS, RAY_AUTH_MODE=token, RAY_AUTH_TOKEN).
    """
    from trainyard.local.processes import start_ray_head, stop_ray_head
    from trainyard.local.ray_auth import ray_client_env

    # a short path: Ray's unix sockets live under the temp dir (108-byte limit)
    temp_dir = tempfile.mkdtemp(prefix="tyr-", dir="/tmp")
    head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=int(os.environ.get("TRAINYARD_TEST_CPUS", "2")),
                          log_file=test_root / "ray-start.log")
    # ray_client_env also refreshes Ray's cached auth: some test may have imported ray before
    # this fixture first ran, and Ray reads RAY_AUTH_MODE at import (FACTS.md)
    try:
        with ray_client_env(head.env()):
            yield head
            import ray

            if ray.is_initialized():
                ray.shutdown()
    finally:
        stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(test_root):
    """A real `mlflow server` (SQLite backend, proxied artifacts). Yields its URL."""
    from trainyard.local.processes import start_mlflow, stop_process

    proc = start_mlflow(root=test_root / "mlflow")
    try:
        yield proc.url
    finally:
        stop_process(proc.pid)


class S3:
    def __init__(self, endpoint_url: str, bucket: str):
        self.endpoint_url = endpoint_url
        self.bucket = bucket
        self.key = "testing"
        self.secret = "testing"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "TRAINYARD_S3_ENDPOINT_URL": self.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1"}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key=self.key, secret=self.secret,
                                 client_kwargs={"endpoint_url": self.endpoint_url, "region_name": "us-east-1"})


@pytest.fixture(scope="session")
def moto_s3(test_root):
    """A real S3-compatible server (moto in server mode, over HTTP) with one bucket."""
    from moto.server import ThreadedMotoServer

    from trainyard.local.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(f"http://127.0.0.1:{port}", "trainyard-test")
    # s3fs sends LocationConstraint=<region> on mkdir, which S3 (and moto) reject for
    # us-east-1: create the bucket with no region given
    import s3fs

    s3fs.S3FileSystem(key=s3.key, secret=s3.secret,
                      client_kwargs={"endpoint_url": s3.endpoint_url}).mkdir(s3.bucket)
    try:
        yield s3
    finally:
        server.stop()


@pytest.fixture()
def trainyard_home(tmp_path, monkeypatch):
    """An empty Trainyard home folder for this test."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRAINYARD_HOME", str(home))
    return home

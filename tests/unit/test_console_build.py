"""The console's committed build: current with its source, served at / with the right headers."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from trainyard.api.console import CONSOLE_DIR, IMMUTABLE, NO_CACHE, install_console

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "console"
# console/sources.js holds the same list and the same digest; keep the two in step
ROOTS = ["index.html", "package.json", "package-lock.json", "vite.config.js", "sources.js", "src"]


def source_digest(base: Path) -> str:
    files: list[Path] = []
    for root in ROOTS:
        path = base / root
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    names = sorted(os.path.relpath(f, base).replace(os.sep, "/") for f in files)
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        digest.update((base / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def test_committed_build_matches_its_source():
    """A change under console/ needs `make console`."""
    info = json.loads((CONSOLE_DIR / "build-info.json").read_text())
    assert info["sources_sha256"] == source_digest(SOURCE), (
        "platform/trainyard/console/ was built from other sources than console/ holds: run `make console` "
        "and commit the result")


def test_build_references_only_files_it_ships():
    index = (CONSOLE_DIR / "index.html").read_text()
    assets = {p.name for p in (CONSOLE_DIR / "assets").iterdir()}
    referenced = {part.split('"')[0] for part in index.split("/assets/")[1:]}
    assert referenced and referenced <= assets


@pytest.mark.skipif(not shutil.which("node") or not (SOURCE / "node_modules").is_dir(),
                    reason="needs Node and console/node_modules (`make console` installs them)")
def test_rebuild_gives_the_committed_build(tmp_path):
    env = {**os.environ, "TRAINYARD_CONSOLE_OUT": str(tmp_path / "out")}
    subprocess.run(["npx", "vite", "build", "--logLevel", "error"], cwd=SOURCE, env=env, check=True, timeout=300)
    built = {p.relative_to(tmp_path / "out").as_posix(): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    committed = {p.relative_to(CONSOLE_DIR).as_posix(): p.read_bytes() for p in CONSOLE_DIR.rglob("*") if p.is_file()}
    assert sorted(built) == sorted(committed)
    assert [k for k in built if built[k] != committed[k]] == []


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()

    @app.get("/v1/ping")
    def ping() -> dict:
        return {"ok": True}

    assert install_console(app)
    return TestClient(app)


def test_client_routes_get_the_app_without_caching(client):
    for path in ("/", "/jobs/j-123", "/sweeps", "/models/mnist-cnn"):
        resp = client.get(path)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html"), path
        assert '<div id="app">' in resp.text and resp.headers["cache-control"] == NO_CACHE


def test_hashed_assets_are_immutable(client):
    name = next(p.name for p in (CONSOLE_DIR / "assets").iterdir() if p.suffix == ".js")
    resp = client.get(f"/assets/{name}")
    assert resp.status_code == 200 and resp.headers["cache-control"] == IMMUTABLE
    assert client.get("/assets/missing-0000.js").status_code == 404


def test_api_paths_keep_their_own_answers(client):
    assert client.get("/v1/ping").json() == {"ok": True}
    assert client.get("/openapi.json").json()["openapi"]
    for path in ("/v1/nothing-here", "/v1", "/docs/x", "/healthz"):
        assert client.get(path).status_code == 404, path


def test_no_file_outside_the_build_is_served(client):
    for path in ("/..%2fpyproject.toml", "/%2e%2e/pyproject.toml", "/../../pyproject.toml"):
        resp = client.get(path)
        assert "[project]" not in resp.text


def test_not_built_mounts_nothing(tmp_path):
    app = FastAPI()
    assert install_console(app, directory=tmp_path) is False
    assert TestClient(app).get("/").status_code == 404


def test_spec_schemas_are_served_for_the_submit_page(client):
    resp = client.get("/specs.json")
    assert resp.status_code == 200 and resp.headers["cache-control"] == NO_CACHE
    assert set(resp.json()) >= {"job", "sweep"}

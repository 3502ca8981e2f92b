"""The web console: the built single-page app in trainyard/console/ (made by `make console`
from console/ at the repository root), served at `/`.

Hashed assets (/assets/NAME-HASH.js) never change under their name, so browsers may keep them
for a year; index.html and the other top-level files must be asked for again (no-cache), so that
a new build is picked up. Any other path that is not an API path answers index.html, so that a
reload on a client route (/jobs/ID) works; /v1/... and the API reference keep their own 404s.
/specs.json is the spec schemas (what `make schemas` writes), for the Submit page's checks.
The console holds no data: it calls the API with the user's token like the CLI does.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

__all__ = ["CONSOLE_DIR", "SPEC_SCHEMAS", "install_console", "IMMUTABLE", "NO_CACHE"]

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
SPEC_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas" / "specs.json"
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
# not client routes: paths under these answer the API's own 404
_API_PREFIXES = ("v1", "docs", "redoc", "openapi.json", "healthz")


class _HashedAssets(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = IMMUTABLE
        return response


def install_console(app: FastAPI, *, directory: Path = CONSOLE_DIR) -> bool:
    """Serve the console from `directory`; False (and nothing mounted) when it was not built."""
    index = directory / "index.html"
    if not index.is_file():
        return False
    root = directory.resolve()
    if (directory / "assets").is_dir():
        app.mount("/assets", _HashedAssets(directory=directory / "assets"), name="console-assets")

    @app.get("/specs.json", include_in_schema=False)
    def spec_schemas() -> FileResponse:
        # the Submit page validates against the schemas of the server it talks to, not of its build
        return FileResponse(SPEC_SCHEMAS, media_type="application/json", headers={"Cache-Control": NO_CACHE})

    @app.get("/{path:path}", include_in_schema=False)
    def console(path: str) -> FileResponse:
        if path.split("/", 1)[0] in _API_PREFIXES:
            raise HTTPException(status_code=404, detail="Not Found")
        if path and "/" not in path:  # a top-level file of the build (build-info.json, icons)
            candidate = (root / path).resolve()
            if candidate.parent == root and candidate.is_file():
                return FileResponse(candidate, headers={"Cache-Control": NO_CACHE})
        return FileResponse(index, headers={"Cache-Control": NO_CACHE})

    return True

"""The server's OpenAPI document as committed in console/openapi.json, from which the console's
TypeScript types are generated (`make api-client`).

    python -m trainyard.api.openapi_doc > console/openapi.json

Built from an app with default settings and no controller: the document depends on the code
only, never on this machine's environment (a test checks the committed copy equals it).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["openapi_document", "openapi_text"]


def openapi_document() -> dict[str, Any]:
    from trainyard.api.app import create_app
    from trainyard.config import Settings

    with tempfile.TemporaryDirectory(prefix="trainyard-openapi-") as tmp:
        # an explicit settings object: nothing read from TRAINYARD_* variables; nothing is connected
        settings = Settings(db_url=f"sqlite:///{Path(tmp) / 'openapi.db'}")
        app = create_app(settings, run_controller=False)
        doc = app.openapi()
        app.state.ctx.db.dispose()
    return doc


def openapi_text() -> str:
    """The document as committed: sorted keys, two-space indent, one final newline."""
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_text())

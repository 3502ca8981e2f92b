"""The import contracts of pyproject.toml's [tool.importlinter] hold (layers, runner outside the
control plane, no torch there, no family imported by the platform)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    # the console script next to this interpreter, so that the venv's import-linter runs
    script = Path(sys.executable).with_name("lint-imports")
    return str(script) if script.exists() else (shutil.which("lint-imports") or "lint-imports")


def test_import_contracts_hold():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([_lint_imports(), "--no-cache", "--config", str(REPO / "pyproject.toml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout

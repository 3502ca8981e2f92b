"""The registry tells a version's family through its own tracking URI, not the process's default."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


def test_family_is_read_through_the_registrys_tracking_uri(tmp_path, monkeypatch):
    from serving_support.models import register_cnn

    from trainyard.serving.registry import Registry

    import mlflow

    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    try:
        version = register_cnn(uri, "fam", accuracy=0.5)
        # like the server: nothing process-wide points at this tracking server
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert Registry(uri).family("fam", version) == "cnn"
    finally:
        mlflow.set_tracking_uri(before)

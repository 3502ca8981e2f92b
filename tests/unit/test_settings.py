"""Settings: the TRAINYARD_* variables, secrets kept out of repr and public(), bad values named."""
from __future__ import annotations

import pytest

from trainyard.config import Settings
from trainyard.errors import TrainyardError


def test_from_env_reads_the_documented_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    monkeypatch.setenv("TRAINYARD_MLFLOW_URI", "")  # empty: falls back to the standard variable
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    monkeypatch.setenv("TRAINYARD_POLL_INTERVAL_S", "0.25")
    monkeypatch.setenv("TRAINYARD_AUTOSCALER_DEMAND", "off")
    monkeypatch.setenv("TRAINYARD_SERVE_PORT", "8123")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-visible-nowhere")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret-visible-nowhere")
    s = Settings.from_env()
    assert s.db_url == f"sqlite:///{tmp_path / 'trainyard.db'}"
    assert s.storage == f"file://{tmp_path / 'storage'}"
    assert (s.mlflow_uri, s.poll_interval_s, s.autoscaler_demand, s.serve_port) == (
        "http://mlflow.example:5000", 0.25, False, 8123)
    assert s.s3_secret.get_secret_value() == "s3cret-visible-nowhere"
    shown = repr(s) + str(s.public()) + s.model_dump_json()
    assert "visible-nowhere" not in shown
    assert s.public()["s3_key"] == "***"
    assert sorted(s.secret_values()) == ["AKIA-visible-nowhere", "s3cret-visible-nowhere"]


def test_bad_variable_names_the_variable_and_keeps_secrets_out(monkeypatch):
    monkeypatch.setenv("TRAINYARD_POLL_INTERVAL_S", "fast")
    with pytest.raises(TrainyardError) as exc:
        Settings.from_env()
    assert exc.value.field == "TRAINYARD_POLL_INTERVAL_S" and "'fast'" in str(exc.value)
    monkeypatch.setenv("TRAINYARD_POLL_INTERVAL_S", "1")
    monkeypatch.setenv("TRAINYARD_SERVE_PORT", "70000")
    with pytest.raises(TrainyardError, match="TRAINYARD_SERVE_PORT"):
        Settings.from_env()


def test_settings_given_by_hand_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-mine")
    s = Settings(db_url="sqlite:///x.db")
    assert s.mlflow_uri == "" and s.s3_secret is None
    s.s3_key = "AKIAKEY123"  # assignment is validated: the key becomes a SecretStr
    assert s.s3_key.get_secret_value() == "AKIAKEY123" and "AKIAKEY123" not in repr(s)

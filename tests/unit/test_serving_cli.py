"""CLI surface of serving: help with examples, local validation before any server call."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.cli import main as cli
from trainyard.errors import EXIT_USAGE
from trainyard.specs import parse_endpoint_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv", [
    ["endpoints"], ["endpoints", "deploy"], ["endpoints", "list"], ["endpoints", "show"],
    ["endpoints", "predict"], ["endpoints", "delete"], ["models"], ["models", "promote"], ["models", "history"],
])
def test_every_serving_command_has_help_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_example_endpoint_spec_is_valid():
    spec = parse_endpoint_spec(REPO / "examples" / "endpoint-cnn.yaml")
    assert spec.model == "cnn-digits" and spec.promotion is not None


def test_bad_endpoint_spec_fails_locally_naming_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINYARD_URL", "http://127.0.0.1:9")  # never reached
    bad = tmp_path / "ep.yaml"
    bad.write_text("model: m\nautoscaling: {min_replicas: 3, max_replicas: 1}\n")
    assert cli.main(["endpoints", "deploy", "--spec", str(bad)]) == EXIT_USAGE
    assert "autoscaling.max_replicas" in capsys.readouterr().err


def test_bad_policy_fails_locally_naming_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINYARD_URL", "http://127.0.0.1:9")
    bad = tmp_path / "policy.yaml"
    bad.write_text("canary_weight: 1.0\n")
    assert cli.main(["models", "promote", "m", "--policy", str(bad)]) == EXIT_USAGE
    assert "canary_weight" in capsys.readouterr().err


def test_predict_with_invalid_json_fails_locally(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINYARD_URL", "http://127.0.0.1:9")
    data = tmp_path / "x.json"
    data.write_text("{not json")
    assert cli.main(["endpoints", "predict", "m", "--data", str(data)]) == EXIT_USAGE
    assert "--data" in capsys.readouterr().err


def test_promotion_events_read_plainly_with_and_without_a_champion(capsys):
    from trainyard.cli.endpoints import print_event

    print_event({"time": 0, "kind": "promoted", "candidate": "2", "champion": None,
                 "reason": "no champion yet: the first candidate is promoted directly"})
    print_event({"time": 0, "kind": "rolled_back", "candidate": "3", "champion": "2", "reason": "error rate",
                 "evidence": {"canary": {"requests": 40, "errors": 9, "p50_ms": 3.0, "p99_ms": 9.0}}})
    out = capsys.readouterr().out
    assert "v2 (no champion)" in out and "None" not in out
    assert "v3 (champion v2)" in out and "40 requests, 9 errors" in out

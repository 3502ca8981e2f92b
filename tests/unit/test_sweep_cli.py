"""`trainyard sweeps ...` against a fake SDK client (no server)."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.cli import main as cli

from api_views import sweep_item, sweep_view

REPO = Path(__file__).resolve().parents[2]

BOARD = {"metric": "accuracy", "mode": "max",
         "rows": [{"rank": 1, "trial": "t2", "params": {"training.lr": 0.01}, "metric": 0.93, "best": 0.93,
                   "state": "DONE", "iterations": 3},
                  {"rank": 2, "trial": "t1", "params": {"training.lr": 0.0001}, "metric": 0.41, "best": 0.41,
                   "state": "STOPPED", "iterations": 1}],
         "curves": {"t1": [[0, 1, 4, 0.41]], "t2": [[1, 1, 4, 0.7], [2, 2, 8, 0.85], [3, 3, 12, 0.93]]},
         "best_so_far": [[0, 4, 0.41], [1, 8, 0.7], [2, 12, 0.85], [3, 16, 0.93]]}


class FakeClient:
    def __init__(self):
        self.submitted = []
        self.cancelled = []

    def _sweep(self, state="SUCCEEDED"):
        return sweep_view("sw-1", name="cnn-sweep", workload="cnn", state=state, phase=state,
                          sweep={"algorithm": "random", "scheduler": "asha", "num_trials": 2,
                                 "max_concurrent_trials": 2},
                          leaderboard=BOARD, best=BOARD["rows"][0],
                          model={"model_name": "cnn-digits", "model_version": "4", "model_alias": "candidate",
                                 "registered_trial": "t2"}, mlflow_url="http://mlflow/#/x")

    def submit_sweep(self, spec, *, working_dir=None):
        self.submitted.append(spec)
        return self._sweep("PENDING")

    def get_sweep(self, sweep_id):
        return self._sweep()

    def list_sweeps(self):
        return [sweep_item("sw-1", name="cnn-sweep", workload="cnn", state="SUCCEEDED", phase="SUCCEEDED",
                           best=BOARD["rows"][0], num_trials=2, created_at=None)]

    def cancel_sweep(self, sweep_id):
        self.cancelled.append(sweep_id)
        return self._sweep("CANCELLED")


@pytest.fixture()
def fake(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return client


@pytest.mark.parametrize("argv", [["sweeps"], ["sweeps", "submit"], ["sweeps", "show"]])
def test_help_has_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0 and "examples:" in capsys.readouterr().out


def test_submit_wait_prints_leaderboard_and_candidate(fake, capsys):
    assert cli.main(["sweeps", "submit", str(REPO / "examples" / "sweep-cnn.yaml"), "--wait"]) == 0
    out = capsys.readouterr().out
    assert fake.submitted[0]["sweep"]["scheduler"] == "asha"
    assert "cnn-digits version 4" in out and "candidate" in out
    assert "training.lr" in out and "STOPPED" in out


def test_bad_sweep_exits_2_naming_the_field(tmp_path, fake, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: s\nworkload: cnn\nsweep:\n  scheduler: ashaa\n")
    assert cli.main(["sweeps", "submit", str(path)]) == 2
    assert "sweep.scheduler" in capsys.readouterr().err and not fake.submitted


def test_show_plot_list_cancel(tmp_path, fake, capsys):
    png = tmp_path / "c.png"
    assert cli.main(["sweeps", "show", "sw-1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith(("#", "1 ", "2 "))]
    assert lines[0].split() == ["#", "trial", "training.lr", "accuracy", "best", "state", "iters"]
    assert cli.main(["sweeps", "list"]) == 0
    assert "sw-1" in capsys.readouterr().out
    assert cli.main(["sweeps", "cancel", "sw-1"]) == 0 and fake.cancelled == ["sw-1"]

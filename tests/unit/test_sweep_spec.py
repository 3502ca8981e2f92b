"""Sweep specs: every bad input is rejected before anything runs, naming the field."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trainyard.errors import SpecError
from trainyard.specs import parse_sweep_spec

REPO = Path(__file__).resolve().parents[2]
BASE = {"name": "s", "workload": "cnn"}


def _parse(sweep=None, **extra):
    data = {**BASE, **extra}
    if sweep is not None:
        data["sweep"] = sweep
    return parse_sweep_spec(data)


def _issues(sweep=None, **extra) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        _parse(sweep, **extra)
    return {i.field: i.message for i in info.value.issues}


def test_defaults_come_from_the_family():
    from trainyard.runner.sweep import plan_sweep

    plan = plan_sweep(_parse(), sweep_id="x")
    assert (plan.metric, plan.mode) == ("accuracy", "max")
    assert {d.key for d in plan.dims} == {"training.lr", "hyperparameters.channels", "hyperparameters.dropout"}
    assert plan.num_trials == 8 and plan.samples == 8


def test_example_spec_parses():
    spec = parse_sweep_spec(REPO / "examples" / "sweep-cnn.yaml")
    assert spec.sweep.scheduler == "asha" and spec.job_spec().workload == "cnn"


def test_empty_search_space():
    assert "sweep.search_space" in _issues({"search_space": {}})


@pytest.mark.parametrize("kind", ["uniform", "loguniform", "randint", "quniform"])
def test_low_not_below_high(kind):
    args = [5, 5, 1] if kind == "quniform" else [5, 5]
    issues = _issues({"search_space": {"hyperparameters.hidden": {kind: args}}})
    assert "low must be < high" in issues[f"sweep.search_space.hyperparameters.hidden.{kind}"]


@pytest.mark.parametrize("low", [0, -1e-3])
def test_loguniform_needs_positive_bounds(low):
    issues = _issues({"search_space": {"training.lr": {"loguniform": [low, 0.1]}}})
    assert "> 0" in issues["sweep.search_space.training.lr.loguniform"]


def test_grid_with_unmeetable_num_trials():
    space = {"training.lr": {"grid": [1e-3, 1e-2]}, "hyperparameters.channels": {"grid": [8, 16, 32]}}
    assert "6 points" in _issues({"search_space": space, "algorithm": "grid", "num_trials": 4})["sweep.num_trials"]
    assert "6 points" in _issues({"search_space": space, "num_trials": 7})["sweep.num_trials"]
    assert _parse({"search_space": space, "algorithm": "grid", "num_trials": 12}).sweep.num_trials == 12


def test_grid_algorithm_rejects_continuous_dimensions():
    issues = _issues({"search_space": {"training.lr": {"uniform": [1e-3, 1e-2]}}, "algorithm": "grid"})
    assert "training.lr" in issues["sweep.algorithm"]


def test_bayesian_rejects_grid_dimensions():
    issues = _issues({"search_space": {"training.lr": {"grid": [1e-3, 1e-2]}}, "algorithm": "bayesian",
                      "num_trials": 2})
    assert "grid" in issues["sweep.algorithm"]


def test_unknown_scheduler_and_algorithm_suggest():
    issues = _issues({"scheduler": "ashaa", "algorithm": "bayes"})
    assert "did you mean 'asha'" in issues["sweep.scheduler"]
    assert "did you mean 'bayesian'" in issues["sweep.algorithm"]


def test_metric_must_be_reported_by_the_workload():
    issues = _issues({"metric": "acuracy"})
    assert "does not report 'acuracy'" in issues["sweep.metric"]
    assert "did you mean 'accuracy'" in issues["sweep.metric"]


def test_mode_required_for_a_non_primary_metric():
    issues = _issues({"metric": "eval_loss", "scheduler": "asha"})
    assert "asha" in issues["sweep.mode"] and "primary metric" in issues["sweep.mode"]
    assert _parse({"metric": "eval_loss", "mode": "min", "scheduler": "asha"}).sweep.mode == "min"
    # the family's metric: its mode applies
    assert _parse({"metric": "accuracy", "scheduler": "asha"}).sweep.mode is None


def test_keys_are_checked_against_the_job_and_family():
    issues = _issues({"search_space": {"training.lrr": {"uniform": [0.1, 0.2]},
                                       "hyperparameters.chanels": {"choice": [8]},
                                       "optimizer.lr": {"choice": [1]},
                                       "deepspeed.zero_stage": {"choice": [1, 5]}}})
    assert "did you mean 'lr'" in issues["sweep.search_space.training.lrr"]
    assert "did you mean 'channels'" in issues["sweep.search_space.hyperparameters.chanels"]
    assert "section" in issues["sweep.search_space.optimizer.lr"]
    assert "value 5" in issues["sweep.search_space.deepspeed.zero_stage"]


def test_malformed_distribution():
    issues = _issues({"search_space": {"training.lr": {"normal": [0, 1]}, "training.epochs": [1, 2],
                                       "training.batch_size": {"quniform": [16, 64, 0]}}})
    assert "did you mean" in issues["sweep.search_space.training.lr"] or "unknown" in issues["sweep.search_space.training.lr"]
    assert "exactly one" in issues["sweep.search_space.training.epochs"]
    assert "q must be" in issues["sweep.search_space.training.batch_size.quniform"]


def test_pbt_rules():
    issues = _issues({"scheduler": "pbt", "pbt": {"mutate": ["training.wd"]}})
    assert "not a key" in issues["sweep.pbt.mutate"]
    issues = _issues({"scheduler": "pbt", "search_space": {"hyperparameters.channels": {"choice": [8, 16]}}})
    assert "nothing to mutate" in issues["sweep.pbt.mutate"]
    from trainyard.runner.sweep import plan_sweep

    assert plan_sweep(_parse({"scheduler": "pbt"}), sweep_id="x").mutable == ["training.lr"]


def test_promote_block_is_validated_and_stored():
    spec = _parse(promote={"metric": "accuracy", "min_improvement": 0.01, "canary_weight": 0.2,
                           "window_s": 120, "gates": {"max_error_rate": 0.02, "max_p99_latency_ratio": 1.3,
                                                      "min_requests": 50}})
    assert spec.promote.canary_weight == 0.2 and spec.promote.gates.min_requests == 50
    assert "promote.canary_weight" in _issues(promote={"canary_weight": 1.0})
    assert "promote.metric" in _issues(promote={"metric": "f1"})


def test_unknown_top_level_key_suggests():
    issues = _issues(swep={"num_trials": 2})
    assert "did you mean 'sweep'" in issues["swep"]


def test_parsing_sweeps_imports_no_torch_or_ray():
    code = ("import sys; from trainyard.specs import parse_sweep_spec; "
            f"parse_sweep_spec(open({str(REPO / 'examples' / 'sweep-cnn.yaml')!r}).read()); "
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_trial_executor_auto_inline_train():
    assert _parse().trial_executor() == "inline"  # 1 worker: the trial runs in its Tune actor
    two = {"resources": {"workers": 2}}
    assert _parse(**two).trial_executor() == "train"
    assert _parse({"trial_executor": "train"}).trial_executor() == "train"
    issues = _issues({"trial_executor": "inline"}, **two)
    assert "resources.workers must be 1, got 2" in issues["sweep.trial_executor"]
    assert "'auto', 'train' or 'inline'" in _issues({"trial_executor": "inlin"})["sweep.trial_executor"]


def test_asha_strategy_is_stop_or_promote_and_promote_checkpoints_every_evaluation():
    from trainyard.runner.sweep import plan_sweep

    assert "sweep.asha.strategy" in _issues({"scheduler": "asha", "asha": {"strategy": "fast"}})
    stop = plan_sweep(_parse({"scheduler": "asha"}, training={"eval_every_steps": 20}), sweep_id="x")
    assert stop.spec.sweep.asha.strategy == "stop"
    assert stop.base_job["checkpoint"]["every_steps"] is None
    # a trial paused at a rung resumes from that evaluation's checkpoint
    promote = plan_sweep(_parse({"scheduler": "asha", "asha": {"strategy": "promote"}},
                                training={"eval_every_steps": 20}, checkpoint={"every_steps": 100}),
                         sweep_id="x")
    assert promote.base_job["checkpoint"]["every_steps"] == 20

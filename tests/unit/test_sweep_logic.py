"""Pure sweep logic: space translation, trial configs, leaderboard, plot."""
from __future__ import annotations

import pytest

from trainyard.sweeps import leaderboard as lb
from trainyard.sweeps import space as sp


def test_to_tune_nests_keys_and_enumerates_grids():
    from ray import tune

    dims, issues = sp.parse_space({"training.lr": {"loguniform": [1e-4, 1e-2]},
                                   "hyperparameters.channels": {"choice": [8, 16]},
                                   "deepspeed.zero_stage": {"grid": [1, 2]},
                                   "hyperparameters.hidden": {"randint": [16, 33]},
                                   "training.batch_size": {"quniform": [16, 64, 16]}})
    assert not issues
    space = sp.to_tune(dims, algorithm="random")
    assert isinstance(space["training"]["lr"], tune.search.sample.Float)
    assert space["deepspeed"]["zero_stage"] == {"grid_search": [1, 2]}
    assert isinstance(space["hyperparameters"]["channels"], tune.search.sample.Categorical)
    grid = sp.to_tune(dims[1:3], algorithm="grid")
    assert grid["hyperparameters"]["channels"] == {"grid_search": [8, 16]}
    assert sp.grid_size(dims) == 2 and sp.full_grid_size([d for d in dims if d.discrete]) == 4


def test_apply_params_sets_nested_values_and_integers():
    job = {"training": {"lr": 1e-3, "batch_size": 32}, "hyperparameters": {}, "deepspeed": {"zero_stage": 1}}
    out = sp.apply_params(job, {"training": {"lr": 0.01, "batch_size": 48.0}, "deepspeed": {"zero_stage": 2}})
    assert out["training"] == {"lr": 0.01, "batch_size": 48} and isinstance(out["training"]["batch_size"], int)
    assert out["deepspeed"]["zero_stage"] == 2 and job["training"]["lr"] == 1e-3  # input untouched
    assert sp.flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
    assert sp.nest({"a.b": 1, "c": 2}) == {"a": {"b": 1}, "c": 2}


def _trials():
    return [
        {"trial": "a", "params": {"training.lr": 0.01}, "state": "DONE",
         "points": [{"time": 100, "iteration": 1, "step": 10, "accuracy": 0.5},
                    {"time": 103, "iteration": 2, "step": 20, "accuracy": 0.8}]},
        {"trial": "b", "params": {"training.lr": 0.001}, "state": "STOPPED",
         "points": [{"time": 101, "iteration": 1, "step": 10, "accuracy": 0.6}]},
        {"trial": "c", "params": {"training.lr": 0.1}, "state": "ERROR", "points": []},
    ]


def test_board_ranks_and_tracks_best_so_far():
    board = lb.build_board(_trials(), metric="accuracy", mode="max")
    assert [r["trial"] for r in board["rows"]] == ["a", "b", "c"]
    assert board["best"]["trial"] == "a" and board["best"]["metric"] == 0.8
    assert board["rows"][0]["iterations"] == 2 and board["rows"][1]["state"] == "STOPPED"
    # (time, total steps spent by all trials, best so far)
    assert board["best_so_far"] == [[0.0, 10, 0.5], [1.0, 20, 0.6], [3.0, 30, 0.8]]
    assert lb.steps_to_target(board, 0.6) == 20
    assert lb.steps_to_target(board, 0.9) is None


def test_board_min_mode():
    board = lb.build_board(_trials(), metric="accuracy", mode="min")
    assert board["best"]["trial"] == "b" and board["best"]["metric"] == 0.6  # the last value ranks
    assert board["rows"][1]["trial"] == "a" and board["rows"][1]["best"] == 0.5


def test_table_lists_trial_params_metric_state_iterations():
    text = lb.format_table(lb.build_board(_trials(), metric="accuracy", mode="max"))
    header = text.splitlines()[0].split()
    assert header == ["#", "trial", "training.lr", "accuracy", "best", "state", "iters"]
    assert "STOPPED" in text and "ERROR" in text
    assert lb.format_table({"rows": []}).endswith("(no trials yet)")


def test_plot_writes_a_png(tmp_path):
    from trainyard.sweeps.plot import plot_board

    path = plot_board(lb.build_board(_trials(), metric="accuracy", mode="max"), str(tmp_path / "p.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _plan(**sweep):
    from trainyard.runner.sweep import plan_sweep
    from trainyard.specs import parse_sweep_spec

    return plan_sweep(parse_sweep_spec({"name": "s", "workload": "cnn", "sweep": sweep}), sweep_id="x")


def test_tune_parts_pick_searcher_and_scheduler():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from trainyard.runner.sweep import _tune_parts

    space, search, sched = _tune_parts(_plan(scheduler="asha", asha={"grace_period": 2, "reduction_factor": 3}))
    assert isinstance(search, BasicVariantGenerator) and isinstance(sched, ASHAScheduler)
    assert [r[0] for r in sched._brackets[0]._rungs][-1] == 2 and sched._reduction_factor == 3
    assert sched._metric == "accuracy" and sched._mode == "max"
    assert set(space) == {"training", "hyperparameters"}

    _, search, sched = _tune_parts(_plan(algorithm="bayesian", metric="eval_loss", mode="min"))
    assert isinstance(search, OptunaSearch) and isinstance(sched, FIFOScheduler)
    assert search.metric == "eval_loss" and search.mode == "min"

    _, _, sched = _tune_parts(_plan(scheduler="pbt", pbt={"perturbation_interval": 3, "synch": True}))
    assert isinstance(sched, PopulationBasedTraining) and sched._synch
    assert list(sched._hyperparam_mutations) == ["training"]  # only training.* mutates by default


def test_tune_parts_for_promotion_asha_gate_the_searcher():
    from ray.tune.search.optuna import OptunaSearch

    from trainyard.runner.asha import GatedSearcher, GatedVariants, PromotingASHA
    from trainyard.runner.sweep import _tune_parts

    promote = {"grace_period": 1, "reduction_factor": 3, "max_t": 9, "strategy": "promote"}
    _, search, sched = _tune_parts(_plan(scheduler="asha", asha=promote, num_trials=12, max_concurrent_trials=3))
    assert isinstance(sched, PromotingASHA) and isinstance(search, GatedVariants)
    assert search._scheduler is sched and search.max_concurrent == 0  # the gate limits, not Tune
    assert (sched.max_concurrent, sched.num_trials, sched.rungs.rungs) == (3, 12, [1, 3])
    _, search, sched = _tune_parts(_plan(algorithm="bayesian", scheduler="asha", asha=promote))
    assert isinstance(search, GatedSearcher) and isinstance(search.searcher, OptunaSearch)
    assert search._scheduler is sched


def test_plan_counts_grid_trials():
    plan = _plan(algorithm="grid", search_space={"training.lr": {"grid": [1e-3, 1e-2]},
                                                 "hyperparameters.channels": {"choice": [8, 16]}}, num_trials=8)
    assert (plan.num_trials, plan.samples) == (8, 2)
    plan = _plan(search_space={"deepspeed.zero_stage": {"grid": [1, 2]}, "training.lr": {"uniform": [1e-3, 1e-2]}},
                 num_trials=6)
    assert (plan.num_trials, plan.samples) == (6, 3)
    assert plan.base_job["tracking"]["register_model"] is False and "sweep" not in plan.base_job


def test_table_is_plain_text_and_never_reads_names_as_markup():
    board = {"metric": "accuracy", "rows": [{"rank": 1, "trial": "[bold]t1[/]", "params": {"training.lr": 0.003},
                                            "metric": 0.91, "best": 0.93, "state": "DONE", "iterations": 6}]}
    text = lb.format_table(board)
    assert "[bold]t1[/]" in text and "\x1b[" not in text
    assert all(line == line.rstrip() for line in text.splitlines())

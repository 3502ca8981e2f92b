"""The sweep driver: a Ray Tune Tuner over trials, live leaderboard lines, the result and the `candidate`.

One Ray Job whose driver runs a Tuner over trials that each run the job's own worker loop
(the Trainer) through one of two executors (sweep.trial_executor):

- train: the trial is a gang of Ray Train workers (a TorchTrainer per trial). Any number of
  workers; each trial pays the worker group's start (controller, placement group, worker
  processes, torch/DeepSpeed imports, gloo rendezvous: tens of seconds on CPU).
- inline (auto's choice for 1 worker): the Tune trial actor holds the worker's resources and
  runs the loop itself as rank 0 of a world of 1 (same DeepSpeed engine and config), with
  reuse_actors, so later trials find torch, DeepSpeed and the process group warm and start
  in milliseconds. Checkpoints are Tune's own (no pointer); everything else is the same.

    python -m trainyard.runner sweep --sweep-id ID      (SweepSpec JSON in $TRAINYARD_SPEC)

How the pieces fit (Ray 2.60, Train v2), for the train executor:
- Tune over Train: a function trainable (`trial.make_trial`) builds and fits a TorchTrainer, wrapped in
  `tune.with_resources(fn, {"cpu": 0.01})`; workers ask for cpus_per_worker - 0.01 CPU, so a
  trial of N workers holds exactly N CPUs.
- Reports: Ray's TuneReportCallback forwards Train's metrics to Tune but only a checkpoint
  *path* as a metric, so Tune never holds a checkpoint and PBT cannot exploit. `reports.make_forwarder`
  (a Train UserCallback, same queue hand-off as TuneReportCallback) sends (metrics, checkpoint
  path) to the trial function, which calls `tune.report` with a tiny *pointer checkpoint*
  (pointer.json -> the Train checkpoint in storage). The DeepSpeed shards are never copied.
- Restore: when Tune restarts a trial (PBT exploit, a retry, a resumed sweep) with a
  checkpoint, the trial reads the pointer and hands the Train checkpoint to the worker loop
  (config "resume_from": Train v2 refuses `resume_from_checkpoint`), which loads the DeepSpeed
  checkpoint from it when the new Train run has none of its own. Each
  start of a trial uses a fresh Train run name, so Train's own auto-resume (same name)
  never shadows the checkpoint Tune chose.
- Resume: the experiment lives at <storage>/<project>/sweep-<id>. If `Tuner.can_restore`
  finds it, the driver calls `Tuner.restore(resume_errored=True)`: finished trials are not
  rerun, unfinished ones restart from their last pointer checkpoint.
- MLflow: the driver finds-or-creates one parent run (tag trainyard.sweep_id); each trial
  finds-or-creates one child run (tags mlflow.parentRunId, trainyard.trial_id) and hands
  its id to the workers, where only rank 0 logs. Restarts reuse both runs. A trial closes
  its run as it leaves: FINISHED, tagged trainyard.stopped_early true when ASHA/PBT stopped
  it (SystemExit out of tune.report), or FAILED; the driver closes any its actor could not.
- At the end: leaderboard (TRAINYARD_RESULT, MLflow artifact), learning-curve plot, and the
  best trial's model registered with alias `candidate` (version tagged with sweep, trial).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

from trainyard.runner.trial import make_trial, plain
from trainyard.sweeps.plan import SweepPlan, experiment_name, plan_sweep, promoting
from trainyard.tracking.sweeps import end_run, finish_sweep, parent_run

__all__ = ["run_sweep", "main"]


class _Progress:
    """A Tune callback in the driver: curves as they come, TRAINYARD_PROGRESS lines."""

    def __init__(self, plan: SweepPlan, emit: Callable[[str], None], every_s: float = 5.0):
        from ray.tune import Callback

        self.plan, self.emit, self.every_s = plan, emit, every_s
        self.points: dict[str, list] = {}
        self.params: dict[str, dict] = {}
        self.state: dict[str, str] = {}
        self.restores = 0
        self.clones = 0
        self.finished: set[str] = set()  # trials whose loop reported its end (trainyard_done)
        self._last = 0.0
        parent = self

        class _Cb(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                parent._seen(trial, "RUNNING")

            def on_trial_result(self, iteration, trials, trial, result, **info):
                parent._seen(trial, "RUNNING")
                parent.restores += int(result.get("trainyard_restored") or 0)
                if result.get("trainyard_done"):
                    parent.finished.add(trial.trial_id)
                parent.clones += int(result.get("trainyard_cloned") or 0)
                parent.points.setdefault(trial.trial_id, []).append(_point(result, parent.plan.metric))
                parent.maybe_emit()

            def on_trial_complete(self, iteration, trials, trial, **info):
                # a trial ASHA/PBT/the time budget cut short also "completes" for Tune
                parent._seen(trial, "DONE" if trial.trial_id in parent.finished else "STOPPED")
                parent.maybe_emit(force=True)

            def on_trial_error(self, iteration, trials, trial, **info):
                parent._seen(trial, "ERROR")
                parent.maybe_emit(force=True)

        self.callback = _Cb()

    def _seen(self, trial, state: str) -> None:
        from trainyard.sweeps.space import flatten

        self.params[trial.trial_id] = {k: plain(v) for k, v in flatten(trial.config).items()}
        self.state[trial.trial_id] = state

    def board(self) -> dict:
        from trainyard.sweeps.leaderboard import build_board

        trials = [{"trial": t, "params": self.params.get(t, {}), "state": self.state.get(t, "RUNNING"),
                   "points": pts} for t, pts in self.points.items()]
        return build_board(trials, metric=self.plan.metric, mode=self.plan.mode)

    def maybe_emit(self, force: bool = False) -> None:
        from trainyard.protocol import PROGRESS, format_line

        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        board = self.board()
        done = sum(1 for s in self.state.values() if s in ("DONE", "STOPPED", "ERROR"))
        rows = [{k: r.get(k) for k in ("trial", "params", "metric", "best", "state", "iterations")}
                for r in board["rows"][:20]]
        self.emit(format_line(PROGRESS, {
            "kind": "sweep", "trials_total": self.plan.num_trials, "trials_started": len(self.state),
            "trials_done": done, "metric": self.plan.metric, "mode": self.plan.mode,
            "best": rows[0] if rows and rows[0].get("metric") is not None else None,
            "leaderboard": rows,
            # curves too, so `sweeps show --plot` works while the sweep runs (one line / 5 s)
            "curves": {t: [[round(c[0], 1), c[1], c[2], None if c[3] is None else round(c[3], 5)]
                           for c in curve] for t, curve in board["curves"].items()},
            "best_so_far": board["best_so_far"]}))


def _point(result: dict, metric: str) -> dict:
    point = {"time": result.get("timestamp_precise") or time.time(),
             "iteration": result.get("training_iteration"), "step": result.get("step"),
             metric: result.get(metric)}
    return point


def _storage_target(spec, storage: str | None):
    from trainyard.runner.storage import resolve_storage
    from trainyard.tracking import run_project

    return resolve_storage(storage or spec.checkpoint.storage, project=run_project(spec),
                           endpoint_url=spec.checkpoint.endpoint_url)


def _tune_parts(plan: SweepPlan):
    """(param_space, search_alg, scheduler) for Ray Tune."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    from trainyard.sweeps import space as sp

    spec = plan.spec.sweep
    param_space = sp.to_tune(plan.dims, algorithm=spec.algorithm)
    search_alg = None
    if spec.algorithm == "bayesian":
        from ray.tune.search.optuna import OptunaSearch

        import optuna

        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=max(2, min(10, plan.num_trials // 2)))
        search_alg = OptunaSearch(metric=plan.metric, mode=plan.mode, sampler=sampler)
    if spec.scheduler == "asha" and spec.asha.strategy == "promote":
        from trainyard.runner.asha import GatedSearcher, GatedVariants, PromotingASHA

        scheduler = PromotingASHA(metric=plan.metric, mode=plan.mode, max_t=spec.asha.max_t or 100,
                                  grace_period=spec.asha.grace_period, reduction_factor=spec.asha.reduction_factor,
                                  max_concurrent=spec.max_concurrent_trials or 1_000_000,
                                  num_trials=plan.num_trials)
        if search_alg is not None:
            search_alg = GatedSearcher(search_alg, scheduler)
        else:
            search_alg = GatedVariants(scheduler, random_state=spec.seed)
        return param_space, search_alg, scheduler
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=plan.metric, mode=plan.mode,
                                  max_t=spec.asha.max_t or 100, grace_period=spec.asha.grace_period,
                                  reduction_factor=spec.asha.reduction_factor)
    elif spec.scheduler == "pbt":
        by_key = {d.key: d for d in plan.dims}
        mutations = sp.to_tune([by_key[k] for k in plan.mutable], algorithm="random")
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration", metric=plan.metric, mode=plan.mode,
            perturbation_interval=spec.pbt.perturbation_interval, hyperparam_mutations=mutations,
            quantile_fraction=spec.pbt.quantile_fraction, resample_probability=spec.pbt.resample_probability,
            synch=spec.pbt.synch)
    else:
        scheduler = FIFOScheduler()
    if search_alg is None:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # seeded, so that the same spec samples the same configs (benchmarks compare like with like)
        search_alg = BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent_trials)
    return param_space, search_alg, scheduler


def _seed_everything(seed: int | None) -> None:
    if seed is None:
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)


def run_sweep(spec, *, sweep_id: str, storage: str | None = None, tracking_uri: str | None = None,
              emit: Callable[[str], None] | None = None, train_loop: Callable | None = None,
              register: bool = True) -> dict:
    """Run (or resume) sweep `sweep_id` on the connected Ray cluster; return the
    TRAINYARD_RESULT payload. `train_loop` replaces the job's worker loop (benchmarks,
    tests)."""
    import ray
    from ray import tune

    from trainyard.tracking import tracking_uri as _uri

    from trainyard.protocol import emit_line

    emit = emit or emit_line
    plan = plan_sweep(spec, sweep_id=sweep_id)
    # Tune saves its experiment state at most this often; a killed driver loses at most this
    # much (a trial finished in that window reruns). 'auto' could wait minutes.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not ray.is_initialized():
        ray.init(log_to_driver=True, **_init_kwargs())
    uri = _uri(tracking_uri)
    tracking: dict = {}
    if uri:
        tracking = parent_run(spec, sweep_id, uri, plan)
    target = _storage_target(spec, storage)
    name = experiment_name(sweep_id)
    exp_path = f"{target.path.rstrip('/')}/{name}"
    executor = spec.trial_executor()
    keep_all = spec.sweep.scheduler == "pbt"
    trial_fn = make_trial(base_job=plan.base_job, sweep_id=sweep_id, target=target, tracking=tracking,
                           train_loop=train_loop, keep_all_checkpoints=keep_all, executor=executor)
    if executor == "inline":
        # the trial actor is the worker: it holds the worker's resources
        trainable = tune.with_resources(trial_fn, tune.PlacementGroupFactory([spec.resources.per_worker()]))
        # the DeepSpeed checkpoints are Tune's own here; PBT may clone any trial's latest
        checkpoint_config = tune.CheckpointConfig(num_to_keep=None if keep_all else max(2, spec.checkpoint.keep))
    else:
        trainable = tune.with_resources(trial_fn, {"cpu": 0.01})
        checkpoint_config = None  # pointers only (bytes); Train keeps the shards
    progress = _Progress(plan, emit)
    callbacks = [progress.callback]
    run_config = tune.RunConfig(
        name=name, storage_path=target.path, storage_filesystem=target.filesystem,
        failure_config=tune.FailureConfig(max_failures=spec.sweep.max_failures),
        checkpoint_config=checkpoint_config, callbacks=callbacks, verbose=0,
    )
    restored = False
    scheduler = None
    if tune.Tuner.can_restore(exp_path, storage_filesystem=target.filesystem):
        emit_note = f"[trainyard] sweep {sweep_id}: resuming from {exp_path}"
        print(emit_note, flush=True)
        tuner = tune.Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=target.filesystem)
        # the restored run config lost our callbacks (they are not pickled with it)
        tuner._local_tuner.get_run_config().callbacks = callbacks  # noqa: SLF001
        # the scheduler the restored Tuner runs (promotion ASHA: its rungs come back with the
        # searcher's saved state), for the result's stats
        scheduler = getattr(getattr(tuner._local_tuner, "_tune_config", None), "scheduler", None)  # noqa: SLF001
        restored = True
    else:
        _seed_everything(spec.sweep.seed)
        param_space, search_alg, scheduler = _tune_parts(plan)
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg, scheduler=scheduler, num_samples=plan.samples,
                # promotion ASHA holds the limit itself (Tune's counts paused trials as running)
                max_concurrent_trials=None if promoting(spec) else spec.sweep.max_concurrent_trials,
                time_budget_s=spec.sweep.time_budget_s,
                # inline: a reused actor keeps torch, DeepSpeed and its process group warm, so
                # a trial starts in milliseconds; a trial that ends lets the next one in
                reuse_actors=executor == "inline",
                trial_dirname_creator=lambda t: t.trial_id),
            run_config=run_config,
        )
    started = time.time()
    try:
        grid = tuner.fit()
    except BaseException as exc:
        if tracking:
            end_run(tracking, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    unfinished = _unfinished_trials(grid)
    if unfinished:
        # Tune ends fit() quietly on SIGINT (after saving its state): not a finished sweep
        if tracking:
            end_run(tracking, "KILLED")
        raise KeyboardInterrupt(f"sweep {sweep_id} was interrupted with {len(unfinished)} trial(s) unfinished; "
                                "submit it again with the same id to resume")
    board = _final_board(grid, plan, progress)
    trials_usage = _trials_usage(grid)
    result: dict[str, Any] = {
        "kind": "sweep", "sweep_id": sweep_id, "metric": plan.metric, "mode": plan.mode,
        "metrics": {f"best_{plan.metric}": board["best"]["metric"]} if board["best"] else {},
        "num_trials": len(board["rows"]), "resumed": restored, "experiment_path": exp_path,
        "best": board["best"], "leaderboard": board, "wall_s": round(time.time() - started, 2),
        # trial starts from a checkpoint, and those from another trial's (PBT exploits), seen by
        # this driver
        "restores": progress.restores, "pbt_clones": progress.clones, "trial_executor": executor,
        "mlflow_run_id": tracking.get("parent_run_id"), "mlflow_experiment_id": tracking.get("experiment_id"),
        # per trial: when it ran and what its workers measured; the controller sums their cost records
        "trials_usage": trials_usage,
    }
    if scheduler is not None and callable(getattr(scheduler, "stats", None)):
        result["asha"] = scheduler.stats()  # promotion ASHA: pauses, resumes, rung sizes
    if tracking:
        result.update(finish_sweep(spec, plan, tracking, board, register=register))
    return result


def _init_kwargs() -> dict:
    """Give this driver's actors RAY_ADDRESS. Train v2's PlacementGroupCleaner (a detached
    actor) finds the cluster through the State API, which fails where several Ray clusters
    run on one machine ("Found multiple active Ray instances"); then every trial that Tune
    stops (ASHA, PBT) leaks its workers' placement group and later trials wait forever.
    Inside a submitted Ray Job, Ray merges this with the submission's runtime_env per
    env var (and refuses a conflict), so add RAY_ADDRESS only where the job lacks it."""
    address = os.environ.get("RAY_ADDRESS")
    if not address or address.startswith(("http", "ray://")):
        return {}
    job_config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job_config:
        try:
            job_env = (json.loads(job_config).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            return {}  # an unknown format: leave the submission's runtime_env alone
        if "RAY_ADDRESS" in job_env:
            return {}
    return {"runtime_env": {"env_vars": {"RAY_ADDRESS": address}}}


def _unfinished_trials(grid) -> list[str]:
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return [t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")]


def _trial_state(result, plan: SweepPlan, max_iter: int) -> str:
    if result.error is not None:
        return "ERROR"
    metrics = result.metrics or {}
    if metrics.get("trainyard_done"):
        return "DONE"
    return "STOPPED"


def _trials_usage(grid) -> list[dict]:
    """Each trial's span (Tune's own clock: its last result's time, less its running time) and,
    when it ran to the end, rank 0's step figures (trainer.py puts them in the final report)."""
    out = []
    for res in list(grid)[:10_000]:
        metrics = res.metrics or {}
        end, total = metrics.get("timestamp"), metrics.get("time_total_s")
        if not isinstance(end, (int, float)) or not isinstance(total, (int, float)) or total < 0:
            continue  # a trial that never reported held nothing Tune measured
        item = {"trial": str(metrics.get("trial_id") or os.path.basename(str(res.path))),
                "start": float(end) - float(total), "end": float(end)}
        for key in ("steps", "step_seconds", "flops_per_step"):
            value = metrics.get(f"trainyard_cost_{key}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                item[key] = float(value)
        out.append(item)
    return out


def _final_board(grid, plan: SweepPlan, progress: _Progress) -> dict:
    """Leaderboard from the ResultGrid (it holds every result, across driver restarts)."""
    from trainyard.sweeps.leaderboard import build_board
    from trainyard.sweeps.space import flatten

    trials = []
    max_iter = 0
    results = list(grid)
    for res in results:
        max_iter = max(max_iter, int((res.metrics or {}).get("training_iteration") or 0))
    for res in results:
        metrics = res.metrics or {}
        trial_id = metrics.get("trial_id") or os.path.basename(str(res.path))
        points = []
        df = None
        try:
            df = res.metrics_dataframe
        except Exception:
            df = None
        if df is not None and len(df):
            for _, row in df.iterrows():
                points.append({"time": row.get("timestamp"), "iteration": row.get("training_iteration"),
                               "step": row.get("step"), plan.metric: row.get(plan.metric)})
            # timestamps are whole seconds; the live callback has precise ones when it saw them
            live = progress.points.get(trial_id)
            if live and len(live) >= len(points):
                points = live
        else:
            points = progress.points.get(trial_id, [])
        trials.append({"trial": trial_id, "params": {k: plain(v) for k, v in flatten(res.config or {}).items()},
                       "state": _trial_state(res, plan, max_iter), "points": points,
                       "error": str(res.error)[:500] if res.error else None})
    return build_board(trials, metric=plan.metric, mode=plan.mode)


def main(argv: list[str] | None = None) -> int:
    """`python -m trainyard.runner sweep --sweep-id ID [--spec-file F] [--storage URI]`."""
    from trainyard.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SpecError, TrainyardError
    from trainyard.protocol import ERROR, RESULT, emit_line, format_line
    from trainyard.runner import checked_spec
    from trainyard.specs import parse_sweep_spec

    parser = argparse.ArgumentParser(prog="python -m trainyard.runner sweep")
    parser.add_argument("--sweep-id", "--job-id", dest="sweep_id", required=True,
                        help="the sweep's id: names its Tune experiment, checkpoints and MLflow run")
    parser.add_argument("--spec-file", help="read the SweepSpec from this file instead of $TRAINYARD_SPEC")
    parser.add_argument("--storage", help="checkpoint storage URI (default: spec, then $TRAINYARD_STORAGE)")
    args = parser.parse_args(argv)

    def error(kind: str, message: str) -> None:
        emit_line(format_line(ERROR, {"error": kind, "message": message}))
        print(f"trainyard sweep: {message}", file=sys.stderr, flush=True)

    try:
        if args.spec_file:
            from pathlib import Path

            spec = checked_spec(parse_sweep_spec, Path(args.spec_file))
        else:
            text = os.environ.get("TRAINYARD_SPEC")
            if not text:
                raise SpecError("no sweep spec given", field="TRAINYARD_SPEC",
                                fix="set $TRAINYARD_SPEC to the SweepSpec JSON, or pass --spec-file PATH")
            spec = checked_spec(parse_sweep_spec, text, source="TRAINYARD_SPEC")
    except TrainyardError as exc:
        error(exc.code, str(exc))
        return exc.exit_code or EXIT_USAGE
    try:
        result = run_sweep(spec, sweep_id=args.sweep_id, storage=args.storage)
    except TrainyardError as exc:
        error(exc.code, str(exc))
        return exc.exit_code or EXIT_FAILED
    except Exception as exc:
        error("sweep_failed", f"{type(exc).__name__}: {exc}"[:4000])
        return EXIT_FAILED
    emit_line(format_line(RESULT, result))
    return EXIT_OK

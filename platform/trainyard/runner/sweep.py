"""A sweep on a Ray cluster: one Ray Job whose driver runs a Ray Tune Tuner over trials
that each run the job's own worker loop (`train_loop_per_worker`, DeepSpeed) in one of two
ways (sweep.trial_executor):

- train: the trial is a gang of Ray Train workers (a TorchTrainer per trial). Any number of
  workers; each trial pays the worker group's start (controller, placement group, worker
  processes, torch/DeepSpeed imports, gloo rendezvous: tens of seconds on CPU).
- inline (auto's choice for 1 worker): the Tune trial actor holds the worker's resources and
  runs the loop itself as rank 0 of a world of 1 (same DeepSpeed engine and config), with
  reuse_actors, so later trials find torch, DeepSpeed and the process group warm and start
  in milliseconds. Checkpoints are Tune's own (no pointer); everything else is the same.

    python -m trainyard.runner sweep --sweep-id ID      (SweepSpec JSON in $TRAINYARD_SPEC)

How the pieces fit (Ray 2.60, Train v2), for the train executor:
- Tune over Train: a function trainable (`_trial`) builds and fits a TorchTrainer, wrapped in
  `tune.with_resources(fn, {"cpu": 0.01})`; workers ask for cpus_per_worker - 0.01 CPU, so a
  trial of N workers holds exactly N CPUs.
- Reports: Ray's TuneReportCallback forwards Train's metrics to Tune but only a checkpoint
  *path* as a metric, so Tune never holds a checkpoint and PBT cannot exploit. `_ForwardReports`
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
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["run_sweep", "main", "SweepPlan", "plan_sweep", "experiment_name"]

log = logging.getLogger("trainyard.sweep")

SWEEP_ID_TAG = "trainyard.sweep_id"
TRIAL_ID_TAG = "trainyard.trial_id"
KIND_TAG = "trainyard.kind"
STOPPED_EARLY_TAG = "trainyard.stopped_early"  # "true": ASHA/PBT/the time budget stopped the trial
CLOSED_BY_TAG = "trainyard.closed_by"  # "driver": the trial could not close its run itself
POINTER_FILE = "trainyard_pointer.json"
_SENTINEL = "__trainyard_done__"


def experiment_name(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


# ============================================================================ plan (pure)


def promoting(spec) -> bool:
    """Promotion-based ASHA (sweep.asha.strategy: promote): trials pause at rungs."""
    return spec.sweep.scheduler == "asha" and spec.sweep.asha.strategy == "promote"


@dataclass
class SweepPlan:
    """Everything the driver derives from the spec before touching Ray."""

    spec: Any  # SweepSpec
    sweep_id: str
    metric: str
    mode: str
    dims: list
    num_trials: int
    samples: int  # Tune's num_samples: num_trials / grid points
    mutable: list[str] = field(default_factory=list)

    @property
    def base_job(self) -> dict:
        job = self.spec.job_spec().model_dump(mode="json")
        job["tracking"]["register_model"] = False  # trials never register; the driver does
        if promoting(self.spec):
            # a trial paused at a rung resumes from its last report: every evaluation checkpoints
            job["checkpoint"]["every_steps"] = job["training"].get("eval_every_steps")
        return job


def plan_sweep(spec, *, sweep_id: str, workload=None) -> SweepPlan:
    """Validate (raising SpecError) and resolve the family defaults."""
    from trainyard.errors import SpecError
    from trainyard.sweeps import space as sp
    from trainyard.sweeps import validate as sv
    from trainyard.workload import resolve_workload

    workload = workload or resolve_workload(spec.workload)
    issues = sv.sweep_issues(spec, workload)
    if issues:
        raise SpecError(issues, source="sweep")
    metric, mode = sv.resolved_metric(spec, workload)
    dims, _ = sp.parse_space(sv.resolved_space(spec, workload))
    n = sv.num_trials(spec, dims)
    points = sp.full_grid_size(dims) if spec.sweep.algorithm == "grid" else sp.grid_size(dims)
    mutable = sv.pbt_mutable_keys(spec, dims) if spec.sweep.scheduler == "pbt" else []
    return SweepPlan(spec=spec, sweep_id=sweep_id, metric=metric, mode=mode, dims=dims,
                     num_trials=n, samples=max(1, n // max(1, points)), mutable=mutable)


# ============================================================================ trial side


def _make_forwarder(queue):
    """A Train v2 UserCallback (built lazily: ray.train.v2 is heavy) that hands each report's
    rank-0 metrics and checkpoint path to the trial function through `queue`."""
    from ray.train.v2.api.callback import UserCallback

    class _ForwardReports(UserCallback):
        def __init__(self, q):
            self.q = q

        def after_report(self, run_context, metrics, checkpoint):
            item = {"metrics": dict(metrics[0]) if metrics else {},
                    "checkpoint": getattr(checkpoint, "path", None) if checkpoint else None}
            self.q.put(item)  # blocks (maxsize 1): Train waits until Tune took it, like TuneReportCallback

    return _ForwardReports(queue)


def _child_run(*, tracking_uri, experiment_id, parent_run_id, sweep_id, trial_id, trial_name, params):
    """Find or create the trial's nested MLflow run (a restarted trial reuses it)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.search_runs([experiment_id],
                               filter_string=f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}' and "
                                             f"tags.`{TRIAL_ID_TAG}` = '{trial_id}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        for tag in (STOPPED_EARLY_TAG, CLOSED_BY_TAG):  # marks of how an earlier start ended
            if tag in found[0].data.tags:
                try:
                    client.delete_tag(run_id, tag)
                except Exception as exc:
                    log.debug("could not clear tag %s of run %s: %s", tag, run_id, exc)
    else:
        run = client.create_run(experiment_id, run_name=trial_name, tags={
            "mlflow.parentRunId": parent_run_id, SWEEP_ID_TAG: sweep_id, TRIAL_ID_TAG: trial_id,
            KIND_TAG: "trial"})
        run_id = run.info.run_id
    client.set_tag(run_id, "trainyard.trial_config", json.dumps(params, sort_keys=True, default=str)[:5000])
    return run_id


def _trial_outcome(exc: BaseException | None) -> str:
    """How one start of a trial ended: "finished" (its loop ran to the end), "stopped" (Tune
    stopped it: ASHA, PBT, the time budget; tune.report leaves with SystemExit(0)), or "failed"."""
    if exc is None:
        return "finished"
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "stopped"
    return "failed"


# outcome -> (MLflow run status, trainyard.stopped_early tag). A stopped trial is a normal
# sweep outcome with valid metrics, not an interruption: FINISHED, tagged (KILLED is what an
# interrupted sweep's runs get).
CHILD_END = {"finished": ("FINISHED", "false"), "stopped": ("FINISHED", "true"), "failed": ("FAILED", None)}


def _end_child(client, run_id: str, outcome: str, *, model_uri: str | None = None,
               closed_by: str | None = None) -> None:
    """Close a trial's child run for `outcome` (see CHILD_END)."""
    from mlflow.entities import RunTag

    status, stopped = CHILD_END[outcome]
    tags = {"trainyard.model_uri": model_uri, STOPPED_EARLY_TAG: stopped, CLOSED_BY_TAG: closed_by}
    tags = [RunTag(k, v) for k, v in tags.items() if v]
    if tags:
        client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def _pointer_checkpoint(train_path: str, metrics: dict, trial_id: str):
    from ray import tune

    tmp = tempfile.mkdtemp(prefix="ty-ptr-")
    with open(os.path.join(tmp, POINTER_FILE), "w") as fh:
        json.dump({"path": train_path, "step": metrics.get("step"), "epoch": metrics.get("epoch"),
                   "trial_id": trial_id}, fh)
    return tmp, tune.Checkpoint.from_directory(tmp)


def _read_pointer(checkpoint) -> dict | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        try:
            with open(os.path.join(path, POINTER_FILE)) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None


def _reportable(metrics: dict) -> dict:
    """Tune keeps numbers; Train's strings (model uris) go to the child run, not to Tune."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _first_flags(restored: bool, source_trial: str | None, trial_id: str) -> dict:
    """What the first report of a trial's start says about how it began, for the driver to
    count restores and PBT clones: restored from a checkpoint, and cloned when that
    checkpoint is another trial's (a trial restored from its own is a restore, not a clone)."""
    return {"trainyard_restored": 1.0 if restored else 0.0,
            "trainyard_cloned": 1.0 if restored and source_trial not in (None, trial_id) else 0.0}


class _InlineSession:
    """The worker loop's session when a 1-worker trial runs inline in its Tune trial actor
    (trainyard.runner.train.loop_session): rank 0 of 1; the checkpoint it starts from is
    Tune's (a restore, a PBT clone, a resumed sweep); its checkpoints go straight to Tune,
    which persists them under the trial's folder of the experiment (file:// or s3://)."""

    rank, world_size, local_world_size = 0, 1, 1

    def __init__(self, *, trial_id: str, on_gpu: bool):
        from ray import tune

        self.on_gpu = on_gpu
        self.checkpoint = tune.get_checkpoint()
        self.last: dict = {}
        source = None
        if self.checkpoint is not None:
            # <experiment>/<trial dir = trial id>/checkpoint_NNNNNN
            source = os.path.basename(os.path.dirname(str(self.checkpoint.path).rstrip("/")))
            print(f"[trainyard] trial {trial_id}: restoring from {self.checkpoint.path}", flush=True)
        self.first_flags = _first_flags(self.checkpoint is not None, source, trial_id)

    def device(self):
        import torch

        return torch.device("cuda", 0) if self.on_gpu else torch.device("cpu")

    def get_checkpoint(self):
        return self.checkpoint

    def report(self, metrics: dict, checkpoint=None) -> None:
        from ray import tune

        self.last = dict(metrics)
        report = {**_reportable(metrics), **self.first_flags}
        self.first_flags = {}
        if checkpoint is not None:
            checkpoint = tune.Checkpoint(checkpoint.path, filesystem=checkpoint.filesystem)
        # Tune copies the checkpoint to storage before this returns (the loop then deletes its
        # local folder); a trial that ASHA/PBT stops leaves here with SystemExit
        tune.report(report, checkpoint=checkpoint)


def _inline_process_group(on_gpu: bool) -> None:
    """A world of one for DeepSpeed, made once per trial actor (reused by its later trials).
    An in-process store: no port to pick, nothing to rendezvous with."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_gpu else "gloo", store=dist.HashStore(), rank=0, world_size=1)


def _make_trial(*, base_job: dict, sweep_id: str, target, tracking: dict,
                train_loop: Callable | None, keep_all_checkpoints: bool, executor: str = "train"):
    """The Tune function trainable. It closes over plain data and the storage target, whose
    filesystem (s3fs with its endpoint and keys) pickles along: trial actors need no S3 env.

    executor "train": the trial builds and fits a TorchTrainer (a gang of N workers).
    executor "inline": the trial runs the same worker loop itself, as rank 0 of 1."""

    def _trial(config: dict) -> None:
        from ray import tune

        # A reused actor's next trial waits for this one's thread to end (Tune: 2 s, then the
        # reuse fails and the next trial errors out). A stopped or paused trial still closes
        # its MLflow run and DeepSpeed state on the way out, which takes longer on a busy node.
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "120")

        from trainyard.specs import JobSpec
        from trainyard.sweeps.space import apply_params, flatten

        ctx = tune.get_context()
        trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
        params = {k: _plain(v) for k, v in flatten(config).items()}
        spec = JobSpec.model_validate(apply_params(base_job, params))
        if train_loop is None:
            from trainyard.runner.train import train_loop_per_worker as loop
        else:
            loop = train_loop
        from trainyard.runner.train import worker_env

        mlflow_cfg = None
        if tracking.get("parent_run_id"):
            run_id = _child_run(tracking_uri=tracking.get("tracking_uri"),
                                experiment_id=tracking["experiment_id"],
                                parent_run_id=tracking["parent_run_id"], sweep_id=sweep_id,
                                trial_id=trial_id, trial_name=trial_name, params=params)
            mlflow_cfg = {"tracking_uri": tracking.get("tracking_uri"), "run_id": run_id,
                          "experiment_id": tracking["experiment_id"]}
        loop_config = {"spec": spec.model_dump(mode="json"), "job_id": f"{sweep_id}/{trial_id}",
                       "mlflow": mlflow_cfg, "log_model": True, "register_model": False,
                       "progress_queue": None}
        try:
            if executor == "inline":
                last = _run_inline(loop, loop_config, spec=spec, trial_id=trial_id, env=worker_env(spec))
            else:
                last = _run_gang(loop, loop_config, spec=spec, sweep_id=sweep_id, trial_id=trial_id,
                                 target=target, keep_all_checkpoints=keep_all_checkpoints)
        except BaseException as exc:
            # ASHA/PBT stop a trial by raising SystemExit out of tune.report: close the child
            # run here (the loop has flushed its metrics), then let the exit reach Tune
            if mlflow_cfg:
                try:
                    from mlflow.tracking import MlflowClient

                    _end_child(MlflowClient(tracking_uri=mlflow_cfg["tracking_uri"]), mlflow_cfg["run_id"],
                               _trial_outcome(exc))
                except Exception as err:
                    log.warning("could not close trial %s's MLflow run: %s", trial_id, err)
            raise
        if mlflow_cfg:
            from mlflow.tracking import MlflowClient

            _end_child(MlflowClient(tracking_uri=mlflow_cfg["tracking_uri"]), mlflow_cfg["run_id"],
                       "finished", model_uri=last.get("trainyard_model_uri"))

    return _trial


def _run_inline(loop: Callable, loop_config: dict, *, spec, trial_id: str, env: dict) -> dict:
    """Run the worker loop in this (Tune trial) process; return its last report."""
    on_gpu = bool(spec.resources.gpus_per_worker)
    # what a Train worker's runtime_env and rendezvous would give it (before torch is imported
    # here: DS_ACCELERATOR picks DeepSpeed's backend at its import). Only the loop reads them
    # (DeepSpeed reads LOCAL_RANK when it builds an engine), so they are put back afterwards:
    # the reused actor's next trial sets its own.
    with _environ({**env, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}):
        _inline_process_group(on_gpu)
        session = _InlineSession(trial_id=trial_id, on_gpu=on_gpu)
        loop({**loop_config, "resume_from": None, "session": session})
    return session.last


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables for the block; restore what was there (or unset) after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_gang(loop: Callable, loop_config: dict, *, spec, sweep_id: str, trial_id: str, target,
              keep_all_checkpoints: bool) -> dict:
    """Build and fit a TorchTrainer of spec.resources.workers workers; forward its reports to
    Tune; return the last one."""
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    from trainyard.runner.train import controller_env_defaults, worker_env

    controller_env_defaults()
    pointer = _read_pointer(tune.get_checkpoint())
    resume = None
    if pointer and pointer.get("path"):
        resume = ray.train.Checkpoint(pointer["path"], filesystem=target.filesystem)
        print(f"[trainyard] trial {trial_id}: restoring from {pointer['path']} "
              f"(step {pointer.get('step')}, trial {pointer.get('trial_id')})", flush=True)
    first_flags = _first_flags(resume is not None, (pointer or {}).get("trial_id"), trial_id)

    on_gpu = bool(spec.resources.gpus_per_worker)
    per_worker = spec.resources.per_worker()
    # the trial actor holds 0.01 CPU; take it off the workers so N workers fit N CPUs
    per_worker["CPU"] = max(0.01, per_worker.get("CPU", 1.0) - 0.01)
    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        loop,
        train_loop_config={**loop_config, "resume_from": resume},
        scaling_config=ScalingConfig(num_workers=spec.resources.workers, use_gpu=on_gpu,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(
            # fresh name per start: Train's same-name auto-resume must not shadow resume_from
            name=f"{experiment_name(sweep_id)}-trials/{trial_id}-{uuid.uuid4().hex[:6]}",
            storage_path=target.path, storage_filesystem=target.filesystem,
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            # PBT may clone any trial's latest checkpoint while its owner trains on
            checkpoint_config=CheckpointConfig(num_to_keep=None if keep_all_checkpoints
                                               else max(2, spec.checkpoint.keep)),
            callbacks=[_make_forwarder(queue)],
            worker_runtime_env={"env_vars": worker_env(spec)},
        ),
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the trial thread, which raises it
            outcome["error"] = exc
        finally:
            queue.put(_SENTINEL)

    thread = threading.Thread(target=fit, name="trainyard-trial-fit", daemon=True)
    thread.start()

    def send(report: dict, metrics: dict, checkpoint_path: str | None) -> None:
        if checkpoint_path:
            tmp, ckpt = _pointer_checkpoint(checkpoint_path, metrics, trial_id)
            try:
                tune.report(report, checkpoint=ckpt)
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        else:
            tune.report(report)

    last = _forward_reports(queue, send, first_flags=first_flags)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return last


def _forward_reports(queue, send: Callable[[dict, dict, str | None], None], *, first_flags: dict,
                     poll_s: float = 0.05) -> dict:
    """The trial side of the gang's hand-off: each item the Train run queues goes, in order,
    to send(report for Tune, metrics, checkpoint path), the first with first_flags, until
    _SENTINEL; returns the last metrics.

    Polls (take_available, the sole consumer) instead of `queue.get(timeout=...)`, whose
    timeout can drop the item it raced: a lost report, or a lost _SENTINEL that leaves the
    trial waiting forever. The poll is short: Train's controller waits in put() (maxsize 1)
    until the item is taken."""
    from trainyard.runner.train import take_available

    last: dict = {}
    while True:
        items = take_available(queue)
        if not items:
            time.sleep(poll_s)
            continue
        for item in items:
            if isinstance(item, str) and item == _SENTINEL:
                return last
            metrics = dict(item["metrics"])
            last = metrics
            report = {**_reportable(metrics), **first_flags}
            first_flags = {}
            send(report, metrics, item.get("checkpoint"))


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value


# ============================================================================ driver side


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

        self.params[trial.trial_id] = {k: _plain(v) for k, v in flatten(trial.config).items()}
        self.state[trial.trial_id] = state

    def board(self) -> dict:
        from trainyard.sweeps.leaderboard import build_board

        trials = [{"trial": t, "params": self.params.get(t, {}), "state": self.state.get(t, "RUNNING"),
                   "points": pts} for t, pts in self.points.items()]
        return build_board(trials, metric=self.plan.metric, mode=self.plan.mode)

    def maybe_emit(self, force: bool = False) -> None:
        from trainyard.runner.protocol import PROGRESS, format_line

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

    return resolve_storage(storage or spec.checkpoint.storage, project=spec.project,
                           endpoint_url=spec.checkpoint.endpoint_url)


def _parent_run(spec, sweep_id: str, tracking_uri: str | None, plan: SweepPlan) -> dict:
    from trainyard.tracking.runs import start_job_run

    ref = start_job_run(job_id=sweep_id, run_name=spec.name, experiment=spec.tracking.experiment,
                        uri=tracking_uri, tags={SWEEP_ID_TAG: sweep_id, KIND_TAG: "sweep",
                                                "trainyard.project": spec.project,
                                                "trainyard.workload": spec.workload})
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=ref.tracking_uri)
    existing = client.get_run(ref.run_id).data.params
    params = {"sweep.algorithm": spec.sweep.algorithm, "sweep.scheduler": spec.sweep.scheduler,
              "sweep.metric": plan.metric, "sweep.mode": plan.mode, "sweep.num_trials": plan.num_trials,
              "sweep.max_concurrent_trials": spec.sweep.max_concurrent_trials,
              "sweep.search_space": json.dumps({d.key: d.describe() for d in plan.dims})[:6000],
              "workload": spec.workload, "resources.workers": spec.resources.workers,
              "deepspeed.zero_stage": spec.deepspeed.zero_stage}
    new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
    if new:
        client.log_batch(ref.run_id, params=new)
    return {"tracking_uri": ref.tracking_uri, "parent_run_id": ref.run_id,
            "experiment_id": ref.experiment_id}


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

    emit = emit or (lambda line: print(line, flush=True))
    plan = plan_sweep(spec, sweep_id=sweep_id)
    # Tune saves its experiment state at most this often; a killed driver loses at most this
    # much (a trial finished in that window reruns). 'auto' could wait minutes.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not ray.is_initialized():
        ray.init(log_to_driver=True, **_init_kwargs())
    uri = _uri(tracking_uri)
    tracking: dict = {}
    if uri:
        tracking = _parent_run(spec, sweep_id, uri, plan)
    target = _storage_target(spec, storage)
    name = experiment_name(sweep_id)
    exp_path = f"{target.path.rstrip('/')}/{name}"
    executor = spec.trial_executor()
    keep_all = spec.sweep.scheduler == "pbt"
    trial_fn = _make_trial(base_job=plan.base_job, sweep_id=sweep_id, target=target, tracking=tracking,
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
            _end_run(tracking, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    unfinished = _unfinished_trials(grid)
    if unfinished:
        # Tune ends fit() quietly on SIGINT (after saving its state): not a finished sweep
        if tracking:
            _end_run(tracking, "KILLED")
        raise KeyboardInterrupt(f"sweep {sweep_id} was interrupted with {len(unfinished)} trial(s) unfinished; "
                                "submit it again with the same id to resume")
    board = _final_board(grid, plan, progress)
    result: dict[str, Any] = {
        "kind": "sweep", "sweep_id": sweep_id, "metric": plan.metric, "mode": plan.mode,
        "metrics": {f"best_{plan.metric}": board["best"]["metric"]} if board["best"] else {},
        "num_trials": len(board["rows"]), "resumed": restored, "experiment_path": exp_path,
        "best": board["best"], "leaderboard": board, "wall_s": round(time.time() - started, 2),
        # trial starts from a checkpoint, and those from another trial's (PBT exploits), seen by
        # this driver
        "restores": progress.restores, "pbt_clones": progress.clones, "trial_executor": executor,
        "mlflow_run_id": tracking.get("parent_run_id"), "mlflow_experiment_id": tracking.get("experiment_id"),
    }
    if scheduler is not None and callable(getattr(scheduler, "stats", None)):
        result["asha"] = scheduler.stats()  # promotion ASHA: pauses, resumes, rung sizes
    if tracking:
        result.update(_finish_mlflow(spec, plan, tracking, board, register=register))
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
        trials.append({"trial": trial_id, "params": {k: _plain(v) for k, v in flatten(res.config or {}).items()},
                       "state": _trial_state(res, plan, max_iter), "points": points,
                       "error": str(res.error)[:500] if res.error else None})
    return build_board(trials, metric=plan.metric, mode=plan.mode)


def _end_run(tracking: dict, status: str) -> None:
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking.get("tracking_uri")).set_terminated(tracking["parent_run_id"], status=status)
    except Exception as exc:
        log.warning("could not end the sweep's MLflow run: %s", exc)


def _finish_mlflow(spec, plan: SweepPlan, tracking: dict, board: dict, *, register: bool) -> dict:
    """Parent run: best metric/params, leaderboard + plot; child runs closed; `candidate`."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from trainyard.sweeps.leaderboard import format_table
    from trainyard.sweeps.plot import plot_board

    client = MlflowClient(tracking_uri=tracking.get("tracking_uri"))
    parent = tracking["parent_run_id"]
    out: dict[str, Any] = {}
    children = {r.data.tags.get(TRIAL_ID_TAG): r for r in client.search_runs(
        [tracking["experiment_id"]], filter_string=f"tags.`{SWEEP_ID_TAG}` = '{plan.sweep_id}' and "
                                                   f"tags.`{KIND_TAG}` = 'trial'", max_results=1000)}
    for row in board["rows"]:
        child = children.get(row["trial"])
        if child is not None:
            row["mlflow_run_id"] = child.info.run_id
            uri = child.data.tags.get("trainyard.model_uri")
            if uri:
                row["model_uri"] = uri
            if child.info.status == "RUNNING":
                # the trial could not close it: its actor was killed (a gang trial that ASHA/PBT
                # stopped, a crash); close it as the trial would have, and say who did
                outcome = {"DONE": "finished", "STOPPED": "stopped"}.get(row["state"], "failed")
                _end_child(client, child.info.run_id, outcome, closed_by="driver")
    best = board.get("best")
    now = int(time.time() * 1000)
    if best is not None:
        existing = client.get_run(parent).data.params
        params = [Param(f"best.{k}"[:250], str(v)) for k, v in best["params"].items()
                  if f"best.{k}"[:250] not in existing]
        client.log_batch(parent, metrics=[Metric(f"best_{plan.metric}", float(best["metric"]), now, 0)],
                         params=params, tags=[])
        client.set_tag(parent, "trainyard.best_trial", best["trial"])
    with tempfile.TemporaryDirectory(prefix="ty-sweep-") as tmp:
        with open(os.path.join(tmp, "leaderboard.json"), "w") as fh:
            json.dump(board, fh, indent=1, default=str)
        with open(os.path.join(tmp, "leaderboard.txt"), "w") as fh:
            fh.write(format_table(board) + "\n")
        paths = [os.path.join(tmp, "leaderboard.json"), os.path.join(tmp, "leaderboard.txt")]
        try:
            paths.append(plot_board(board, os.path.join(tmp, "learning_curves.png"), title=spec.name))
        except Exception as exc:
            log.warning("sweep plot failed: %s", exc)
        for path in paths:
            client.log_artifact(parent, path)
    if register and spec.tracking.register_model:
        out.update(_register_best(spec, plan, client, board, tracking.get("tracking_uri")))
    _end_run(tracking, "FINISHED")
    return out


def _register_best(spec, plan: SweepPlan, client, board: dict, tracking_uri: str | None) -> dict:
    """Register the best trial that logged a model; alias `candidate`. Idempotent: a sweep
    resumed after it finished finds its version instead of adding one."""
    import mlflow

    name = spec.model_name()
    for row in board["rows"]:
        uri = row.get("model_uri")
        if not uri or row.get("metric") is None:
            continue
        version = None
        try:
            found = client.search_model_versions(f"name = '{name}' and tags.`{SWEEP_ID_TAG}` = '{plan.sweep_id}'")
            version = next((v for v in found if v.tags.get(TRIAL_ID_TAG) == row["trial"]), None)
        except Exception as exc:  # no such model yet, or a backend without tag search
            log.debug("model version search failed: %s", exc)
        if version is None:
            if tracking_uri:
                mlflow.set_tracking_uri(tracking_uri)
            version = mlflow.register_model(uri, name, tags={SWEEP_ID_TAG: plan.sweep_id,
                                                             TRIAL_ID_TAG: row["trial"]})
        for key, value in {SWEEP_ID_TAG: plan.sweep_id, TRIAL_ID_TAG: row["trial"],
                           f"trainyard.{plan.metric}": str(row["metric"])}.items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_registered_model_alias(name, "candidate", version.version)
        return {"model_name": name, "model_version": str(version.version), "model_alias": "candidate",
                "registered_trial": row["trial"]}
    return {"model_error": "no trial logged a model (did every trial stop before its end?)"}


# ============================================================================ entrypoint


def main(argv: list[str] | None = None) -> int:
    """`python -m trainyard.runner sweep --sweep-id ID [--spec-file F] [--storage URI]`."""
    from trainyard.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SpecError, TrainyardError
    from trainyard.runner.protocol import ERROR, RESULT, format_line
    from trainyard.runner import checked_spec
    from trainyard.specs import parse_sweep_spec

    parser = argparse.ArgumentParser(prog="python -m trainyard.runner sweep")
    parser.add_argument("--sweep-id", "--job-id", dest="sweep_id", required=True,
                        help="the sweep's id: names its Tune experiment, checkpoints and MLflow run")
    parser.add_argument("--spec-file", help="read the SweepSpec from this file instead of $TRAINYARD_SPEC")
    parser.add_argument("--storage", help="checkpoint storage URI (default: spec, then $TRAINYARD_STORAGE)")
    args = parser.parse_args(argv)

    def error(kind: str, message: str) -> None:
        print(format_line(ERROR, {"error": kind, "message": message}), flush=True)
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
    print(format_line(RESULT, result), flush=True)
    return EXIT_OK

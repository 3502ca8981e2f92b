"""The job driver: one MLflow run, one TorchTrainer, progress lines while it fits, the result payload."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from trainyard.runner.reports import take_available

__all__ = ["run_job", "build_trainer", "JobResult", "spec_error_in"]


def build_trainer(spec, *, job_id: str, storage: str | None = None, mlflow_run: dict | None = None,
                  progress_queue=None, callbacks: list | None = None, extra_config: dict | None = None):
    """The job's TorchTrainer: checkpoints under <storage>/<project>/<job_id>.

    storage: file:///abs or s3://bucket/prefix; default spec.checkpoint.storage, then
    $TRAINYARD_STORAGE, then the Trainyard home's storage/ folder. S3 credentials and
    endpoint come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and
    TRAINYARD_S3_ENDPOINT_URL (or spec.checkpoint.endpoint_url).
    A trainer with the same job_id and storage resumes from the job's latest checkpoint.
    """
    from trainyard.runner.launch import make_trainer
    from trainyard.runner.storage import resolve_storage
    from trainyard.tracking import run_project

    target = resolve_storage(storage or spec.checkpoint.storage, project=run_project(spec),
                             endpoint_url=spec.checkpoint.endpoint_url)
    loop_config = {"spec": spec.model_dump(mode="json"), "job_id": job_id, "mlflow": mlflow_run,
                   "progress_queue": progress_queue, **(extra_config or {})}
    return make_trainer(spec, name=job_id, target=target, loop_config=loop_config,
                        num_to_keep=spec.checkpoint.keep, callbacks=callbacks)


@dataclass
class JobResult:
    metrics: dict
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    model_name: str | None
    model_version: str | None
    checkpoint: str | None
    extra: dict = field(default_factory=dict)

    def to_protocol(self) -> dict:
        return {"metrics": self.metrics, "mlflow_run_id": self.mlflow_run_id,
                "mlflow_experiment_id": self.mlflow_experiment_id, "model_name": self.model_name,
                "model_version": self.model_version, "checkpoint": self.checkpoint}


class _ProgressPrinter:
    """Driver thread: prints TRAINYARD_PROGRESS lines from what rank 0 queues, every item once,
    in order. It polls (take_available, else a short sleep) rather than blocking in a get."""

    def __init__(self, queue, emit: Callable[[str], None], *, poll_s: float = 0.2):
        from trainyard.runner.segments import Segments

        self.queue, self.emit, self.poll_s = queue, emit, poll_s
        self.segments = Segments()  # one per worker group (re)start: world sizes for the cost record
        self.final: dict | None = None
        self.preempted: dict | None = None  # rank 0 stopped as asked: {"step", ...}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one drain at a time: lines keep the queue's order
        self._thread = threading.Thread(target=self._run, name="trainyard-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(self.poll_s)

    def _drain(self) -> int:
        """Emit what the queue holds now; return how many items it took."""
        from trainyard.protocol import PROGRESS, format_line

        with self._lock:
            try:
                items = take_available(self.queue)
            except Exception:  # the queue actor is gone at shutdown
                return 0
            for item in items:
                restarted = self.segments.observe(item)
                if item.get("kind") == "world":
                    if restarted and len(self.segments.to_list()) > 1:
                        # a restarted group (lost worker, resize): say so, and at what size
                        self.emit(format_line(PROGRESS, {"step": item.get("step"), "total_steps": item.get("total_steps"),
                                                         "epoch": item.get("epoch"), "metrics": {},
                                                         "workers": self.segments.workers,
                                                         "restarts": len(self.segments.to_list()) - 1}))
                    continue
                if item.get("kind") == "final":
                    self.final = item
                    continue
                if item.get("kind") == "preempted":
                    self.preempted = item
                    continue
                line = {k: item[k] for k in ("step", "total_steps", "epoch", "metrics")}
                if self.segments.workers is not None:  # the group's size now (elastic jobs change it)
                    line["workers"] = self.segments.workers
                self.emit(format_line(PROGRESS, line))
            return len(items)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for _ in range(1000):  # what arrived since the thread's last look (bounded: a
            if not self._drain():  # producer still running must not keep us here)
                break


def spec_error_in(exc: BaseException | None):
    """The SpecError a worker raised (plan_steps refusing the warm-up, say), found inside Ray
    Train's WorkerGroupError (worker_failures) or an exception's causes; None if there is none.
    A job that fails on its spec then ends as a spec error (exit 2) with that error's message."""
    from trainyard.errors import SpecError

    todo, seen = [exc], set()
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, SpecError):
            return err
        failures = getattr(err, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures[rank] for rank in sorted(failures))
        todo.extend([getattr(err, "_base_exc", None), err.__cause__, err.__context__])
    return None


def _emit(line: str) -> None:
    from trainyard.protocol import emit_line

    emit_line(line)


def run_job(spec, job_id: str, *, storage: str | None = None, tracking_uri: str | None = None,
            emit: Callable[[str], None] = _emit, log_model: bool = True) -> dict:
    """Train `spec` as job `job_id` on the connected Ray cluster (ray.init is done here if
    needed) and return the TRAINYARD_RESULT payload. Raises on failure (after marking the
    MLflow run FAILED).

    SIGTERM while it trains (Ray's stop_job: preemption; a node's stop notice) asks the
    workers to checkpoint after their current step and stop (runner/preempt.py); the
    payload is then the TRAINYARD_PREEMPTED one, with "preempted": True, and the MLflow run
    is left KILLED (the next run of the job reopens it and resumes from the checkpoint)."""
    import ray
    from ray.util.queue import Queue

    from trainyard.runner.preempt import DriverStop, new_token
    from trainyard.tracking import PROJECT_TAG, experiment_for, identity_tags
    from trainyard.tracking import tracking_uri as _uri
    from trainyard.tracking.runs import end_job_run, run_tags, start_job_run

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    uri = _uri(tracking_uri)
    identity = identity_tags(spec)
    run = start_job_run(job_id=job_id, run_name=spec.name,
                        experiment=experiment_for(identity[PROJECT_TAG], spec.tracking.experiment),
                        uri=uri, tags={**identity, "trainyard.workload": spec.workload})
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # on the driver's node: a 0-CPU actor may land on any node, and one on a worker node that
    # goes away (a lost node; an elastic job's shrink) took every later progress item with it
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    printer = _ProgressPrinter(queue, emit)
    token = new_token(job_id)
    # the project goes with the run to rank 0, which registers the model under it
    trainer = build_trainer(spec, job_id=job_id, storage=storage,
                            mlflow_run={**run.to_config(), "project": identity[PROJECT_TAG]},
                            progress_queue=queue, extra_config={"log_model": log_model, "preempt_token": token})
    try:
        with DriverStop(token):
            result = trainer.fit()
    except BaseException as exc:
        printer.stop()
        try:
            end_job_run(run, status="FAILED")
        except Exception:
            pass
        spec_error = spec_error_in(exc)
        if spec_error is not None:  # e.g. plan_steps: the spec is wrong, not the training
            raise spec_error from exc
        raise
    finally:
        printer.stop()
        try:
            ray.kill(queue.actor)
        except Exception:
            pass
    tags = {}
    try:
        tags = run_tags(run)
    except Exception:
        pass
    reported = dict(result.metrics or {})
    if printer.preempted is not None or (printer.final is None and reported and not reported.get("trainyard_done")):
        # stopped as asked: no final report, the last checkpoint is where it resumes
        step = (printer.preempted or {}).get("step", reported.get("step"))
        where = _job_result(run, {}, {}, {}, result.checkpoint).checkpoint
        end_job_run(run, status="KILLED")
        return {"preempted": True, "step": step, "total_steps": reported.get("total_steps"), "checkpoint": where,
                "mlflow_run_id": run.run_id, "mlflow_experiment_id": run.experiment_id}
    out = _job_result(run, dict((printer.final or {}).get("metrics") or {}), reported, tags,
                      result.checkpoint)
    end_job_run(run, status="FINISHED")
    payload = out.to_protocol()
    usage = (printer.final or {}).get("usage")
    if isinstance(usage, dict):  # the workers' figures for the cost record (trainyard.runner.usage)
        payload["usage"] = usage
        segments = printer.segments.to_list()
        if len(segments) > 1:  # the group restarted (a lost worker, a resize): each size held, in order
            payload["usage"] = {**usage, "segments": segments}
    if out.extra.get("model_error"):
        payload["model_error"] = out.extra["model_error"]
    return payload


def _job_result(run, final_metrics: dict, reported: dict, tags: dict, checkpoint) -> JobResult:
    """The result from rank 0's final progress item, else Train's last checkpointed report,
    else the run's tags (model name and version)."""
    model_version = final_metrics.pop("trainyard_model_version", None) or reported.get(
        "trainyard_model_version") or tags.get("trainyard.model_version")
    model_name = final_metrics.pop("trainyard_model_name", None) or reported.get(
        "trainyard_model_name") or tags.get("trainyard.model_name")
    model_error = final_metrics.pop("trainyard_model_error", None) or reported.get("trainyard_model_error")
    for key in list(final_metrics):
        if key.startswith("trainyard_"):
            final_metrics.pop(key)
    if not final_metrics:
        final_metrics = {k: v for k, v in reported.items()
                         if not k.startswith("trainyard_") and k not in ("step", "epoch", "total_steps")}
    where = None
    if checkpoint is not None:
        path = checkpoint.path
        where = f"file://{path}" if path.startswith("/") else f"s3://{path.lstrip('/')}"
    return JobResult(metrics=final_metrics, mlflow_run_id=run.run_id, mlflow_experiment_id=run.experiment_id,
                     model_name=model_name, model_version=str(model_version) if model_version is not None else None,
                     checkpoint=where, extra={"model_error": model_error} if model_error else {})

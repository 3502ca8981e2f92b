"""Rank 0's outlets from the loop: the MLflow run (RunLogger) and the driver's progress queue."""
from __future__ import annotations

import threading
import time

__all__ = ["Tracker", "SEND_EVERY_S", "open_logger"]

# per-step metrics wait this long in the Tracker and go to MLflow as one batch: one log_batch
# per step woke MLflow's logging threads every step, and their SQL work took the GIL from the
# training thread (rank 0 then held every other rank up at the gradient all-reduce)
SEND_EVERY_S = 1.0


class _Opening:
    """Rank 0's MLflow work before the first step, done in a background thread: the client and
    its tracking store (MLflow's store module, its database engine), then the run's params and
    tags (Tracker.start). It ran on rank 0's critical path between DeepSpeed's set-up and the
    first step while the other ranks waited at the first all-reduce. Steps run meanwhile; what
    needs the logger (a flush, a checkpoint, the end) waits for it first."""

    def __init__(self, tracking: dict):
        self.logger = None
        self.error: BaseException | None = None
        self._jobs: list = []  # more work for the thread, in order (Tracker.start's params)
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(tracking,), name="trainyard-mlflow-open", daemon=True)
        self._thread.start()

    def _run(self, tracking: dict) -> None:
        try:
            from trainyard.tracking.logger import RunLogger

            self.logger = RunLogger(run_id=tracking["run_id"], tracking_uri=tracking.get("tracking_uri"))
        except BaseException as exc:  # noqa: BLE001 - raised where the logger is first needed
            self.error = exc
        while True:
            with self._lock:
                if not self._jobs:
                    self._idle.set()
                    return
                job = self._jobs.pop(0)
            if self.error is None:
                try:
                    job(self.logger)
                except BaseException as exc:  # noqa: BLE001
                    self.error = exc

    def then(self, job) -> bool:
        """Queue job(logger) after what is queued; False when the thread has finished (the caller runs it)."""
        with self._lock:
            if self._idle.is_set():
                return False
            self._jobs.append(job)
            return True

    @property
    def done(self) -> bool:
        return self._idle.is_set()

    def wait(self):
        """The logger, once everything queued is done; what failed in the thread is raised here."""
        self._idle.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.logger


def open_logger(*, rank: int, tracking: dict | None) -> _Opening | None:
    """Start rank 0's MLflow client in the background (as early in the loop as the rank is
    known); None on other ranks and without a run. Pass it to Tracker(opening=...)."""
    if rank == 0 and tracking and tracking.get("run_id"):
        return _Opening(tracking)
    return None


class Tracker:
    """On rank 0, logs to the job's MLflow run and queues progress for the driver; elsewhere
    (or without a run, or without a queue) the matching calls do nothing."""

    def __init__(self, *, rank: int, tracking: dict | None, queue, total_steps: int, opening: _Opening | None = None):
        self.rank, self.tracking, self.queue, self.total_steps = rank, tracking or None, queue, total_steps
        self._logger = None
        self._opening = None
        self._held: list[tuple[dict, int, int]] = []  # (metrics, step, unix ms) not yet sent
        self._held_n = 0
        self._held_since = 0.0
        if rank == 0 and self.tracking and self.tracking.get("run_id"):
            self._opening = opening or open_logger(rank=rank, tracking=self.tracking)

    @property
    def logger(self):
        """The run's RunLogger (None: no run here, or closed); waits for the background opening."""
        if self._opening is not None:
            opening, self._opening = self._opening, None
            self._logger = opening.wait()
        return self._logger

    @logger.setter
    def logger(self, value) -> None:
        self._opening, self._logger = None, value

    def _opened(self) -> bool:
        """Is the logger there without waiting (a step never waits for MLflow)?"""
        return self._opening is None or self._opening.done

    @property
    def has_run(self) -> bool:
        return bool(self.tracking and self.tracking.get("run_id"))

    def start(self, *, spec, hparams: dict, plan, world: int, resumed_from: str | None,
              resumed_step: int, resize: dict | None = None) -> None:
        """What the run trains with: the spec's settings, the DeepSpeed plan, where it resumed
        (and, resumed at another world size, what changed: a progress item for the job's
        events, tags and metrics in the run)."""
        if resize:
            self.progress("progress", resumed_step, 0, {
                "world_size": resize["world_size"], "global_batch_size": resize["global_batch"],
                "resized_from_world": resize.get("resized_from_world")})
        if self._opening is not None and self._opening.then(
                lambda logger: self._log_start(logger, spec=spec, hparams=hparams, plan=plan, world=world,
                                               resumed_from=resumed_from, resumed_step=resumed_step, resize=resize)):
            return  # logged in the background, before anything else reaches the run
        if self.logger is None:
            return
        self._log_start(self.logger, spec=spec, hparams=hparams, plan=plan, world=world, resumed_from=resumed_from,
                        resumed_step=resumed_step, resize=resize)

    @staticmethod
    def _log_start(logger, *, spec, hparams: dict, plan, world: int, resumed_from: str | None,
                   resumed_step: int, resize: dict | None) -> None:
        logger.log_params({
            "hyperparameters": hparams, "training": spec.training.model_dump(),
            "resources": spec.resources.model_dump(exclude={"custom_resources"}),
            "deepspeed.requested": spec.deepspeed.model_dump(), "workload": spec.workload,
            "data": spec.data,
        })
        logger.log_params(plan.as_params())
        logger.set_tags({"trainyard.workload": spec.workload, "trainyard.zero_stage": plan.zero_stage,
                         "trainyard.world_size": world})
        if resumed_from:
            logger.set_tags({"trainyard.resumed_from": resumed_from,
                             "trainyard.resumed_from_step": resumed_step})
        if resize:
            rng = resize.get("rng") or {}
            logger.set_tags({
                "trainyard.resized_from_world": resize.get("resized_from_world"),
                "trainyard.elastic_batch": resize.get("elastic_batch"),
                "trainyard.rng_restored_ranks": ",".join(map(str, rng.get("restored", []))) or "none",
                "trainyard.rng_seeded_ranks": ",".join(map(str, rng.get("seeded", []))) or "none",
                "trainyard.resume_data_exact": resize.get("data_exact"),
            })
            # params cannot change within a run: the world and batch of each stretch are metrics
            logger.log_metrics({"world_size": float(resize["world_size"]),
                                "global_batch_size": float(resize["global_batch"]),
                                "gradient_accumulation_steps": float(resize["gas"])}, step=resumed_step)

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        """Hold the values; they go to MLflow (asynchronously) once SEND_EVERY_S has passed since
        the first held one, when a batch is full, and at every flush and close."""
        if (self._logger is None and self._opening is None) or not metrics:
            return
        now = time.monotonic()
        if not self._held:
            self._held_since = now
        self._held.append((dict(metrics), step, int(time.time() * 1000)))
        self._held_n += len(metrics)
        if not self._opened():
            return  # held until the run is open (it opens while the first steps run)
        if now - self._held_since >= SEND_EVERY_S or self._held_n >= self.logger.max_batch:
            self._send()

    def _send(self) -> None:
        held, self._held, self._held_n = self._held, [], 0
        if held and self.logger is not None:
            self.logger.log_metric_rows(held)

    def flush(self) -> None:
        """Everything logged so far is sent (what a checkpoint covers is on record)."""
        self._send()
        if self.logger is not None:
            self.logger.flush()

    def log_params(self, params: dict) -> None:
        if self.logger is not None:
            self.logger.log_params(params)

    def progress(self, kind: str, step: int, epoch: int, metrics: dict, *, usage: dict | None = None,
                 segment: dict | None = None) -> None:
        if self.rank == 0 and self.queue is not None:
            item = {"kind": kind, "step": step, "total_steps": self.total_steps, "epoch": epoch, "metrics": metrics}
            if usage is not None:  # the final item: what the cost record needs from the workers
                item["usage"] = usage
            if segment is not None:  # this worker group's own figures (runner.segments)
                item["segment"] = segment
            self.queue.actor.put_nowait.remote(item)

    def close(self) -> None:
        """Send what is queued for MLflow; idempotent (a stopped trial leaves through here too)."""
        self._send()
        logger, self.logger = self.logger, None
        if logger is not None:
            logger.close()

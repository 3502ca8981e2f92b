"""Rank 0's outlets from the loop: the MLflow run (RunLogger) and the driver's progress queue."""
from __future__ import annotations

import time

__all__ = ["Tracker", "SEND_EVERY_S"]

# per-step metrics wait this long in the Tracker and go to MLflow as one batch: one log_batch
# per step woke MLflow's logging threads every step, and their SQL work took the GIL from the
# training thread (rank 0 then held every other rank up at the gradient all-reduce)
SEND_EVERY_S = 1.0


class Tracker:
    """On rank 0, logs to the job's MLflow run and queues progress for the driver; elsewhere
    (or without a run, or without a queue) the matching calls do nothing."""

    def __init__(self, *, rank: int, tracking: dict | None, queue, total_steps: int):
        self.rank, self.tracking, self.queue, self.total_steps = rank, tracking or None, queue, total_steps
        self.logger = None
        self._held: list[tuple[dict, int, int]] = []  # (metrics, step, unix ms) not yet sent
        self._held_n = 0
        self._held_since = 0.0
        if rank == 0 and self.tracking and self.tracking.get("run_id"):
            from trainyard.tracking.logger import RunLogger

            self.logger = RunLogger(run_id=self.tracking["run_id"], tracking_uri=self.tracking.get("tracking_uri"))

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
        if self.logger is None:
            return
        self.logger.log_params({
            "hyperparameters": hparams, "training": spec.training.model_dump(),
            "resources": spec.resources.model_dump(exclude={"custom_resources"}),
            "deepspeed.requested": spec.deepspeed.model_dump(), "workload": spec.workload,
            "data": spec.data,
        })
        self.logger.log_params(plan.as_params())
        self.logger.set_tags({"trainyard.workload": spec.workload, "trainyard.zero_stage": plan.zero_stage,
                              "trainyard.world_size": world})
        if resumed_from:
            self.logger.set_tags({"trainyard.resumed_from": resumed_from,
                                  "trainyard.resumed_from_step": resumed_step})
        if resize:
            rng = resize.get("rng") or {}
            self.logger.set_tags({
                "trainyard.resized_from_world": resize.get("resized_from_world"),
                "trainyard.elastic_batch": resize.get("elastic_batch"),
                "trainyard.rng_restored_ranks": ",".join(map(str, rng.get("restored", []))) or "none",
                "trainyard.rng_seeded_ranks": ",".join(map(str, rng.get("seeded", []))) or "none",
                "trainyard.resume_data_exact": resize.get("data_exact"),
            })
            # params cannot change within a run: the world and batch of each stretch are metrics
            self.logger.log_metrics({"world_size": float(resize["world_size"]),
                                     "global_batch_size": float(resize["global_batch"]),
                                     "gradient_accumulation_steps": float(resize["gas"])}, step=resumed_step)

    def log_metrics(self, metrics: dict, *, step: int) -> None:
        """Hold the values; they go to MLflow (asynchronously) once SEND_EVERY_S has passed since
        the first held one, when a batch is full, and at every flush and close."""
        if self.logger is None or not metrics:
            return
        now = time.monotonic()
        if not self._held:
            self._held_since = now
        self._held.append((dict(metrics), step, int(time.time() * 1000)))
        self._held_n += len(metrics)
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

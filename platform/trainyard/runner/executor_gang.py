"""The gang trial executor: a trial fits its own TorchTrainer and forwards Train's reports to Tune as pointers."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any, Callable

__all__ = ["run_gang", "POINTER_FILE"]

POINTER_FILE = "trainyard_pointer.json"


def _pointer_checkpoint(train_path: str, metrics: dict, trial_id: str):
    """A tiny Tune checkpoint that names the Train checkpoint in storage (the shards stay put)."""
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


def run_gang(loop: Callable, loop_config: dict, *, spec, sweep_id: str, trial_id: str, target,
             keep_all_checkpoints: bool) -> dict:
    """Build and fit a TorchTrainer of spec.resources.workers workers; forward its reports to
    Tune; return the last one."""
    import ray.train
    from ray import tune
    from ray.util.queue import Queue

    from trainyard.runner.launch import make_trainer
    from trainyard.runner.reports import SENTINEL, first_flags, forward_reports, make_forwarder
    from trainyard.sweeps.plan import experiment_name

    pointer = _read_pointer(tune.get_checkpoint())
    resume = None
    if pointer and pointer.get("path"):
        resume = ray.train.Checkpoint(pointer["path"], filesystem=target.filesystem)
        print(f"[trainyard] trial {trial_id}: restoring from {pointer['path']} "
              f"(step {pointer.get('step')}, trial {pointer.get('trial_id')})", flush=True)
    flags = first_flags(resume is not None, (pointer or {}).get("trial_id"), trial_id)

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = make_trainer(
        spec, loop=loop, loop_config={**loop_config, "resume_from": resume}, target=target,
        # fresh name per start: Train's same-name auto-resume must not shadow resume_from
        name=f"{experiment_name(sweep_id)}-trials/{trial_id}-{uuid.uuid4().hex[:6]}",
        # PBT may clone any trial's latest checkpoint while its owner trains on
        num_to_keep=None if keep_all_checkpoints else max(2, spec.checkpoint.keep),
        callbacks=[make_forwarder(queue)],
        cpu_held_elsewhere=0.01)  # the trial actor holds 0.01 CPU
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # handed to the trial thread, which raises it
            outcome["error"] = exc
        finally:
            queue.put(SENTINEL)

    thread = threading.Thread(target=fit, name="trainyard-trial-fit", daemon=True)
    thread.start()

    def send(report: dict, metrics: dict, checkpoint_path: str | None) -> None:
        if checkpoint_path:
            tmp, ckpt = _pointer_checkpoint(checkpoint_path, metrics, trial_id)
            try:
                tune.report(report, checkpoint=ckpt)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            tune.report(report)

    last = forward_reports(queue, send, first_flags=flags)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return last

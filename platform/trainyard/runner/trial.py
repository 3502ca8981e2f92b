"""A sweep trial: the Tune function trainable that runs one configuration through an executor."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

__all__ = ["make_trial", "trial_outcome", "plain"]

log = logging.getLogger("trainyard.sweep")


def trial_outcome(exc: BaseException | None) -> str:
    """How one start of a trial ended: "finished" (its loop ran to the end), "stopped" (Tune
    stopped it: ASHA, PBT, the time budget; tune.report leaves with SystemExit(0)), or "failed"."""
    if exc is None:
        return "finished"
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return "stopped"
    return "failed"


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (Tune samples NumPy values)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return value


def make_trial(*, base_job: dict, sweep_id: str, target, tracking: dict,
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

        from trainyard.runner.engines import worker_env
        from trainyard.specs import JobSpec
        from trainyard.sweeps.space import apply_params, flatten
        from trainyard.tracking.sweeps import child_run, end_child

        ctx = tune.get_context()
        trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
        params = {k: plain(v) for k, v in flatten(config).items()}
        spec = JobSpec.model_validate(apply_params(base_job, params))
        if train_loop is None:
            from trainyard.runner.trainer import train_loop_per_worker as loop
        else:
            loop = train_loop

        mlflow_cfg = None
        if tracking.get("parent_run_id"):
            run_id = child_run(tracking_uri=tracking.get("tracking_uri"), experiment_id=tracking["experiment_id"],
                               parent_run_id=tracking["parent_run_id"], sweep_id=sweep_id,
                               trial_id=trial_id, trial_name=trial_name, params=params,
                               identity=tracking.get("identity"))
            mlflow_cfg = {"tracking_uri": tracking.get("tracking_uri"), "run_id": run_id,
                          "experiment_id": tracking["experiment_id"],
                          "project": (tracking.get("identity") or {}).get("trainyard.project")}
        loop_config = {"spec": spec.model_dump(mode="json"), "job_id": f"{sweep_id}/{trial_id}",
                       "mlflow": mlflow_cfg, "log_model": True, "register_model": False,
                       "progress_queue": None}
        try:
            if executor == "inline":
                from trainyard.runner.executor_inline import run_inline

                last = run_inline(loop, loop_config, spec=spec, trial_id=trial_id, env=worker_env(spec))
            else:
                from trainyard.runner.executor_gang import run_gang

                last = run_gang(loop, loop_config, spec=spec, sweep_id=sweep_id, trial_id=trial_id,
                                target=target, keep_all_checkpoints=keep_all_checkpoints)
        except BaseException as exc:
            # ASHA/PBT stop a trial by raising SystemExit out of tune.report: close the child
            # run here (the loop has flushed its metrics), then let the exit reach Tune
            if mlflow_cfg:
                try:
                    from mlflow.tracking import MlflowClient

                    end_child(MlflowClient(tracking_uri=mlflow_cfg["tracking_uri"]), mlflow_cfg["run_id"],
                              trial_outcome(exc))
                except Exception as err:
                    log.warning("could not close trial %s's MLflow run: %s", trial_id, err)
            raise
        if mlflow_cfg:
            from mlflow.tracking import MlflowClient

            end_child(MlflowClient(tracking_uri=mlflow_cfg["tracking_uri"]), mlflow_cfg["run_id"],
                      "finished", model_uri=last.get("trainyard_model_uri"))

    return _trial

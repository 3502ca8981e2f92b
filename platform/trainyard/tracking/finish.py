"""Rank 0's end of a run: the spec, the loss curve, the workload's samples and the model, into MLflow."""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

__all__ = ["finish_tracking"]

log = logging.getLogger("trainyard.tracking")


def finish_tracking(logger, *, spec, config: dict, hparams: dict, workload, eval_ds, state_dicts: dict,
                    tracking: dict) -> dict[str, Any]:
    """Log the run's artifacts and its model (registered when the spec or config asks);
    returns log_trainyard_model's info, or {"model_error": ...}: a model that cannot be
    logged fails the model, not the job."""
    import yaml

    from trainyard.tracking.model import log_trainyard_model

    logger.flush()
    with tempfile.TemporaryDirectory(prefix="ty-art-") as tmp:
        spec_path = os.path.join(tmp, "spec.yaml")
        with open(spec_path, "w") as fh:
            yaml.safe_dump(spec.model_dump(mode="json"), fh, sort_keys=False)
        logger.log_artifact(spec_path)
        want_artifacts = config.get("artifacts", True) is not False
        try:
            if want_artifacts:
                _loss_curve(logger, tmp, spec=spec, workload=workload)
        except Exception as exc:  # a plot is not worth failing a job for
            log.warning("loss curve failed: %s", exc)
        if want_artifacts and workload.artifacts is not None:
            try:
                plain = _plain_models(workload, hparams, state_dicts)
                from trainyard.workload import StepContext

                out_dir = os.path.join(tmp, "artifacts")
                os.makedirs(out_dir)
                paths = workload.artifacts(plain, eval_ds, StepContext(hparams=hparams), out_dir) or []
                for path in paths:
                    logger.log_artifact(path, "samples")
            except Exception as exc:
                log.warning("workload artifacts failed: %s", exc)
    register = config.get("register_model")
    if register is None:
        register = spec.tracking.register_model
    try:
        info = log_trainyard_model(state_dicts, workload=spec.workload, hparams=hparams,
                                   run_id=tracking["run_id"], tracking_uri=tracking.get("tracking_uri"),
                                   registered_model_name=spec.model_name() if register else None,
                                   project=tracking.get("project") or spec.project)
        logger.set_tags({"trainyard.model_uri": info["model_uri"],
                         **({"trainyard.model_name": info["model_name"],
                             "trainyard.model_version": info["model_version"]}
                            if info.get("model_version") else {})})
    except Exception as exc:
        log.exception("logging the model failed")
        info = {"model_error": f"{type(exc).__name__}: {exc}"[:500]}
    return info


def _plain_models(workload, hparams, state_dicts):
    models = workload.build_models(hparams)
    for name, module in models.items():
        module.load_state_dict(state_dicts[name])
        module.eval()
    return models


def _loss_curve(logger, tmp: str, *, spec, workload) -> None:
    from trainyard.tracking.plots import loss_curve_png

    client, run_id = logger.client, logger.run_id
    metrics = client.get_run(run_id).data.metrics
    train_keys = [k for k in metrics if (k not in workload.metrics or k == "loss") and k != "lr"]
    eval_keys = [k for k in workload.metrics if k in metrics and k != "loss"]

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    path = loss_curve_png(os.path.join(tmp, "loss_curve.png"),
                          train={k: history(k) for k in train_keys},
                          evals={k: history(k) for k in eval_keys}, title=spec.name)
    logger.log_artifact(path)

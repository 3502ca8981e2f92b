"""A sweep in MLflow: the parent run, one child run per trial, the leaderboard, the `candidate` model."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any

__all__ = ["SWEEP_ID_TAG", "TRIAL_ID_TAG", "KIND_TAG", "STOPPED_EARLY_TAG", "CLOSED_BY_TAG", "CHILD_END",
           "parent_run", "child_run", "end_child", "end_run", "finish_sweep", "register_best"]

log = logging.getLogger("trainyard.sweep")

SWEEP_ID_TAG = "trainyard.sweep_id"
TRIAL_ID_TAG = "trainyard.trial_id"
KIND_TAG = "trainyard.kind"
STOPPED_EARLY_TAG = "trainyard.stopped_early"  # "true": ASHA/PBT/the time budget stopped the trial
CLOSED_BY_TAG = "trainyard.closed_by"  # "driver": the trial could not close its run itself

# outcome -> (MLflow run status, trainyard.stopped_early tag). A stopped trial is a normal
# sweep outcome with valid metrics, not an interruption: FINISHED, tagged (KILLED is what an
# interrupted sweep's runs get).
CHILD_END = {"finished": ("FINISHED", "false"), "stopped": ("FINISHED", "true"), "failed": ("FAILED", None)}


def parent_run(spec, sweep_id: str, tracking_uri: str | None, plan) -> dict:
    """Find or create the sweep's run (tag trainyard.sweep_id) and log the sweep's settings;
    returns {"tracking_uri", "parent_run_id", "experiment_id", "identity"} for the trials
    (identity: the user and project tags)."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from trainyard.tracking import PROJECT_TAG, experiment_for, identity_tags
    from trainyard.tracking.runs import start_job_run

    identity = identity_tags(spec)
    ref = start_job_run(job_id=sweep_id, run_name=spec.name,
                        experiment=experiment_for(identity[PROJECT_TAG], spec.tracking.experiment),
                        uri=tracking_uri, tags={SWEEP_ID_TAG: sweep_id, KIND_TAG: "sweep", **identity,
                                                "trainyard.workload": spec.workload})
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
    # the trials' runs carry the same user and project; the best model registers under it
    return {"tracking_uri": ref.tracking_uri, "parent_run_id": ref.run_id,
            "experiment_id": ref.experiment_id, "identity": identity}


def child_run(*, tracking_uri, experiment_id, parent_run_id, sweep_id, trial_id, trial_name, params,
              identity: dict | None = None) -> str:
    """Find or create the trial's nested MLflow run (a restarted trial reuses it), tagged
    with the sweep's `identity` (user and project)."""
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
            KIND_TAG: "trial", **(identity or {})})
        run_id = run.info.run_id
    client.set_tag(run_id, "trainyard.trial_config", json.dumps(params, sort_keys=True, default=str)[:5000])
    return run_id


def end_child(client, run_id: str, outcome: str, *, model_uri: str | None = None,
              closed_by: str | None = None) -> None:
    """Close a trial's child run for `outcome` (see CHILD_END)."""
    from mlflow.entities import RunTag

    status, stopped = CHILD_END[outcome]
    tags = {"trainyard.model_uri": model_uri, STOPPED_EARLY_TAG: stopped, CLOSED_BY_TAG: closed_by}
    tags = [RunTag(k, v) for k, v in tags.items() if v]
    if tags:
        client.log_batch(run_id, tags=tags)
    client.set_terminated(run_id, status=status)


def end_run(tracking: dict, status: str) -> None:
    """Close the sweep's parent run; a tracking failure here is logged, not raised."""
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=tracking.get("tracking_uri")).set_terminated(tracking["parent_run_id"], status=status)
    except Exception as exc:
        log.warning("could not end the sweep's MLflow run: %s", exc)


def finish_sweep(spec, plan, tracking: dict, board: dict, *, register: bool) -> dict:
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
                end_child(client, child.info.run_id, outcome, closed_by="driver")
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
        project = (tracking.get("identity") or {}).get("trainyard.project") or spec.project
        out.update(register_best(spec, plan, client, board, tracking.get("tracking_uri"), project=project))
    end_run(tracking, "FINISHED")
    return out


def register_best(spec, plan, client, board: dict, tracking_uri: str | None, *, project: str) -> dict:
    """Register the best trial that logged a model, as a model of `project`; alias `candidate`.
    Idempotent: a sweep resumed after it finished finds its version instead of adding one."""
    import mlflow

    from trainyard.errors import ConflictError
    from trainyard.tracking import PROJECT_TAG
    from trainyard.tracking.registry import claim_model

    name = spec.model_name()
    try:
        claim_model(client, name, project=project)
    except ConflictError as exc:
        return {"model_error": str(exc)}
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
        for key, value in {SWEEP_ID_TAG: plan.sweep_id, TRIAL_ID_TAG: row["trial"], PROJECT_TAG: project,
                           f"trainyard.{plan.metric}": str(row["metric"])}.items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_registered_model_alias(name, "candidate", version.version)
        return {"model_name": name, "model_version": str(version.version), "model_alias": "candidate",
                "registered_trial": row["trial"]}
    return {"model_error": "no trial logged a model (did every trial stop before its end?)"}

"""The logged model: consolidated weights + an mlflow.pyfunc wrapper that speaks JSON.

A Trainyard model in MLflow is a pyfunc whose artifacts are
    weights/<module>.pt   the state_dict of each module returned by build_models
    trainyard.json        {"workload": "cnn" | "pkg.mod:ATTR", "hparams": {...}, "modules": [...]}
and whose python_model is `TrainyardModel`. `predict(payload_dict)` rebuilds nothing per
call: load_context builds the modules once, then every request goes to
`workload.predictor(models, payload, hparams)`: JSON in, JSON out.

A user's own family (`module:attribute`, or a module shipped in a job's working_dir) travels
with the model: its top-level module or package goes into the model's `code/` folder
(MLflow's `code_paths`), which MLflow puts on the import path when it loads the model. So
the model loads and serves in a process that never saw the job's folder.

Serving uses `load_trainyard_model(uri) -> (workload, models, hparams)`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from typing import Any

import mlflow.pyfunc

__all__ = ["TrainyardModel", "log_trainyard_model", "load_trainyard_model", "model_pip_requirements",
           "workload_code_paths"]

META_FILE = "trainyard.json"


def _load_modules(weights_dir: str, meta: dict):
    import torch

    from trainyard.workload import resolve_workload

    workload = resolve_workload(meta["workload"])
    hparams = dict(meta.get("hparams") or {})
    models = workload.build_models(hparams)
    for name, module in models.items():
        state = torch.load(os.path.join(weights_dir, f"{name}.pt"), map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        module.eval()
    return workload, models, hparams


class TrainyardModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: predict(model_input=<dict payload>) -> dict."""

    def load_context(self, context):
        with open(context.artifacts["meta"]) as fh:
            self.meta = json.load(fh)
        self.workload, self.models, self.hparams = _load_modules(context.artifacts["weights"], self.meta)

    def predict(self, context, model_input, params=None):
        payload = model_input
        # pyfunc may hand a one-row DataFrame when a caller sends a table
        if hasattr(payload, "to_dict") and not isinstance(payload, dict):
            records = payload.to_dict(orient="records")
            payload = records[0] if len(records) == 1 else {"inputs": records}
        return self.workload.predictor(self.models, payload, self.hparams)


def model_pip_requirements() -> list[str]:
    """Pinned to what runs here; given explicitly so MLflow skips its slow inference."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("torch", "mlflow", "numpy", "scikit-learn", "trainyard"):
        try:
            reqs.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return reqs


def workload_code_paths(ref: str) -> list[str]:
    """What a model of workload `ref` must carry to import it where it is loaded: the file of
    a top-level module, or the folder of a top-level package, that `module:attribute` names.
    Built-in families (and anything under trainyard or workloads) ship with Trainyard: none."""
    from trainyard.workload import known_workloads

    if ref in known_workloads() or ":" not in ref:
        return []
    top = ref.partition(":")[0].split(".")[0]
    if not top or top in ("trainyard", "workloads"):
        return []
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:  # a package: its folder (a namespace package: the first)
        folders = [p for p in spec.submodule_search_locations if os.path.isdir(p)]
        return folders[:1]
    if spec.origin and spec.origin.endswith(".py") and os.path.isfile(spec.origin):
        return [spec.origin]
    return []  # a compiled or frozen module: it must be installed where the model loads


def log_trainyard_model(state_dicts: dict[str, dict], *, workload: str, hparams: dict,
                        run_id: str, tracking_uri: str | None = None,
                        registered_model_name: str | None = None, project: str = "default",
                        input_example: Any = None, name: str = "model") -> dict[str, Any]:
    """Log weights + wrapper into the run; register when a name is given, as a model of
    `project` (trainyard.tracking.registry: a name another project owns is refused before
    anything is logged).

    Returns {"model_uri", "model_id", "model_name", "model_version"} (name/version None
    when not registered).
    """
    import mlflow
    import torch
    from mlflow.tracking import MlflowClient

    from trainyard.tracking import PROJECT_TAG
    from trainyard.tracking.registry import claim_model

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    if registered_model_name:
        claim_model(client, registered_model_name, project=project)
    with tempfile.TemporaryDirectory(prefix="ty-model-") as tmp:
        weights = os.path.join(tmp, "weights")
        os.makedirs(weights)
        for module_name, state in state_dicts.items():
            torch.save(state, os.path.join(weights, f"{module_name}.pt"))
        meta_path = os.path.join(tmp, META_FILE)
        with open(meta_path, "w") as fh:
            json.dump({"workload": workload, "hparams": hparams, "modules": sorted(state_dicts)}, fh)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name, python_model=TrainyardModel(),
                artifacts={"weights": weights, "meta": meta_path},
                pip_requirements=model_pip_requirements(),
                code_paths=workload_code_paths(workload) or None,
                registered_model_name=registered_model_name,
                input_example=None,
                metadata={"trainyard_workload": workload},
            )
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        client.set_model_version_tag(registered_model_name, str(version), PROJECT_TAG, project)
    return {"model_uri": info.model_uri, "model_id": getattr(info, "model_id", None),
            "model_name": registered_model_name if version is not None else None,
            "model_version": str(version) if version is not None else None}


def load_trainyard_model(uri: str):
    """(workload, models, hparams) from a model URI: models:/name/3, models:/name@champion,
    runs:/<id>/model or m-<id> URIs. The modules are on CPU, in eval mode."""
    pyfunc = mlflow.pyfunc.load_model(uri)
    wrapper = pyfunc.unwrap_python_model()
    return wrapper.workload, wrapper.models, wrapper.hparams

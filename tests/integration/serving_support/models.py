"""Register small cnn model versions in MLflow the way the runner does (tracking.model)."""
from __future__ import annotations


def register_cnn(tracking_uri: str, name: str, *, accuracy: float, seed: int = 0, workload: str = "cnn",
                 hparams: dict | None = None, experiment: str = "serving-tests") -> str:
    import mlflow
    import torch

    from trainyard.tracking.model import log_trainyard_model
    from trainyard.tracking.runs import artifact_location_for
    from trainyard.workload import resolve_workload

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    # on a SQLite store, beside the database: MLflow's default is ./mlruns of the test's cwd
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, artifact_location=artifact_location_for(tracking_uri, experiment))
    hp = {"channels": 8, "hidden": 16, "dropout": 0.0, **(hparams or {})}
    torch.manual_seed(seed)
    models = resolve_workload(workload).build_models(hp)
    run = client.create_run(exp_id, run_name=f"{name}-{seed}")
    client.log_metric(run.info.run_id, "accuracy", accuracy)
    info = log_trainyard_model({k: m.state_dict() for k, m in models.items()}, workload=workload, hparams=hp,
                               run_id=run.info.run_id, tracking_uri=tracking_uri, registered_model_name=name)
    client.set_terminated(run.info.run_id)
    return info["model_version"]


def digits(n: int = 4):
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images[:n].tolist(), data.target[:n].tolist()

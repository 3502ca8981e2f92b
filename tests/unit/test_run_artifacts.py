"""A job's MLflow run on a SQLite tracking store keeps its artifacts beside the database, not in
./mlruns of whichever folder the creating process (the job driver, started by Ray) ran in."""
from __future__ import annotations

from pathlib import Path

from trainyard.tracking.runs import artifact_location_for, start_job_run


def test_the_location_is_beside_a_sqlite_database_and_left_to_mlflow_otherwise(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    assert artifact_location_for(f"sqlite:///{db}", "team-a/demo run") == (
        tmp_path / "store" / "mlartifacts" / "team-a_demo_run").as_uri()
    assert artifact_location_for(f"sqlite:///{db}?timeout=20", "x") == (tmp_path / "store" / "mlartifacts" / "x").as_uri()
    for uri in (None, "", "http://127.0.0.1:5000", "postgresql://u@h/db", "sqlite:///:memory:"):
        assert artifact_location_for(uri, "x") is None, uri
    assert artifact_location_for(f"sqlite:///{db}", "..").endswith("/mlartifacts/experiment")


def test_a_run_created_from_another_folder_logs_its_artifacts_beside_the_database(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    elsewhere = tmp_path / "driver-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = start_job_run(job_id="j-1", run_name="demo", experiment="proj/demo", uri=uri)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    MlflowClient(tracking_uri=uri).log_artifact(run.run_id, str(note))

    stored = list((tmp_path / "mlartifacts" / "proj_demo").rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["hello"]
    assert not (elsewhere / "mlruns").exists() and list(elsewhere.iterdir()) == []
    # the same job again reopens its run in the same experiment
    assert start_job_run(job_id="j-1", run_name="demo", experiment="proj/demo", uri=uri).run_id == run.run_id
    assert Path(tmp_path / "mlflow.db").exists()

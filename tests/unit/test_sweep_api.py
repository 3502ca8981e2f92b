"""Sweeps through the REST API against the fake Ray client of test_api (no Ray): submit
validates the sweep block, dispatch runs the sweep entrypoint, show returns the leaderboard."""
from __future__ import annotations

import json

from test_api import server  # noqa: F401  (the fixture: tests/unit is on sys.path, like every test dir)


def sweep_spec(**sweep):
    return {"name": "sw", "workload": "cnn", "resources": {"workers": 1}, "training": {"epochs": 2},
            "sweep": {"scheduler": "asha", "num_trials": 4, **sweep},
            "promote": {"canary_weight": 0.2}}


def test_submit_dispatch_progress_result(server):  # noqa: F811
    client, ctx, fakes = server
    resp = client.post("/v1/sweeps", json={"spec": sweep_spec()})
    assert resp.status_code == 201, resp.text
    sweep = resp.json()
    assert sweep["kind"] == "sweep" and sweep["sweep"]["scheduler"] == "asha"
    assert sweep["promote"]["canary_weight"] == 0.2
    ctx.controller.tick()
    sub = fakes["local"].submissions[0]
    assert sub["entrypoint"] == f"python -m trainyard.runner sweep --sweep-id {sweep['id']}"
    assert json.loads(sub["runtime_env"]["env_vars"]["TRAINYARD_SPEC"])["sweep"]["num_trials"] == 4

    sid = sub["submission_id"]
    row = {"trial": "t1", "params": {"training.lr": 0.01}, "metric": 0.8, "best": 0.8, "state": "RUNNING",
           "iterations": 1}
    progress = {"kind": "sweep", "metric": "accuracy", "mode": "max", "trials_total": 4, "best": row,
                "leaderboard": [row]}
    fakes["local"].set(sid, "RUNNING", logs="TRAINYARD_PROGRESS " + json.dumps(progress) + "\n")
    ctx.controller.tick()
    got = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert got["state"] == "RUNNING" and got["leaderboard"]["rows"][0]["trial"] == "t1"
    assert got["leaderboard"]["live"] is True

    board = {"metric": "accuracy", "mode": "max", "rows": [{**row, "state": "DONE"}], "best": row,
             "curves": {"t1": [[0, 1, 5, 0.8]]}, "best_so_far": [[0, 5, 0.8]]}
    result = {"kind": "sweep", "metrics": {"best_accuracy": 0.8}, "leaderboard": board, "best": row,
              "mlflow_run_id": "p1", "mlflow_experiment_id": "3", "model_name": "sw", "model_version": "2",
              "model_alias": "candidate", "registered_trial": "t1"}
    fakes["local"].set(sid, "SUCCEEDED", logs=fakes["local"].jobs[sid]["logs"] + "TRAINYARD_RESULT "
                       + json.dumps(result) + "\n")
    ctx.controller.tick()
    got = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert got["state"] == "SUCCEEDED" and got["leaderboard"]["curves"]["t1"]
    assert got["model"]["model_alias"] == "candidate" and got["best"]["trial"] == "t1"
    listed = client.get("/v1/sweeps").json()["sweeps"]
    assert [s["id"] for s in listed] == [sweep["id"]] and listed[0]["best"]["metric"] == 0.8


def test_bad_sweep_is_rejected_naming_the_field(server):  # noqa: F811
    client, ctx, fakes = server
    resp = client.post("/v1/sweeps", json={"spec": sweep_spec(scheduler="hyperband")})
    assert resp.status_code == 422
    assert resp.json()["issues"][0]["field"] == "sweep.scheduler"
    resp = client.post("/v1/sweeps", json={"spec": sweep_spec(search_space={"training.lr": {"uniform": [1, 0.1]}})})
    assert resp.status_code == 422 and "low must be < high" in resp.text


def test_a_job_is_not_a_sweep_and_cancel_works(server):  # noqa: F811
    client, ctx, fakes = server
    job = client.post("/v1/jobs", json={"spec": {"name": "j", "workload": "cnn"}}).json()
    assert client.get(f"/v1/sweeps/{job['id']}").status_code == 404
    sweep = client.post("/v1/sweeps", json={"spec": sweep_spec()}).json()
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").json()["state"] == "CANCELLED"

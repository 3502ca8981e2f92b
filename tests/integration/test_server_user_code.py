"""The server never imports user code (a real server process over REST, a real Ray head).

Two modules that write a marker file when imported sit where the server could import
them: one in the folder the server was started from, one on its PYTHONPATH. Specs naming
them (and `this:X`, whose import prints the Zen of Python) are validated, accepted or
refused, and dispatched; neither marker ever appears, and the real runner fails the job at
once, naming the `workload` field, where the module cannot be imported.
"""
from __future__ import annotations

import os
import sys
import time

import httpx
import pytest

from trainyard.local.processes import free_port, start_process, stop_process
from trainyard.local.stack import server_command

pytestmark = pytest.mark.integration

SIDE_EFFECT = '''
import pathlib
pathlib.Path(__file__).with_suffix(".imported").write_text("imported")
from trainyard.workload import Workload
WORKLOAD = Workload(name="marked", build_models=dict, build_datasets=tuple, evaluate=dict, predictor=dict,
                    metric="score", mode="max", metrics=("score",))
'''

META = {"name": "marked", "metric": "score", "mode": "max", "metrics": ["score"],
        "search_space": {"training.lr": {"choice": [0.01, 0.02]}}}


@pytest.fixture(scope="module")
def user_server(test_root, ray_head):
    root = test_root / "user-code"
    launch, lib, home = root / "launch", root / "lib", root / "home"
    for folder in (launch, lib, home):
        folder.mkdir(parents=True, exist_ok=True)
    (launch / "ty_cwd_marked.py").write_text(SIDE_EFFECT)
    (lib / "ty_lib_marked.py").write_text(SIDE_EFFECT)
    (home / "ray.token").write_text(ray_head.token + "\n")
    token = "user-code-token-" + os.urandom(4).hex()
    (home / "admin.token").write_text(token + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"TRAINYARD_HOME": str(home), "TRAINYARD_RAY_DASHBOARD_URL": ray_head.dashboard_url,
           "TRAINYARD_RAY_TOKEN_FILE": str(home / "ray.token"),
           "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
           "TRAINYARD_MLFLOW_URI": "http://127.0.0.1:1", "TRAINYARD_POLL_INTERVAL_S": "0.3",
           # the real runner, with this Python (the session's head has no venv on its PATH)
           "TRAINYARD_RUNNER_ENTRYPOINT": f"{sys.executable} -m trainyard.runner job --job-id {{job_id}}",
           "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(lib)]).strip(os.pathsep)}
    here = os.getcwd()
    os.chdir(launch)  # the server starts where the user's files are, as `trainyard up` would
    try:
        proc = start_process("server", server_command(port), url=url, health_url=f"{url}/healthz",
                             log_file=root / "server.log", env=env, timeout=60)
    finally:
        os.chdir(here)
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield client, root
    finally:
        client.close()
        stop_process(proc.pid)


def _markers(root):
    return sorted(p.name for p in root.rglob("*.imported"))


def test_specs_naming_user_modules_never_run_them_on_the_server(user_server):
    client, root = user_server
    accepted = []
    for ref in ("ty_cwd_marked:WORKLOAD", "ty_lib_marked:WORKLOAD", "this:X"):
        resp = client.post("/v1/jobs", json={"spec": {"name": "user-code", "workload": ref,
                                                      "training": {"max_steps": 1}}})
        assert resp.status_code == 201, resp.text  # syntax only: the runner checks the rest
        accepted.append(resp.json()["id"])
    sweep = client.post("/v1/sweeps", json={"spec": {"name": "user-sweep", "workload": "ty_lib_marked:WORKLOAD",
                                                     "sweep": {"num_trials": 2}},
                                            "workload_meta": META})
    assert sweep.status_code == 201, sweep.text
    assert sweep.json()["spec"]["sweep"]["search_space"] is None  # the default came from the metadata
    refused = {
        "workload": client.post("/v1/jobs", json={"spec": {"name": "bad", "workload": "../../etc:passwd"}}),
        "workload_meta.mode": client.post("/v1/jobs", json={"spec": {"name": "bad", "workload": "ty_lib_marked:W"},
                                                            "workload_meta": {**META, "mode": "up"}}),
        "sweep.search_space": client.post("/v1/sweeps", json={"spec": {"name": "bad",
                                                                       "workload": "ty_lib_marked:WORKLOAD"}}),
    }
    for field, resp in refused.items():
        assert resp.status_code == 422, resp.text
        assert resp.json()["issues"][0]["field"] == field
    # the real runner is the first to import the module, and fails the job at once, naming the field
    deadline = time.monotonic() + 120
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{accepted[1]}").json()
        if job["state"] in ("FAILED", "SUCCEEDED", "CANCELLED"):
            break
        time.sleep(0.5)
    assert job["state"] == "FAILED", job
    assert "workload: cannot import module 'ty_lib_marked'" in str(job.get("message") or job.get("error")), job
    for job_id in accepted + [sweep.json()["id"]]:
        client.post(f"/v1/jobs/{job_id}/cancel")
    assert _markers(root) == []
    log = (root / "server.log").read_text()
    assert "Beautiful is better than ugly" not in log

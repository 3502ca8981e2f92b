"""The whole flow, driven through the `trainyard` command as a user would.

    trainyard up  ->  jobs submit SPEC --wait  ->  jobs list / show / logs  ->  trainyard down

against a real local stack (Ray head, MLflow server, Trainyard server) in a temp
TRAINYARD_HOME. The job is a short CNN spec written here, so the module stays quick.
Tests run in file order and share one stack; the last one stops it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SHORT_SPEC = """\
# a few steps of the demo job: enough to see progress, metrics, MLflow and logs
name: e2e-cnn
workload: cnn
resources:
  workers: 2
  cpus_per_worker: 1
deepspeed:
  zero_stage: 2
training:
  epochs: 1
  max_steps: 12
  batch_size: 32
  lr: 0.003
  log_every_steps: 2
tracking:
  experiment: e2e
env:
  E2E_API_KEY: e2e-env-secret-4711
"""
ENV_SECRET = "e2e-env-secret-4711"

BAD_SPEC = SHORT_SPEC.replace("workers: 2", "workers: 0")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "trainyard"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trainyard.cli.main"]


class Cli:
    """Runs `trainyard ...` in a subprocess; keeps every output to check for secrets."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env["TRAINYARD_HOME"] = str(home)
        # the store's key comes from the home (secret.key), as for a user
        for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN", "TRAINYARD_ADMIN_TOKEN_FILE", "TRAINYARD_SECRET_KEY"):
            self.env.pop(var, None)
        self.outputs: list[str] = []

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([*_cli(), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        self.outputs.append(proc.stdout + proc.stderr)
        return proc


def _report(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    missing = [m for m in ("trainyard.api", "trainyard.sdk", "trainyard.runner")
               if __import__("importlib").util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not in this install yet: {', '.join(missing)}")
    home = tmp_path_factory.mktemp("e2e") / "home"
    cli = Cli(home)
    first = cli("up", "--num-cpus", "2")
    try:
        assert first.returncode == 0, _report(first)
        cli.first_up = first
        yield cli
    finally:
        cli("down")
        if sys.exc_info()[0] is None:
            shutil.rmtree(home, ignore_errors=True)


def test_up_reports_every_component_and_is_idempotent(stack):
    out = stack.first_up.stdout
    for label in ("ray (dashboard)", "mlflow", "trainyard server"):
        assert label in out
    assert len(re.findall(r"http://127\.0\.0\.1:\d+", out)) >= 3
    for name in ("admin.token", "ray.token"):
        assert (stack.home / name).stat().st_mode & 0o777 == 0o600
    before = json.loads((stack.home / "stack.json").read_text())

    again = stack("up", "--num-cpus", "2")
    assert again.returncode == 0, _report(again)
    assert "already running; nothing changed" in again.stdout
    after = json.loads((stack.home / "stack.json").read_text())
    assert [after[c].get("pid") for c in ("mlflow", "server")] == [before[c].get("pid") for c in ("mlflow", "server")]
    assert after["ray"]["gcs_port"] == before["ray"]["gcs_port"]
    assert after["server"]["url"] == before["server"]["url"]


def _not_private(home: Path) -> list[str]:
    """Everything under the home that another local user could read (or enter)."""
    home_mode = home.stat().st_mode & 0o777
    bad = [f"{home} {home_mode:o}"] if home_mode != 0o700 else []
    for path in home.rglob("*"):
        try:
            mode = path.lstat().st_mode & 0o777
        except FileNotFoundError:
            continue
        if not path.is_symlink() and mode & 0o077:
            bad.append(f"{path.relative_to(home)} {mode:o}")
    return bad


def test_home_is_private_after_up(stack):
    assert _not_private(stack.home) == []
    for name in ("trainyard.db", "stack.json", "mlflow.password", "secret.key", "logs/server.log"):
        assert (stack.home / name).exists(), name


def _stack_processes(home: Path) -> list:
    import psutil

    from trainyard.local.processes import ray_head_processes

    state = json.loads((home / "stack.json").read_text())
    procs = ray_head_processes(state["ray"])
    for name in ("mlflow", "server"):
        leader = psutil.Process(state[name]["pid"])
        procs += [leader, *leader.children(recursive=True)]
    return procs


def test_local_services_listen_on_loopback_only(stack):
    from trainyard.local.processes import listening_sockets

    sockets = listening_sockets(_stack_processes(stack.home))
    names = {name for _, name, _, _ in sockets}
    assert {"gcs_server", "raylet"} <= names, sockets  # the scan sees Ray's own servers
    assert [s for s in sockets if s[2] not in LOOPBACK] == []


def test_mlflow_refuses_anonymous_writes(stack):
    import httpx

    url = json.loads((stack.home / "stack.json").read_text())["mlflow"]["url"]
    create = f"{url}/api/2.0/mlflow/experiments/create"
    anonymous = httpx.post(create, json={"name": "anonymous-write"}, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    password = (stack.home / "mlflow.password").read_text().strip()
    authed = httpx.post(create, json={"name": "authenticated-write"}, auth=("trainyard", password), timeout=30)
    assert authed.status_code == 200, authed.text


def test_status_says_what_runs_where(stack):
    proc = stack("status", "--json")
    assert proc.returncode == 0, _report(proc)
    data = json.loads(proc.stdout)
    assert data["up"] is True
    assert {c["name"] for c in data["components"] if c["healthy"]} == {"ray", "mlflow", "server"}


def test_a_taken_port_fails_clearly_with_exit_6(stack, tmp_path):
    other = Cli(tmp_path / "other-home")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        proc = other("up", "--port", str(port), timeout=120)
    assert proc.returncode == 6, _report(proc)
    assert f"port {port} is already in use" in proc.stderr and "--port" in proc.stderr
    state = json.loads((other.home / "stack.json").read_text()) if (other.home / "stack.json").exists() else {}
    assert not any(k in state for k in ("ray", "mlflow", "server")), "nothing may start"


def test_bad_spec_exits_2_and_creates_no_job(stack, tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    proc = stack("jobs", "submit", str(spec), "--wait")
    assert proc.returncode == 2, _report(proc)
    assert "resources.workers: must be >= 1, got 0" in proc.stderr
    listed = stack("jobs", "list", "--json")
    assert listed.returncode == 0, _report(listed)
    assert [j for j in json.loads(listed.stdout) if j.get("name") == "e2e-cnn"] == []


def test_submit_wait_trains_and_reports_accuracy(stack, tmp_path):
    spec = tmp_path / "short.yaml"
    spec.write_text(SHORT_SPEC)
    proc = stack("jobs", "submit", str(spec), "--wait", timeout=900)
    assert proc.returncode == 0, _report(proc)
    assert "SUCCEEDED" in proc.stdout
    assert re.search(r"accuracy\s*│?\s*[01]\.\d{4}", proc.stdout), proc.stdout
    assert re.search(r"MLflow run: http://127\.0\.0\.1:\d+/#/experiments/\d+/runs/[0-9a-f]+", proc.stdout), proc.stdout
    job_id = re.search(r"Submitted job (\S+)", proc.stdout).group(1)
    stack.job_id = job_id

    listed = stack("jobs", "list", "--json")
    assert listed.returncode == 0, _report(listed)
    jobs = {j["id"]: j for j in json.loads(listed.stdout)}
    assert jobs[job_id]["state"] == "SUCCEEDED"
    table = stack("jobs", "list")
    assert job_id in table.stdout and "SUCCEEDED" in table.stdout

    shown = stack("jobs", "show", job_id)
    assert shown.returncode == 0, _report(shown)
    assert "accuracy" in shown.stdout and "SUCCEEDED" in shown.stdout

    logs = stack("jobs", "logs", job_id)
    assert logs.returncode == 0, _report(logs)
    assert "TRAINYARD_RESULT" in logs.stdout

    missing = stack("jobs", "show", "no-such-job")
    assert missing.returncode == 3, _report(missing)


def test_after_the_first_job_the_home_is_private_and_holds_no_plain_secret(stack):
    assert getattr(stack, "job_id", None), "needs the job of the test above"
    assert _not_private(stack.home) == []
    for name in ("trainyard.db", "trainyard.db-wal", "logs/server.log"):
        path = stack.home / name
        if path.exists():
            assert ENV_SECRET.encode() not in path.read_bytes(), name
    shown = stack("jobs", "show", stack.job_id, "--json")
    assert shown.returncode == 0 and ENV_SECRET not in shown.stdout


def test_no_command_ever_printed_a_token(stack):
    secrets = [(stack.home / n).read_text().strip() for n in ("admin.token", "ray.token", "mlflow.password")]
    secrets.append(ENV_SECRET)
    for output in stack.outputs:
        for secret in secrets:
            assert secret not in output


def test_down_stops_everything_and_is_idempotent(stack):
    from trainyard.local.stack import ray_temp_dir

    state = json.loads((stack.home / "stack.json").read_text())
    proc = stack("down")
    assert proc.returncode == 0, _report(proc)
    assert "Stopped" in proc.stdout
    for comp in ("mlflow", "server"):
        assert not Path(f"/proc/{state[comp]['pid']}").exists() or \
            Path(f"/proc/{state[comp]['pid']}/stat").read_text().split(")")[-1].split()[0] == "Z"
    temp_dir = ray_temp_dir(stack.home)
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, temp_dir)]
    assert leftovers == []
    status = stack("status")
    assert status.returncode == 4, _report(status)
    again = stack("down")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def _cmdline_has(proc_dir: Path, needle: str) -> bool:
    try:
        return needle in (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False

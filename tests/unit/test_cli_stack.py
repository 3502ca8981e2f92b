"""trainyard.local.stack without Ray or MLflow: ports, health, idempotence, down.

A tiny HTTP server stands in for the three components' health endpoints, so that the
decisions of `up` (leave alone, refuse, restart) are checked in milliseconds; the e2e
test starts the real ones.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from trainyard import config, errors
from trainyard.local import stack


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):  # /health, /healthz, /api/version: all fine
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_stack(trainyard_home):
    """stack.json describing a healthy stack whose components are one tiny HTTP server."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    state = {
        "version": 1, "home": str(trainyard_home.resolve()),
        "ray": {"temp_dir": "/tmp/trainyard-unit-none", "gcs_port": port, "dashboard_port": port,
                "dashboard_url": url, "client_port": None, "num_cpus": 2},
        "mlflow": {"name": "mlflow", "pid": _sleeper(), "url": url, "port": port, "log_file": ""},
        "server": {"name": "server", "pid": _sleeper(), "url": url, "port": port, "log_file": ""},
    }
    state["server"]["env"] = stack._server_env(trainyard_home.resolve(), mlflow_url=url, dashboard_url=url)
    trainyard_home.mkdir(parents=True, exist_ok=True)
    config.stack_file().write_text(json.dumps(state))
    yield state
    server.shutdown()
    for name in ("mlflow", "server"):
        subprocess.run(["kill", "-9", str(state[name]["pid"])], capture_output=True)


def _sleeper() -> int:
    # the marks `down` checks before it signals a recorded PID
    pid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mlflow", "trainyard.api"],
                           start_new_session=True).pid
    # Popen returns once the kernel let go of the parent, which is before the new program's
    # arguments show in /proc: `down` right then read an empty command line, took the PID for
    # someone else's and left it running (a CI failure under load). A recorded process has
    # long been running when `down` looks at it.
    deadline = time.monotonic() + 10
    while "trainyard.api" not in " ".join(psutil.Process(pid).cmdline()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def test_status_of_a_healthy_stack(fake_stack):
    comps = {c.name: c for c in stack.status()}
    assert all(c.healthy for c in comps.values())
    assert comps["server"].address == fake_stack["server"]["url"]
    assert stack.is_up()


def test_up_on_a_healthy_stack_changes_nothing(fake_stack):
    before = config.stack_file().read_text()
    comps = stack.up()
    assert [c.action for c in comps] == ["running", "running", "running"]
    assert json.loads(config.stack_file().read_text()) == json.loads(before)


def test_up_refuses_to_move_a_running_component(fake_stack):
    other = fake_stack["server"]["port"] + 1
    with pytest.raises(errors.ConflictError) as exc:
        stack.up(port=other)
    assert exc.value.exit_code == errors.EXIT_CONFLICT
    assert exc.value.field == "--port" and "already runs on port" in str(exc.value)
    with pytest.raises(errors.ConflictError, match="--num-cpus"):
        stack.up(num_cpus=1)
    with pytest.raises(errors.ConflictError, match="--autoscaling"):
        stack.up(autoscaling=True)


def test_the_same_ports_again_are_fine(fake_stack):
    port = fake_stack["server"]["port"]
    comps = stack.up(port=port, mlflow_port=port, dashboard_port=port, num_cpus=2)
    assert {c.action for c in comps} == {"running"}


def test_status_names_what_is_wrong(trainyard_home):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trainyard_home.mkdir(parents=True)
    config.stack_file().write_text(json.dumps({
        "server": {"pid": dead.pid, "url": "http://127.0.0.1:9", "port": 9},
        "mlflow": {"pid": _sleeper_dead_url(), "url": "http://127.0.0.1:9", "port": 9},
    }))
    comps = {c.name: c for c in stack.status()}
    assert not comps["server"].healthy and f"process {dead.pid} is gone" in comps["server"].detail
    assert not comps["mlflow"].healthy and "/health" in comps["mlflow"].detail
    assert comps["ray"].detail == "not started"
    assert not stack.is_up()


def _sleeper_dead_url() -> int:
    pid = _sleeper()
    _sleeper_dead_url.pids.append(pid)
    return pid


_sleeper_dead_url.pids = []


@pytest.fixture(autouse=True)
def _reap():
    yield
    while _sleeper_dead_url.pids:
        subprocess.run(["kill", "-9", str(_sleeper_dead_url.pids.pop())], capture_output=True)


def test_down_stops_the_recorded_processes_and_is_idempotent(fake_stack):
    pids = [fake_stack[n]["pid"] for n in ("mlflow", "server")]
    assert stack.down() == ["server", "mlflow", "ray"]
    for pid in pids:
        assert not stack._pid_alive(pid)
    assert not config.stack_file().exists()
    assert stack.down() == []


def test_pick_port(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        monkeypatch.setitem(stack.DEFAULT_PORTS, "server", busy)
        # default taken, nothing asked: any free port, said so by the CLI
        chosen = stack._pick_port("server", None, None, flag="--port")
        assert chosen != busy and not stack.port_in_use(chosen)
        # a previous port that is free again is reused, so addresses stay stable
        assert stack._pick_port("server", None, chosen, flag="--port") == chosen
        # asked for and taken: conflict, exit 6, naming the flag and the fix
        with pytest.raises(errors.ConflictError) as exc:
            stack._pick_port("server", busy, None, flag="--port")
        assert exc.value.exit_code == 6 and exc.value.field == "--port"
        assert "leave --port out" in str(exc.value)
    with pytest.raises(errors.StackError, match="between 1 and 65535"):
        stack._pick_port("server", 70000, None, flag="--port")


def test_a_retry_moves_off_a_port_taken_meanwhile_unless_the_user_chose_it():
    """Two `trainyard up` on one machine can both find the default dashboard port free and
    race for it: the loser's retry takes another port, never the one the user asked for."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        moved = stack._port_for_retry(None, busy)
        assert moved != busy and not stack.port_in_use(moved)
        assert stack._port_for_retry(busy, busy) == busy  # asked for: the next failure names it
    assert stack._port_for_retry(None, busy) == busy  # free again: the address stays stable


def test_mlflow_run_url():
    assert stack.mlflow_run_url("http://h:5000/", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc"
    assert stack.mlflow_run_url("http://h:5000", None, "abc") == "http://h:5000/#/runs/abc"
    assert stack.mlflow_run_url("http://h:5000", "3", None) is None


def test_autoscaling_config_names_the_gcs_address(trainyard_home):
    pytest.importorskip("trainyard.local.autoscaling")
    import yaml

    path = stack._autoscaling_config(trainyard_home, 61234, 2)
    cfg = yaml.safe_load(open(path))
    assert cfg["provider"]["gcs_address"] == "127.0.0.1:61234"
    assert path.startswith(str(trainyard_home / "cluster"))


def test_files_an_older_version_left_readable_become_private(trainyard_home):
    (trainyard_home / "logs").mkdir(parents=True)
    for name in ("trainyard.db", "trainyard.db-wal", "logs/server.log"):
        (trainyard_home / name).write_text("x")
        (trainyard_home / name).chmod(0o644)
    trainyard_home.chmod(0o755)
    config.ensure_home()
    stack._make_private(trainyard_home)
    assert trainyard_home.stat().st_mode & 0o777 == 0o700
    for name in ("trainyard.db", "trainyard.db-wal", "logs/server.log", "logs"):
        assert (trainyard_home / name).stat().st_mode & 0o077 == 0, name

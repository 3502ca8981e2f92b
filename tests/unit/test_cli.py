"""The `trainyard` CLI without a server: parsing, exit codes, spec errors, secrets.

The SDK client is replaced by a fake (these are unit tests); the e2e test drives the
real stack through the same commands.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainyard import apitypes as T
from trainyard import errors, redact
from trainyard.cli import _ui
from trainyard.cli import main as cli

from api_views import job_item, job_view

REPO = Path(__file__).resolve().parents[2]

GOOD_SPEC = """\
name: tiny
workload: cnn
resources: {workers: 1}
training: {epochs: 1, max_steps: 5}
"""


@pytest.fixture(autouse=True)
def _home(trainyard_home):
    redact.clear()
    yield trainyard_home


class FakeClient:
    """Records calls; answers like the SDK does (the API's models)."""

    def __init__(self, *, fail: Exception | None = None, final_state: str = "SUCCEEDED"):
        self.fail = fail
        self.final_state = final_state
        self.calls: list[tuple] = []

    def _maybe_fail(self):
        if self.fail is not None:
            raise self.fail

    def submit_job(self, spec, working_dir=None):
        self.calls.append(("submit_job", spec, working_dir))
        self._maybe_fail()
        return job_view(name=spec["name"])

    def validate_job(self, spec, working_dir=None, kind="job"):
        self.calls.append(("validate_job", spec, working_dir, kind))
        self._maybe_fail()
        return {"valid": True, "kind": kind, "project": "default", "spec": spec}

    def wait_job(self, job_id, on_progress=None):
        self._maybe_fail()
        for step in (1, 3, 5):
            on_progress(job_view(job_id, state="RUNNING", phase="RUNNING", progress={
                "step": step, "total_steps": 5, "epoch": 0, "metrics": {"loss": 1.0 / step}}))
        return self.get_job(job_id)

    def get_job(self, job_id):
        self._maybe_fail()
        return job_view(job_id, state=self.final_state, phase=self.final_state,
                        progress={"step": 5, "total_steps": 5, "epoch": 0, "metrics": {}},
                        metrics={"accuracy": 0.97, "eval_loss": 0.1}, mlflow_run_id="abc", mlflow_experiment_id="1",
                        result={"metrics": {"accuracy": 0.97, "eval_loss": 0.1}, "model_name": "tiny",
                                "model_version": "1"},
                        message="boom" if self.final_state == "FAILED" else None)

    def list_jobs(self):
        self._maybe_fail()
        job = self.get_job("tiny-1")
        return [job_item(**job.model_dump(exclude={"id", "progress", "result", "spec", "events"}))]

    def job_logs(self, job_id, offset=0):
        self._maybe_fail()
        return "line one\nline two\n"[offset:]

    def cancel_job(self, job_id):
        self._maybe_fail()
        return job_view(job_id, state="CANCELLED", phase="CANCELLED")

    def status(self):
        return T.Status.model_validate({
            "server": {"version": "0.1.0", "uptime_s": 1.0, "db": "sqlite", "mlflow_uri": "http://mlflow.example:5000",
                       "storage": ""},
            "clusters": [], "jobs": {},
            "controller": {"ticks": 0, "last_tick_at": None, "last_error": None, "poll_interval_s": 1.0,
                           "autoscaler_demand": {}, "queue": {
                               "pending": 0, "active": 0, "plans": 0, "skipped": 0, "scans": 0, "rows_read": 0,
                               "notes_written": 0, "last_plan_ms": None, "last_dispatch_ms": None}}})

    def list_clusters(self):
        self._maybe_fail()
        return [T.Cluster(name="local", address="http://127.0.0.1:8265", auth="token", token_file=None, reachable=True,
                          nodes=1, resources_total={"CPU": 2.0}, resources_free={"CPU": 1.0}, max_resources=None,
                          last_seen_at=None, last_error=None, created_at=None)]

    def add_cluster(self, name, *, address, token=None):
        self.calls.append(("add_cluster", name, address, token))
        self._maybe_fail()

    def remove_cluster(self, name):
        self._maybe_fail()


@pytest.fixture()
def fake(monkeypatch):
    client = FakeClient()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    return client


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- parsing & help


@pytest.mark.parametrize("argv", [
    [], ["up"], ["down"], ["status"], ["version"], ["jobs"], ["jobs", "submit"], ["jobs", "list"],
    ["jobs", "show"], ["jobs", "logs"], ["jobs", "cancel"], ["clusters"], ["clusters", "list"],
    ["clusters", "add"], ["clusters", "remove"],
])
def test_every_command_has_help_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_parsing_of_the_main_commands():
    parser = cli.build_parser()
    args = parser.parse_args(["jobs", "submit", "x.yaml", "--wait"])
    assert (args.noun, args.verb, args.spec, args.wait) == ("jobs", "submit", "x.yaml", True)
    args = parser.parse_args(["up", "--port", "9000", "--mlflow-port", "5050", "--dashboard-port", "8300"])
    assert (args.port, args.mlflow_port, args.dashboard_port, args.autoscaling) == (9000, 5050, 8300, False)
    args = parser.parse_args(["jobs", "logs", "j1", "-f"])
    assert args.follow and args.job_id == "j1"
    args = parser.parse_args(["clusters", "add", "gpu", "--address", "http://h:8265", "--token-file", "t"])
    assert (args.name, args.address, args.token_file) == ("gpu", "http://h:8265", "t")


@pytest.mark.parametrize("argv", [["jobs"], ["nope"], ["up", "--port", "abc"],
                                  ["clusters", "add", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == errors.EXIT_USAGE


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert "trainyard 0.1.0" in capsys.readouterr().out


def test_console_script_runs_without_torch():
    # the CLI is control plane: `trainyard --help` must not pay for torch
    code = ("import sys; from trainyard.cli.main import build_parser; build_parser(); "
            "import trainyard.cli._ui, trainyard.local.stack; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------------------------- submit


def test_bad_spec_exits_2_with_field_value_and_nothing_submitted(tmp_path, fake, capsys):
    spec = write(tmp_path, GOOD_SPEC.replace("workers: 1", "workers: 0"))
    assert cli.main(["jobs", "submit", str(spec)]) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert "resources.workers: must be >= 1, got 0" in err
    assert fake.calls == []


def test_unknown_key_suggests_the_right_one(tmp_path, fake, capsys):
    spec = write(tmp_path, GOOD_SPEC + "ressources: {}\n")
    assert cli.main(["jobs", "submit", str(spec)]) == errors.EXIT_USAGE
    assert "did you mean 'resources'" in capsys.readouterr().err


def test_unknown_workload_and_missing_file(tmp_path, fake, capsys):
    spec = write(tmp_path, GOOD_SPEC.replace("workload: cnn", "workload: cnnn"))
    assert cli.main(["jobs", "submit", str(spec)]) == errors.EXIT_USAGE
    assert "cnnn" in capsys.readouterr().err
    assert cli.main(["jobs", "submit", str(tmp_path / "absent.yaml")]) == errors.EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    assert fake.calls == []


def test_malformed_yaml_exits_2(tmp_path, fake, capsys):
    spec = write(tmp_path, "name: [unclosed\n")
    assert cli.main(["jobs", "submit", str(spec)]) == errors.EXIT_USAGE
    assert "malformed YAML" in capsys.readouterr().err


def test_working_dir_is_resolved_against_the_spec_file(tmp_path, fake):
    (tmp_path / "code").mkdir()
    spec = write(tmp_path, GOOD_SPEC + "working_dir: code\n")
    assert cli.main(["jobs", "submit", str(spec)]) == 0
    assert fake.calls[0][2] == str((tmp_path / "code").resolve())


def test_missing_working_dir_is_a_spec_error(tmp_path, fake, capsys):
    spec = write(tmp_path, GOOD_SPEC + "working_dir: nowhere\n")
    assert cli.main(["jobs", "submit", str(spec)]) == errors.EXIT_USAGE
    assert "working_dir" in capsys.readouterr().err
    assert fake.calls == []


def test_dry_run_validates_without_a_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_client", lambda args: pytest.fail("dry run must not call the server"))
    assert cli.main(["jobs", "submit", str(write(tmp_path, GOOD_SPEC)), "--dry-run"]) == 0
    assert "valid job spec 'tiny'" in capsys.readouterr().out


def test_dry_run_can_ask_the_server_and_shows_its_refusal(tmp_path, fake, capsys):
    spec = str(write(tmp_path, GOOD_SPEC))
    assert cli.main(["jobs", "submit", spec, "--dry-run", "--check-server"]) == 0
    assert "accepted by the server" in capsys.readouterr().out
    assert [c[0] for c in fake.calls] == ["validate_job"] and fake.calls[0][3] == "job"
    fake.fail = errors.CapacityError("needs 8 CPUs in total but the largest cluster, 'local', has 2",
                                     field="resources.workers")
    assert cli.main(["jobs", "submit", spec, "--dry-run", "--check-server"]) == errors.EXIT_USAGE
    assert "resources.workers" in capsys.readouterr().err
    assert all(c[0] == "validate_job" for c in fake.calls)
    calls = len(fake.calls)
    assert cli.main(["jobs", "submit", spec, "--check-server"]) == errors.EXIT_USAGE  # alone it would submit
    assert "--dry-run" in capsys.readouterr().err and len(fake.calls) == calls


def test_examples_are_valid(capsys):
    import yaml

    from trainyard.specs import JobSpec

    checked = 0
    for spec in sorted((REPO / "examples").glob("*.yaml")):
        if set(yaml.safe_load(spec.read_text())) - set(JobSpec.model_fields):
            continue  # sweeps and endpoints have their own commands
        checked += 1
        assert cli.main(["jobs", "submit", str(spec), "--dry-run"]) == 0, capsys.readouterr().err
    assert checked >= 1


def test_submit_wait_succeeded_prints_metrics_and_mlflow_url(tmp_path, fake, capsys):
    assert cli.main(["jobs", "submit", str(write(tmp_path, GOOD_SPEC)), "--wait"]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "accuracy" in out and "0.9700" in out
    assert "http://mlflow.example:5000/#/experiments/1/runs/abc" in out


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED"])
def test_submit_wait_exits_1_when_the_job_does_not_succeed(tmp_path, fake, capsys, state):
    fake.final_state = state
    assert cli.main(["jobs", "submit", str(write(tmp_path, GOOD_SPEC)), "--wait"]) == errors.EXIT_FAILED
    assert state in capsys.readouterr().out


# ----------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize("exc, code", [
    (errors.NotFoundError("job", "nope"), errors.EXIT_NOT_FOUND),
    (errors.AuthError("bad token"), errors.EXIT_AUTH),
    (errors.ClusterError("server unreachable"), errors.EXIT_UNREACHABLE),
    (errors.ConflictError("job already finished"), errors.EXIT_CONFLICT),
    (errors.SpecError("bad", field="x"), errors.EXIT_USAGE),
])
def test_sdk_errors_map_to_exit_codes(monkeypatch, capsys, exc, code):
    client = FakeClient(fail=exc)
    monkeypatch.setattr(cli, "_client", lambda args: client)
    for argv in (["jobs", "show", "nope"], ["jobs", "cancel", "nope"], ["jobs", "list"],
                 ["jobs", "logs", "nope"], ["clusters", "list"]):
        assert cli.main(argv) == code, argv
    assert "error:" in capsys.readouterr().err


def test_list_show_logs_cancel(fake, capsys):
    assert cli.main(["jobs", "list"]) == 0
    assert "tiny-1" in capsys.readouterr().out
    assert cli.main(["jobs", "show", "tiny-1"]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "accuracy" in out
    assert cli.main(["jobs", "logs", "tiny-1"]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert cli.main(["jobs", "logs", "tiny-1", "-f"]) == 0
    assert capsys.readouterr().out == "line one\nline two\n"
    assert cli.main(["jobs", "cancel", "tiny-1"]) == 0
    assert "CANCELLED" in capsys.readouterr().out


# ----------------------------------------------------------------------------- secrets


def test_token_never_printed_even_in_errors(trainyard_home, monkeypatch, capsys):
    from trainyard import config

    token = config.ensure_secret(trainyard_home / "admin.token")
    client = FakeClient(fail=errors.AuthError(f"token {token} was refused"))
    monkeypatch.setattr(cli, "_client", lambda args: client)
    assert cli.main(["jobs", "list"]) == errors.EXIT_AUTH
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err
    assert "***" in captured.err


def test_cluster_token_file_is_sent_not_printed(tmp_path, fake, capsys):
    token_file = write(tmp_path, "s3cr3t-cluster-token\n", "ray.token")
    assert cli.main(["clusters", "add", "gpu", "--address", "http://h:8265",
                     "--token-file", str(token_file)]) == 0
    assert fake.calls[-1] == ("add_cluster", "gpu", "http://h:8265", "s3cr3t-cluster-token")
    captured = capsys.readouterr()
    assert "s3cr3t" not in captured.out + captured.err


def test_cluster_token_file_missing_exits_2(tmp_path, fake, capsys):
    assert cli.main(["clusters", "add", "gpu", "--address", "http://h:8265",
                     "--token-file", str(tmp_path / "nope")]) == errors.EXIT_USAGE
    assert "--token-file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stack (no processes)


def test_status_without_a_stack_exits_4(capsys):
    assert cli.main(["status"]) == errors.EXIT_UNREACHABLE
    assert "not running" in capsys.readouterr().out


def test_down_without_a_stack_is_a_no_op(capsys):
    assert cli.main(["down"]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_up_with_a_taken_port_exits_6_before_starting_anything(trainyard_home, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        assert cli.main(["up", "--port", str(port)]) == errors.EXIT_CONFLICT
    err = capsys.readouterr().err
    assert f"--port: port {port} is already in use" in err
    from trainyard import config

    assert not any(k in config.read_stack() for k in ("ray", "mlflow", "server"))


def test_ray_temp_dir_is_short_and_per_home(tmp_path):
    from trainyard.local.stack import ray_temp_dir

    a, b = ray_temp_dir(tmp_path / "a" / ("x" * 200)), ray_temp_dir(tmp_path / "b")
    assert a != b and len(a) < 40 and a.startswith("/tmp/trainyard-")

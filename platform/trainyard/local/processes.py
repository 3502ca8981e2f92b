"""Start and stop the local stack's processes, each on its own ports, none shared.

Used by `trainyard up/down` and by the test fixtures, so that tests exercise the same
code users run. Every Ray head gets its own temp dir, its own ports and its own auth
token: several can run side by side on one machine, and stopping one never touches
another (no `ray stop`, which kills every Ray process of the user).

Everything listens on 127.0.0.1 only: `ray start --node-ip-address 127.0.0.1` alone still
resolves the node's address to the machine's public one on Linux, and the GCS, the raylet and
the metrics servers then bind to every interface; see `_LOOPBACK_ENV`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import tenacity

from trainyard.errors import StackError

__all__ = [
    "free_port", "port_in_use", "wait_http", "RayHead", "start_ray_head", "stop_ray_head",
    "ManagedProcess", "start_process", "stop_process", "start_mlflow", "venv_bin",
    "MlflowAuth", "listening_sockets", "ray_head_processes",
]

# Ray treats the node as a single-machine cluster (the Windows/macOS default): the node's
# address stays the loopback one we give, so the GCS, raylet, object manager, agents, workers
# and the metrics servers bind to 127.0.0.1 instead of all interfaces. A driver that connects
# by the GCS address needs it too (RayHead.env()), or Ray sends it to the public address.
_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def venv_bin(name: str) -> str:
    """Path of a console script installed beside this interpreter."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class _NotAnswering(Exception):
    """The service has not answered yet (retried until the deadline)."""


def wait_http(url: str, *, timeout: float = 60.0, headers: dict | None = None,
              ok=(200,), proc: subprocess.Popen | None = None, what: str = "service") -> None:
    """Poll `url` until it answers with a status in `ok`; a `proc` that exits first fails at once."""

    def probe() -> None:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode} before answering at {url}",
                             fix="see its log file")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status in ok:
                    return
                raise _NotAnswering(f"HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
            raise _NotAnswering(f"HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _NotAnswering(str(getattr(exc, "reason", exc))) from None

    try:
        tenacity.Retrying(stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(0.25),
                          retry=tenacity.retry_if_exception_type(_NotAnswering), reraise=True)(probe)
    except _NotAnswering as exc:
        raise StackError(f"{what} did not answer at {url} within {timeout:.0f}s (last: {exc})",
                         fix="see its log file") from None


# ----------------------------------------------------------------------------- Ray


@dataclass
class RayHead:
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    client_port: int
    token: str = field(repr=False)
    host: str = "127.0.0.1"
    num_cpus: int | None = None

    @property
    def gcs_address(self) -> str:
        return f"{self.host}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.dashboard_port}"

    def env(self) -> dict[str, str]:
        """Environment for a process that talks to this head (ray.init, job clients).

        Set it before `import ray`: without _LOOPBACK_ENV, Ray rewrites the address
        127.0.0.1 to the machine's public one, where this head's GCS does not listen.
        """
        return {**_LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                "RAY_ADDRESS": self.gcs_address}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("token")
        return data


def start_ray_head(*, temp_dir: str | Path, token: str, num_cpus: int | None = None,
                   resources: dict | None = None, autoscaling_config: str | None = None,
                   dashboard_port: int | None = None, gcs_port: int | None = None,
                   env: dict | None = None, log_file: str | Path | None = None,
                   timeout: float = 90.0) -> RayHead:
    """`ray start --head` on private ports with token auth, waiting for the Jobs API."""
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    gcs_port = gcs_port or free_port()
    min_worker = 20000 + (gcs_port % 200) * 200
    if min_worker <= gcs_port < min_worker + 200:  # the GCS port is given: move the range
        min_worker = min_worker + 200 if min_worker < 59800 else 20000
    taken = {gcs_port} | ({dashboard_port} if dashboard_port else set())

    def pick() -> int:
        # Ray refuses to start when two components share a port, or one sits in the worker
        # range; the OS may hand the same free port out twice, since each probe releases it
        while True:
            port = free_port()
            if port not in taken and not min_worker <= port < min_worker + 200:
                taken.add(port)
                return port

    dashboard_port = dashboard_port or pick()
    ports = {name: pick() for name in (
        "node_manager", "object_manager", "client", "agent_listen", "agent_grpc",
        "runtime_env", "metrics", "autoscaler_metrics", "dashboard_metrics")}
    cmd = [
        venv_bin("ray"), "start", "--head", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs_port),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
        "--include-dashboard", "true",
        "--temp-dir", str(temp_dir),
        "--node-manager-port", str(ports["node_manager"]),
        "--object-manager-port", str(ports["object_manager"]),
        "--ray-client-server-port", str(ports["client"]),
        "--dashboard-agent-listen-port", str(ports["agent_listen"]),
        "--dashboard-agent-grpc-port", str(ports["agent_grpc"]),
        "--runtime-env-agent-port", str(ports["runtime_env"]),
        "--metrics-export-port", str(ports["metrics"]),
        "--min-worker-port", str(min_worker), "--max-worker-port", str(min_worker + 199),
    ]
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    if resources:
        cmd += ["--resources", json.dumps(resources)]
    if autoscaling_config:
        cmd += ["--autoscaling-config", str(autoscaling_config)]
    # every process of this cluster (the raylet's workers inherit its environment) finds this
    # cluster by RAY_ADDRESS: where several Ray clusters run on one machine, Ray's State API
    # refuses to guess ("Found multiple active Ray instances"), and Train's placement-group
    # cleaner, which asks it, would leak the placement groups of every trial Tune stops
    # the autoscaler's and dashboard's metrics servers have fixed default ports (44217,
    # 44227): a second head on the machine would lose them, so each head gets its own
    proc_env = {**os.environ, **(env or {}), **_LOOPBACK_ENV, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": token, "RAY_ADDRESS": f"127.0.0.1:{gcs_port}",
                "AUTOSCALER_METRIC_PORT": str(ports["autoscaler_metrics"]),
                "DASHBOARD_METRIC_PORT": str(ports["dashboard_metrics"])}
    if autoscaling_config:
        proc_env["RAY_FAKE_CLUSTER"] = "1"
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    head = RayHead(temp_dir=str(temp_dir), gcs_port=gcs_port, dashboard_port=dashboard_port,
                   client_port=ports["client"], token=token, num_cpus=num_cpus)
    try:
        result = subprocess.run(cmd, env=proc_env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        # `ray start` already spawned gcs/raylet/dashboard: stop them, or they outlive us
        stop_ray_head(head)
        raise StackError(f"`ray start --head` did not finish within {timeout:.0f}s",
                         fix=f"see {log_file}; the machine may be overloaded" if log_file
                         else "the machine may be overloaded") from None
    finally:
        if log_file:
            out.close()
    if result.returncode != 0:
        stop_ray_head(head)
        raise StackError(f"`ray start --head` failed with exit code {result.returncode}",
                         fix=f"see {log_file}" if log_file else "run it by hand to see why")
    wait_http(f"{head.dashboard_url}/api/version", headers=head.headers(), timeout=timeout,
              what="Ray dashboard")
    # the Jobs API answers only once the job agent is up; a cheap list call proves it
    wait_http(f"{head.dashboard_url}/api/jobs/", headers=head.headers(), timeout=timeout,
              what="Ray Jobs API")
    return head


def _processes_matching(needles: list[str]) -> list[psutil.Process]:
    # whole tokens only: "127.0.0.1:4123" must not match another head's "127.0.0.1:41234"
    pattern = re.compile("|".join(re.escape(n) + r"(?![\w-])" for n in needles if n))
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid == os.getpid():
            continue
        if pattern.search(" ".join(proc.info["cmdline"] or ())):
            found.append(proc)
    return found


def _head_needles(head: RayHead | dict) -> list[str]:
    if isinstance(head, dict):
        temp_dir, gcs_port, client_port = head["temp_dir"], head["gcs_port"], head.get("client_port")
    else:
        temp_dir, gcs_port, client_port = head.temp_dir, head.gcs_port, head.client_port
    needles = [str(temp_dir), f"127.0.0.1:{gcs_port}", f"--gcs-address=127.0.0.1:{gcs_port}"]
    if client_port:
        needles.append(f"--port={client_port}")
    return needles


def ray_head_processes(head: RayHead | dict) -> list[psutil.Process]:
    """The live processes of this head (GCS, raylet, dashboard, agents, workers, client server),
    with their children (the dashboard's module processes name neither the temp dir nor a port)."""
    procs = _processes_matching(_head_needles(head))
    for proc in list(procs):
        try:
            procs += [c for c in proc.children(recursive=True) if c not in procs]
        except psutil.Error:
            continue
    return [p for p in procs if _alive(p)]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _terminate(procs: list[psutil.Process], *, timeout: float) -> list[psutil.Process]:
    """SIGTERM, wait up to `timeout`, SIGKILL what is left; returns the survivors."""
    for sig_name in ("terminate", "kill"):
        for proc in procs:
            try:
                getattr(proc, sig_name)()
            except psutil.Error:
                pass
        _, procs = psutil.wait_procs(procs, timeout=timeout if sig_name == "terminate" else 5)
        procs = [p for p in procs if _alive(p)]
        if not procs:
            break
    return procs


# The GCS and the autoscaler monitor ignore SIGTERM (20+ s "flushing remaining events"); what
# they would flush lives in the head's temp dir, so waiting for them only delays the stop
RAY_STOP_GRACE_S = 3.0


def stop_ray_head(head: RayHead | dict, *, timeout: float = RAY_STOP_GRACE_S) -> int:
    """Stop only the processes of this head: found by its temp dir and its ports."""
    needles = _head_needles(head)
    # with their children, taken before any dies: the dashboard and runtime-env agents retitle
    # themselves (ray::DashboardAgent) and name neither the temp dir nor a port, and once the
    # raylet is gone they are init's and nobody's child any more: they outlived the head
    left = _terminate(ray_head_processes(head), timeout=timeout)
    # workers a dying raylet spawned meanwhile: once more, at once
    late = [p for p in _processes_matching(needles) if _alive(p) and p not in left]
    left += _terminate(late, timeout=1) if late else []
    return len(left)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def listening_sockets(procs: list[psutil.Process]) -> list[tuple[int, str, str, int]]:
    """(pid, name, address, port) of every TCP/UDP socket these processes listen on."""
    out = []
    for proc in procs:
        try:
            name = proc.name()
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
                    out.append((proc.pid, name, conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            continue
    return out


# ----------------------------------------------------------------------------- plain processes


@dataclass
class ManagedProcess:
    name: str
    pid: int
    url: str
    log_file: str

    def to_dict(self) -> dict:
        return asdict(self)


def start_process(name: str, cmd: list[str], *, url: str, health_url: str | None = None,
                  log_file: str | Path, env: dict | None = None, timeout: float = 90.0,
                  headers: dict | None = None, ok=(200,)) -> ManagedProcess:
    """Start a detached process (own session) and wait until `health_url` answers."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        wait_http(health_url or url, timeout=timeout, proc=proc, what=name, headers=headers, ok=ok)
    except StackError:
        stop_process(proc.pid)
        raise
    return ManagedProcess(name=name, pid=proc.pid, url=url, log_file=str(log_file))


def stop_process(pid: int, *, timeout: float = 15.0) -> None:
    """Stop the process and its children (its own session: start_process), TERM then KILL."""
    try:
        leader = psutil.Process(pid)
        procs = [leader, *leader.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    # children whose parent died were re-parented, but stay in the group start_process made
    procs += [p for p in psutil.process_iter() if p not in procs and _group_of(p.pid) == pid]
    if not procs:
        return
    _terminate(procs, timeout=timeout)
    try:  # our own child: reap it, or it stays a zombie until we exit
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class MlflowAuth:
    """The credentials of MLflow's basic-auth app (its admin user)."""

    username: str
    password: str = field(repr=False)

    def client_env(self) -> dict[str, str]:
        """What an MLflow client reads (the server's own clients, Ray jobs, Serve replicas)."""
        return {"MLFLOW_TRACKING_USERNAME": self.username, "MLFLOW_TRACKING_PASSWORD": self.password}


def _write_auth_config(root: Path, auth: MlflowAuth) -> Path:
    # the password stays out of the file: MLflow reads it from MLFLOW_AUTH_ADMIN_PASSWORD
    # when it creates the admin user in basic_auth.db, on first start
    path = root / "basic_auth.ini"
    text = ("[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
            f"admin_username = {auth.username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def start_mlflow(*, root: str | Path, port: int | None = None, artifacts: str | None = None,
                 backend_uri: str | None = None, log_file: str | Path | None = None,
                 timeout: float = 120.0, env: dict | None = None,
                 auth: MlflowAuth | None = None) -> ManagedProcess:
    """`mlflow server` with a SQLite backend (default) and proxied artifacts.

    With `auth`, MLflow's basic-auth app runs: every request but /health needs the
    credentials (clients: `auth.client_env()`), so nobody writes to the registry anonymously.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    backend_uri = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = artifacts or str(root / "artifacts")
    cmd = [venv_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend_uri, "--artifacts-destination", artifacts,
           "--workers", "1"]
    env = dict(env or {})
    if auth is not None:
        from trainyard.config import ensure_secret

        cmd += ["--app-name", "basic-auth"]
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(_write_auth_config(root, auth)),
                    # the auth app's CSRF key; static, so that it holds across restarts
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": ensure_secret(root / "flask.secret"),
                    "MLFLOW_AUTH_ADMIN_USERNAME": auth.username,
                    "MLFLOW_AUTH_ADMIN_PASSWORD": auth.password})
    url = f"http://127.0.0.1:{port}"
    return start_process("mlflow", cmd, url=url, health_url=f"{url}/health",
                         log_file=log_file or root / "mlflow.log", timeout=timeout, env=env)

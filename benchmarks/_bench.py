"""Shared by every benchmark: import paths, Ray's auth environment, a private Ray head, the
measurement lock and the one JSON line.

A head started here gets a fresh private token, and trainyard.local.ray_auth points this
process's Ray client at it (Ray caches RAY_AUTH_MODE and the token when it is imported, so the
cache is refreshed too) and back again afterwards.

Connecting to an existing cluster instead: export RAY_ADDRESS together with its auth variables
(RAY_AUTH_MODE=token, RAY_AUTH_TOKEN); the benchmarks that can share a head then start none.

The measurement lock (/tmp/trainyard-measure.lock, or $TRAINYARD_MEASURE_LOCK) is an exclusive
flock held for the whole measured run, so that two measurements on one machine never overlap.
`--smoke` runs do not take it: their timings are not measurements, and a CI smoke run must not
wait an hour behind someone's full sweep benchmark. A benchmark started under
`flock /tmp/trainyard-measure.lock ...` (as `make bench` may be) uses the lock its caller holds.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "platform", REPO, Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

MEASURE_LOCK = os.environ.get("TRAINYARD_MEASURE_LOCK", "/tmp/trainyard-measure.lock")
_STARTED = time.monotonic()


class BenchError(RuntimeError):
    """A benchmark could not run; the message says where its logs were kept."""


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, *, shareable: bool = True, logs: Path | None = None, **kwargs):
    """A private local Ray head with this process's token; yields it (None when shared).

    shareable: when $RAY_ADDRESS is set, use that cluster and start nothing.
    logs: where `ray start`'s output goes; on failure the folder is kept and named in the error.
    Extra keyword arguments go to trainyard.local.processes.start_ray_head.
    """
    if shareable and os.environ.get("RAY_ADDRESS"):
        yield None
        return
    from trainyard.local.processes import start_ray_head, stop_ray_head
    from trainyard.local.ray_auth import ray_client_env

    temp_dir = tempfile.mkdtemp(prefix="tyb-", dir="/tmp")  # short: Ray's unix socket paths
    log_dir = Path(logs) if logs else Path(tempfile.mkdtemp(prefix="ty-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "ray-start.log"
    try:
        head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=num_cpus,
                              log_file=log_file, timeout=kwargs.pop("timeout", 300), **kwargs)
    except Exception as exc:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise BenchError(f"the Ray head did not start: {exc}; its log is kept at {log_file}") from exc
    try:
        with ray_client_env(head.env()):
            try:
                yield head
            finally:
                if "ray" in sys.modules:
                    import ray

                    if ray.is_initialized():
                        ray.shutdown()
    finally:
        stop_ray_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if not logs:
            shutil.rmtree(log_dir, ignore_errors=True)


def init_ray():
    """ray.init for a benchmark's driver: workers' output stays off stdout (the JSON line is
    last), and the driver's actors get RAY_ADDRESS, as the runner's drivers give theirs (Train's
    placement-group cleaner needs it where several Ray clusters run on one machine)."""
    import ray

    address = os.environ.get("RAY_ADDRESS", "")
    env = {"RAY_ADDRESS": address} if address and not address.startswith(("http", "ray://")) else {}
    ray.init(log_to_driver=False, runtime_env={"env_vars": env} if env else None)
    return ray


@contextlib.contextmanager
def work_dir(prefix: str, *, keep: str | None = None):
    """A scratch folder, removed afterwards unless the run failed (then its logs are kept and named)."""
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    except BaseException:
        print(f"# benchmark failed; its logs are kept in {root}", file=sys.stderr, flush=True)
        raise
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def _inherited_lock_fd(path: str) -> int | None:
    """An open file descriptor of `path` through which this process already holds its flock
    (inherited from `flock FILE cmd`), or None. flock(2) on the open file description that
    holds the lock succeeds at once; on any other it would block, so it is only tried NB."""
    try:
        target = os.stat(path)
    except OSError:
        return None
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else ():
        fd = int(name)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (target.st_dev, target.st_ino):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except (OSError, BlockingIOError):
            continue
    return None


@contextlib.contextmanager
def measurement(smoke: bool):
    """Hold the measurement lock for a measured run (not for --smoke); yields fields for the JSON line."""
    info: dict = {"smoke": smoke, "load_avg_start": [round(x, 2) for x in os.getloadavg()]}
    if smoke:
        info["measure_lock"] = "skipped (smoke)"
        yield info
        return
    held = _inherited_lock_fd(MEASURE_LOCK)
    if held is not None:
        # run as `flock /tmp/trainyard-measure.lock python benchmarks/x.py`: the caller holds it,
        # and a second flock on a new open of the file would wait for the caller forever
        info["measure_lock"] = f"{MEASURE_LOCK} (held by the caller, fd {held})"
        info["measure_lock_wait_s"] = 0.0
        info["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
        yield info
        return
    fh = open(MEASURE_LOCK, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info["measure_lock_wait_s"] = 0.0
        except BlockingIOError:
            print(f"# waiting for the measurement lock {MEASURE_LOCK} (another measurement runs)",
                  file=sys.stderr, flush=True)
            t0 = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            info["measure_lock_wait_s"] = round(time.monotonic() - t0, 1)
        info["measure_lock"] = MEASURE_LOCK
        # the load when the lock was taken: someone else's work (not a measurement) may still run
        info["load_avg_start"] = [round(x, 2) for x in os.getloadavg()]
        yield info
    finally:
        fh.close()  # closing the file releases the flock


def emit(name: str, fields: dict, run: dict) -> None:
    """Print the benchmark's one JSON line (the last line of stdout), with the load average."""
    out = {"benchmark": name, **fields, **run, "load_avg": [round(x, 2) for x in os.getloadavg()],
           "bench_wall_s": round(time.monotonic() - _STARTED, 1)}  # this process, imports aside
    out["load_avg_1m"] = out["load_avg"][0]
    print(json.dumps(out), flush=True)


def add_smoke_flag(parser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny size that finishes in well under a minute (CI); the figures mean "
                             "nothing, the JSON line's shape does; skips the measurement lock")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServer:
    """A real Trainyard API server process (`python -m trainyard.api`, uvicorn, the controller
    running) on its own home and store. Its default cluster's dashboard is a closed port, so
    submissions queue and the controller ticks over a growing queue, as in a burst.

    `command`: what to run instead of `-m trainyard.api` (a variant of the same app), given
    `--port` the same way."""

    def __init__(self, home: Path, db_url: str | None = None, *, command: list[str] | None = None,
                 env: dict | None = None):
        self.home = home
        self.db_url = db_url or f"sqlite:///{home / 'trainyard.db'}"
        self.port = free_port()
        self.command = command or ["-m", "trainyard.api"]
        self.env = env or {}
        self.proc = None
        self.token = ""

    def start(self, timeout_s: float = 60.0) -> "ApiServer":
        import http.client
        import subprocess

        env = dict(os.environ, TRAINYARD_HOME=str(self.home), TRAINYARD_DB_URL=self.db_url,
                   TRAINYARD_RAY_DASHBOARD_URL=f"http://127.0.0.1:{free_port()}",
                   TRAINYARD_AUTOSCALER_DEMAND="off",
                   PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO), os.environ.get("PYTHONPATH", "")]),
                   **self.env)
        log = open(self.home / f"server-{time.time():.0f}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, *self.command, "--port", str(self.port),
                                      "--log-level", "warning"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"server exited with {self.proc.returncode}; see {log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise BenchError(f"server did not answer /healthz; see {log.name}")
        self.token = (self.home / "admin.token").read_text().strip()
        return self

    def kill9(self) -> None:
        import signal

        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

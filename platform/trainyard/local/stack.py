"""The embedded local stack behind `trainyard up` / `down` / `status`.

Three components, started in this order under the Trainyard home (see trainyard.config):

    ray      a Ray head with the dashboard (Jobs/Serve REST API), token auth on,
             its token in home/ray.token (0600)
    mlflow   an MLflow tracking server, SQLite backend + artifacts under home/mlflow
    server   the Trainyard server (`python -m trainyard.api`), which reaches the other two

What was started is recorded in home/stack.json after each step, so that `down` can stop
exactly that (and nothing else) even after a half-finished `up`. `up` is idempotent: a
healthy component is left alone, a dead or sick one is stopped and started again, and the
server is restarted when an address it depends on changed.

The CLI, `make demo` and the e2e tests all use these functions.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil
import tenacity

from trainyard import config
from trainyard.errors import ConflictError, StackError
from trainyard.local.processes import (
    MlflowAuth, RayHead, free_port, port_in_use, start_mlflow, start_process, start_ray_head, stop_process,
    stop_ray_head,
)

__all__ = [
    "DEFAULT_PORTS", "COMPONENTS", "ComponentStatus", "up", "down", "status", "is_up",
    "ray_temp_dir", "mlflow_run_url",
]

# The usual ports of each tool, so that a default stack has addresses people recognise.
# When one is taken (another stack, another user) and the user did not ask for it, a free
# port is used instead.
DEFAULT_PORTS = {"server": 8080, "mlflow": 5000, "ray": 8265}
COMPONENTS = ("ray", "mlflow", "server")
STACK_VERSION = 1
RAY_START_ATTEMPTS = 3

Event = Callable[[str, str], None]  # (component, message) for progress displays


@dataclass
class ComponentStatus:
    name: str
    address: str | None
    pid: int | None
    healthy: bool
    detail: str = ""
    action: str = ""  # what the last `up` did: started, restarted, running

    def to_dict(self) -> dict:
        return {"name": self.name, "address": self.address, "pid": self.pid,
                "healthy": self.healthy, "detail": self.detail, "action": self.action}


# ----------------------------------------------------------------------------- paths & state


def ray_temp_dir(home: Path | None = None) -> str:
    """A short per-home temp dir: Ray's unix socket paths must stay under 108 bytes."""
    home = (home or config.home()).resolve()
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:10]
    return f"/tmp/trainyard-{digest}"


def _write_stack(state: dict) -> None:
    path = config.stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One `up`/`down` at a time per home; a second waits instead of racing."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's: alive, and _is_ours says it is not ours


def _http_ok(url: str, *, headers: dict | None = None, timeout: float = 3.0) -> tuple[bool, str]:
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


# ----------------------------------------------------------------------------- health


def _ray_health(rec: dict | None, token: str | None) -> tuple[bool, str]:
    if not rec:
        return False, "not started"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ok, why = _http_ok(f"{rec['dashboard_url']}/api/version", headers=headers)
    return ok, "" if ok else f"dashboard: {why}"


def _proc_health(rec: dict | None, path: str) -> tuple[bool, str]:
    if not rec:
        return False, "not started"
    if not _pid_alive(rec.get("pid")):
        return False, f"process {rec.get('pid')} is gone"
    ok, why = _http_ok(rec["url"] + path)
    return ok, "" if ok else f"{path}: {why}"


HEALTH_PATHS = {"mlflow": "/health", "server": "/healthz"}


def _health(name: str, rec: dict | None, home: Path) -> tuple[bool, str]:
    if name == "ray":
        return _ray_health(rec, config.read_secret(home / "ray.token"))
    return _proc_health(rec, HEALTH_PATHS[name])


def _address(name: str, rec: dict | None) -> str | None:
    if not rec:
        return None
    return rec.get("dashboard_url") if name == "ray" else rec.get("url")


def status() -> list[ComponentStatus]:
    """What runs, where, and whether it answers. Reads home/stack.json; changes nothing."""
    home = config.home()
    state = config.read_stack()
    out = []
    for name in COMPONENTS:
        rec = state.get(name)
        ok, detail = _health(name, rec, home)
        out.append(ComponentStatus(name, _address(name, rec), (rec or {}).get("pid"), ok, detail))
    return out


def is_up() -> bool:
    return all(c.healthy for c in status())


def mlflow_run_url(mlflow_url: str, experiment_id: str | None, run_id: str | None) -> str | None:
    """The MLflow UI page of a run."""
    if not (mlflow_url and run_id):
        return None
    if experiment_id is None:
        return f"{mlflow_url.rstrip('/')}/#/runs/{run_id}"
    return f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


# ----------------------------------------------------------------------------- ports


def _pick_port(name: str, requested: int | None, previous: int | None, *, flag: str) -> int:
    """The user's port if free (else ConflictError), else the previous/default, else any free one."""
    if requested is not None:
        if not 1 <= requested <= 65535:
            raise StackError(f"must be a port between 1 and 65535, got {requested}",
                             field=flag, value=requested, fix="pick another port")
        if port_in_use(requested):
            raise ConflictError(
                f"port {requested} is already in use, so the {name} cannot listen on it",
                field=flag, value=requested,
                fix=f"free the port, pass another {flag}, or leave {flag} out to let Trainyard pick one")
        return requested
    for candidate in (previous, DEFAULT_PORTS[name]):
        if candidate and not port_in_use(candidate):
            return candidate
    return free_port()


def _port_for_retry(requested: int | None, tried: int, *, in_use: Callable[[int], bool] = port_in_use) -> int:
    """The port for another try after `tried` failed: the user's own stays (they asked for it);
    one picked for them is replaced when something else holds it now."""
    if requested is not None or not in_use(tried):
        return tried
    return free_port()


# ----------------------------------------------------------------------------- up


def _server_env(home: Path, *, mlflow_url: str, dashboard_url: str) -> dict[str, str]:
    # only addresses and file paths: the tokens themselves never enter stack.json or argv
    return {
        "TRAINYARD_HOME": str(home),
        "TRAINYARD_MLFLOW_URI": mlflow_url,
        "TRAINYARD_RAY_DASHBOARD_URL": dashboard_url,
        "TRAINYARD_RAY_TOKEN_FILE": str(home / "ray.token"),
        "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
    }


def _wait_ray_runtime(log: Path, offset: int, *, timeout: float) -> None:
    """Wait until `ray start` has its raylet registered (or gave up).

    `ray start` allows the raylet a fixed 30 s to register with the GCS. On two busy
    cores, MLflow's start (heavy imports) competing for the CPU in those 30 s is what
    makes it miss, so MLflow starts once Ray is past that point, and still overlaps
    with the slower dashboard/Jobs API start.
    """
    def settled() -> bool:
        try:
            with open(log, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
        except FileNotFoundError:
            return False
        return "Ray runtime started" in text or "Traceback" in text or "Error" in text

    # past the deadline: go on anyway; start_ray_head's own wait reports what went wrong
    tenacity.Retrying(stop=tenacity.stop_after_delay(timeout), wait=tenacity.wait_fixed(0.25),
                      retry=tenacity.retry_if_result(lambda done: not done),
                      retry_error_callback=lambda state: False)(settled)


def _python_env() -> dict[str, str]:
    """This interpreter's bin folder first on PATH.

    Ray job entrypoints (`python -m trainyard.runner ...`) and Ray workers resolve `python`
    through the head's PATH; without this they would find the system Python, which has no
    Trainyard, whenever the user did not activate the venv (`make demo` does not).
    """
    bindir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] == bindir:
        return {}
    return {"PATH": os.pathsep.join([bindir, path]) if path else bindir,
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}


def server_command(port: int) -> list[str]:
    """The server's command line. -P: the folder `trainyard up` ran in is not on its import path."""
    return [sys.executable, "-P", "-m", "trainyard.api", "--host", "127.0.0.1", "--port", str(port)]


def _require_server_module() -> None:
    if importlib.util.find_spec("trainyard.api") is None:
        raise StackError("the Trainyard server (trainyard.api) is not installed in this environment",
                         fix="reinstall Trainyard with `make venv`")


def _stop_component(name: str, rec: dict | None) -> None:
    if not rec:
        return
    if name == "ray":
        stop_ray_head(rec)
    elif _is_ours(name, rec.get("pid")):
        stop_process(int(rec["pid"]))


_CMDLINE_MARKS = {"mlflow": "mlflow", "server": "trainyard.api"}


def _is_ours(name: str, pid: int | None) -> bool:
    """Is `pid` still the process `up` started? After a reboot the number may be anyone's."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return _CMDLINE_MARKS[name] in cmdline


def up(*, port: int | None = None, mlflow_port: int | None = None,
       dashboard_port: int | None = None, num_cpus: int | None = None,
       autoscaling: bool = False, on_event: Event | None = None,
       timeout: float = 180.0) -> list[ComponentStatus]:
    """Start (or repair) the local stack. Returns one status per component.

    Raises ConflictError (exit code 6) when a port the caller asked for is taken, or when
    the running stack uses other settings than the ones asked for.
    """
    home = config.ensure_home().resolve()
    emit = on_event or (lambda component, message: None)
    _require_server_module()  # before starting anything that would then be left half-up
    # what up writes, and what the processes it starts write (they inherit the umask), is
    # private: the database and its WAL files, tokens, stack.json, MLflow's files, logs
    old_umask = config.private_umask()
    try:
        return _up(home, emit, port=port, mlflow_port=mlflow_port, dashboard_port=dashboard_port,
                   num_cpus=num_cpus, autoscaling=autoscaling, timeout=timeout)
    finally:
        os.umask(old_umask)


MLFLOW_USER = "trainyard"


def _make_private(home: Path) -> None:
    """Files an older version left readable by others (0644 in a 0755 home) become 0600."""
    for folder in (home, home / "logs", home / "mlflow"):
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                st = entry.lstat()
            except FileNotFoundError:
                continue
            if (entry.is_file() and not entry.is_symlink()) and st.st_mode & 0o077:
                entry.chmod(st.st_mode & 0o700)
            elif entry.is_dir() and not entry.is_symlink() and st.st_mode & 0o077:
                entry.chmod(0o700)


def _up(home: Path, emit: Event, *, port, mlflow_port, dashboard_port, num_cpus, autoscaling,
        timeout) -> list[ComponentStatus]:
    with _locked(home):
        state = config.read_stack()
        state.setdefault("version", STACK_VERSION)
        state["home"] = str(home)
        for sub in ("logs", "mlflow", "storage"):
            (home / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        _make_private(home)
        config.ensure_secret(home / "admin.token")
        ray_token = config.ensure_secret(home / "ray.token")
        mlflow_auth = MlflowAuth(MLFLOW_USER, config.ensure_secret(home / "mlflow.password"))
        actions: dict[str, str] = {}
        _precheck_ports(state, home, {"ray": dashboard_port, "mlflow": mlflow_port, "server": port})

        # -- ray and mlflow: independent, so MLflow (20-40 s to answer here) starts
        # while the Ray head does
        ray_rec, ml_rec = state.get("ray"), state.get("mlflow")
        ray_ok, _ = _health("ray", ray_rec, home)
        ml_ok, _ = _health("mlflow", ml_rec, home)
        if ray_ok and autoscaling and not ray_rec.get("autoscaling"):
            raise ConflictError(
                "the running Ray head was started without --autoscaling", field="--autoscaling",
                value=True, fix="run `trainyard down` first, then `trainyard up --autoscaling`")
        if ray_ok and num_cpus is not None and ray_rec.get("num_cpus") != num_cpus:
            raise ConflictError(
                f"the running Ray head offers {ray_rec.get('num_cpus') or 'all'} CPUs, not {num_cpus}",
                field="--num-cpus", value=num_cpus,
                fix="run `trainyard down` first to change it, or leave --num-cpus out")
        autoscaling = autoscaling or bool((ray_rec or {}).get("autoscaling"))
        actions["ray"] = actions["mlflow"] = "running"

        mlflow_future = None
        mlflow_url = (ml_rec or {}).get("url")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainyard-up")
        try:
            if not ml_ok:
                emit("mlflow", "restarting MLflow" if ml_rec else "starting MLflow")
                _stop_component("mlflow", ml_rec)
                state.pop("mlflow", None)
                _write_stack(state)
                mport = _pick_port("mlflow", mlflow_port, _port_of(ml_rec), flag="--mlflow-port")
                ray_log = home / "logs" / "ray.log"
                ray_log_offset = ray_log.stat().st_size if ray_log.exists() else 0

                def _start_mlflow():
                    if not ray_ok:
                        _wait_ray_runtime(ray_log, ray_log_offset, timeout=timeout)
                    return start_mlflow(root=home / "mlflow", port=mport,
                                        artifacts=str(home / "mlflow" / "artifacts"),
                                        log_file=home / "logs" / "mlflow.log", timeout=timeout,
                                        auth=mlflow_auth)

                mlflow_future = pool.submit(_start_mlflow)
                mlflow_url = f"http://127.0.0.1:{mport}"
                actions["mlflow"] = "restarted" if ml_rec else "started"
            if not ray_ok:
                emit("ray", "restarting the Ray head" if ray_rec else "starting the Ray head")
                _stop_component("ray", ray_rec)
                state.pop("ray", None)
                _write_stack(state)
                dport = _pick_port("ray", dashboard_port, (ray_rec or {}).get("dashboard_port"),
                                   flag="--dashboard-port")
                # the autoscaler config names the GCS address, so that port is chosen first
                gcs_port = free_port()
                autoscaling_config = _autoscaling_config(home, gcs_port, num_cpus) if autoscaling else None
                temp_dir = ray_temp_dir(home)
                # Ray keeps a session per start; an old one only wastes space
                shutil.rmtree(temp_dir, ignore_errors=True)
                # record before starting, so a crash half-way still lets `down` find it
                state["ray"] = {"temp_dir": temp_dir, "gcs_port": gcs_port, "dashboard_port": dport,
                                "dashboard_url": f"http://127.0.0.1:{dport}", "starting": True}
                _write_stack(state)
                def again(retry_state) -> None:
                    # `ray start` gives the raylet a fixed 30 s to register; on a loaded
                    # machine that is sometimes too short, and a second try succeeds
                    emit("ray", "the Ray head did not come up in time; trying once more")
                    stop_ray_head(state["ray"])
                    shutil.rmtree(temp_dir, ignore_errors=True)
                    # a port chosen for the user may have been taken between the check and
                    # Ray's bind (another `up` on the machine): the next try takes another
                    old = state["ray"]["dashboard_port"]
                    new = _port_for_retry(dashboard_port, old)
                    if new != old:
                        emit("ray", f"port {old} was taken meanwhile; the dashboard moves to {new}")
                        state["ray"].update(dashboard_port=new, dashboard_url=f"http://127.0.0.1:{new}")
                        _write_stack(state)

                head = tenacity.Retrying(
                    stop=tenacity.stop_after_attempt(RAY_START_ATTEMPTS), reraise=True,
                    retry=tenacity.retry_if_exception_type(StackError), before_sleep=again,
                )(lambda: start_ray_head(temp_dir=temp_dir, token=ray_token, num_cpus=num_cpus,
                                         dashboard_port=state["ray"]["dashboard_port"], gcs_port=gcs_port,
                                         env=_python_env(), autoscaling_config=autoscaling_config,
                                         log_file=home / "logs" / "ray.log", timeout=timeout))
                state["ray"] = _ray_record(head, autoscaling=autoscaling)
                _write_stack(state)
                actions["ray"] = "restarted" if ray_rec else "started"

            # -- server: needs Ray's Jobs API, but only MLflow's address, so it starts while
            # MLflow is still importing
            rec = state.get("server")
            env = _server_env(home, mlflow_url=mlflow_url, dashboard_url=state["ray"]["dashboard_url"])
            ok, _ = _health("server", rec, home)
            if ok and rec.get("env") == env:
                actions["server"] = "running"
            else:
                emit("server", "restarting the Trainyard server" if rec else "starting the Trainyard server")
                _stop_component("server", rec)
                state.pop("server", None)
                _write_stack(state)
                sport = _pick_port("server", port, _port_of(rec), flag="--port")
                url = f"http://127.0.0.1:{sport}"
                proc = start_process(
                    "server", server_command(sport),
                    url=url, health_url=f"{url}/healthz", log_file=home / "logs" / "server.log",
                    # the credentials go to the process only, never into stack.json
                    env={**env, **mlflow_auth.client_env()}, timeout=timeout)
                state["server"] = {**proc.to_dict(), "port": sport, "env": env}
                state["started_at"] = time.time()
                _write_stack(state)
                actions["server"] = "restarted" if rec else "started"
            if mlflow_future is not None and not mlflow_future.done():
                emit("mlflow", "waiting for MLflow")
        finally:
            pool.shutdown(wait=True)
            # whatever else happened, a started MLflow is recorded so that `down` stops it
            if mlflow_future is not None and mlflow_future.exception() is None:
                state["mlflow"] = {**mlflow_future.result().to_dict(), "port": mport}
                _write_stack(state)
        if mlflow_future is not None:
            mlflow_future.result()  # MLflow's own failure, if it had one

    result = status()
    for comp in result:
        comp.action = actions.get(comp.name, "")
    return result


def _port_of(rec: dict | None) -> int | None:
    return (rec or {}).get("port")


_PORT_KEYS = {"ray": ("dashboard_port", "--dashboard-port"), "mlflow": ("port", "--mlflow-port"),
              "server": ("port", "--port")}


def _precheck_ports(state: dict, home: Path, requested: dict[str, int | None]) -> None:
    """Fail before starting anything when a port the user asked for cannot be had."""
    for name, want in requested.items():
        if want is None:
            continue
        key, flag = _PORT_KEYS[name]
        rec = state.get(name)
        healthy, _ = _health(name, rec, home)
        if healthy and rec.get(key) == want:
            continue  # ours already: idempotent
        if healthy:
            raise ConflictError(
                f"the {name} already runs on port {rec.get(key)}, not {want}",
                field=flag, value=want,
                fix="run `trainyard down` first to move it, or leave the flag out")
        if rec and rec.get(key) == want:
            continue  # our own sick process holds it; it is stopped before the restart
        _pick_port(name, want, None, flag=flag)


def _ray_record(head: RayHead, *, autoscaling: bool) -> dict:
    return {**head.to_dict(), "dashboard_url": head.dashboard_url, "gcs_address": head.gcs_address,
            "autoscaling": autoscaling}


def _autoscaling_config(home: Path, gcs_port: int, num_cpus: int | None) -> str:
    """Render cluster/local.yaml (fake multi-node autoscaler) for a head on `gcs_port`."""
    if importlib.util.find_spec("trainyard.local.autoscaling") is None:
        raise StackError("--autoscaling is not available in this install (trainyard.local.autoscaling "
                         "is missing)", field="--autoscaling", value=True,
                         fix="run `trainyard up` without --autoscaling")
    from trainyard.local.autoscaling import render_local_config

    out_dir = home / "cluster"
    shutil.rmtree(out_dir, ignore_errors=True)  # one config per start, not a pile
    return str(render_local_config(f"127.0.0.1:{gcs_port}", head_cpus=num_cpus, out_dir=out_dir))


# ----------------------------------------------------------------------------- down


def down(*, on_event: Event | None = None) -> list[str]:
    """Stop exactly what `up` started. Idempotent. Returns the names of what was stopped.

    The server goes first, so that it never sees Ray or MLflow vanish under a running job
    and records a failure; then MLflow and Ray together (MLflow takes ~8 s to drain).
    """
    home = config.home().resolve()
    emit = on_event or (lambda component, message: None)
    if not config.stack_file().exists():
        return []
    with _locked(home):
        state = config.read_stack()
        present = [n for n in reversed(COMPONENTS) if state.get(n)]
        for name in present:
            emit(name, f"stopping {name}")
        if "server" in present:
            _stop_recorded("server", state["server"])
        backends = [n for n in present if n != "server"]
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="trainyard-down") as pool:
            for future in [pool.submit(_stop_recorded, n, state[n]) for n in backends]:
                future.result()
        config.stack_file().unlink(missing_ok=True)
    return present


def _stop_recorded(name: str, rec: dict) -> None:
    if name == "ray":
        # gcs_server, raylet and the monitor ignore SIGTERM for 10+ s here; what they
        # would flush on the way out lives in the temp dir we delete anyway
        if rec.get("gcs_port"):
            stop_ray_head(rec)
        else:  # `up` died while starting it: its temp dir still identifies it
            stop_ray_head({**rec, "gcs_port": -1, "client_port": None})
        if rec.get("temp_dir"):
            shutil.rmtree(rec["temp_dir"], ignore_errors=True)
    elif _is_ours(name, rec.get("pid")):
        stop_process(int(rec["pid"]))

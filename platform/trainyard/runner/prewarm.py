"""Import what the worker loop needs while Ray Train is still starting the worker group.

A training worker's process starts seconds before Ray Train enters the loop in it (the
controller places the group, the workers register, torch.distributed's gloo group forms),
and most of that time the process waits. The loop's own imports (DeepSpeed, which imports
MLflow; torch._dynamo, which the first torch optimizer imports; the MLflow tracking store of
the job's run; the runner) took 2-3 s of CPU after the loop was entered. Ray runs a worker
process setup hook as soon as the process starts: `start` (that hook) imports those modules
in a daemon thread and returns at once, so they are loaded, or loading, when the loop wants
them. Python's import locks make a loop that gets there first wait for the module rather
than import it twice. Only libraries and Trainyard's own modules are imported: never a
workload's module (user code).

Nothing here can fail a worker: a module that does not import is skipped (the loop then
imports it and reports the error itself), and the hook returns before any import starts.
"""
from __future__ import annotations

import os
import threading

__all__ = ["PREWARM_ENV", "SETUP_HOOK_ENV", "HOOK", "start", "modules_for", "prewarm_env", "warmed"]

# the modules to import, comma-separated (set by make_trainer in the workers' runtime env)
PREWARM_ENV = "TRAINYARD_PREWARM_MODULES"
# Ray's worker process setup hook, as its workers read it (ray._private.ray_constants
# WORKER_PROCESS_SETUP_HOOK_ENV_VAR): "module.function" is imported and called at process start
SETUP_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"
HOOK = "trainyard.runner.prewarm.start"

# what every training worker imports: DeepSpeed first (it imports torch and MLflow), then
# what the first torch optimizer imports (torch._dynamo), the rank-0 first step's FLOP
# counter, the runner and MLflow's client
BASE_MODULES = ("torch", "deepspeed", "torch._dynamo", "torch.utils.flop_counter", "trainyard.runner.trainer",
                "trainyard.specs", "trainyard.tracking.logger", "mlflow.tracking")

# the MLflow tracking store a run's URI scheme loads (rank 0's client builds it)
_STORE_BY_SCHEME = {
    "http": "mlflow.store.tracking.rest_store", "https": "mlflow.store.tracking.rest_store",
    "sqlite": "mlflow.store.tracking.sqlalchemy_store", "postgresql": "mlflow.store.tracking.sqlalchemy_store",
    "mysql": "mlflow.store.tracking.sqlalchemy_store", "mssql": "mlflow.store.tracking.sqlalchemy_store",
    "file": "mlflow.store.tracking.file_store",
}

_done = threading.Event()
_state: dict = {"thread": None, "imported": [], "failed": [], "started_unix": None, "done_unix": None}


def modules_for(*, tracking_uri: str | None = None, mlflow: bool = True) -> list[str]:
    """The modules a worker of a job imports: BASE_MODULES, and the tracking store of its run."""
    mods = [m for m in BASE_MODULES if mlflow or not m.startswith(("mlflow", "trainyard.tracking"))]
    if mlflow and tracking_uri:
        scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in tracking_uri else "file"
        store = _STORE_BY_SCHEME.get(scheme)
        if store:
            mods.append(store)
    return mods


def prewarm_env(modules: list[str], environ=None) -> dict[str, str]:
    """The workers' env vars that make Ray run `start` with `modules`; none when the driver's
    own environment names a setup hook already (a job's own hook is never replaced)."""
    environ = os.environ if environ is None else environ
    if environ.get(SETUP_HOOK_ENV) or not modules:
        return {}
    return {SETUP_HOOK_ENV: HOOK, PREWARM_ENV: ",".join(modules)}


def _run(modules: list[str]) -> None:
    import importlib
    import time

    _state["started_unix"] = time.time()
    try:
        for name in modules:
            try:
                importlib.import_module(name)
                _state["imported"].append(name)
            except BaseException as exc:  # noqa: BLE001 - the loop imports it again and says what is wrong
                _state["failed"].append((name, f"{type(exc).__name__}: {exc}"[:300]))
        try:
            from trainyard.families import registered

            registered()  # the installed families' entry points (read once per process)
        except Exception:  # noqa: BLE001
            pass
    finally:
        _state["done_unix"] = time.time()
        _done.set()


def start() -> None:
    """Ray's worker process setup hook: start importing $TRAINYARD_PREWARM_MODULES in a daemon
    thread and return. Never raises (Ray ends a worker whose setup hook fails)."""
    try:
        if _state["thread"] is not None:
            return
        modules = [m.strip() for m in os.environ.get(PREWARM_ENV, "").split(",") if m.strip()]
        if not modules:
            _done.set()
            return
        thread = threading.Thread(target=_run, args=(modules,), name="trainyard-prewarm", daemon=True)
        _state["thread"] = thread
        thread.start()
    except Exception:  # noqa: BLE001
        _done.set()


def warmed(timeout: float | None = 0) -> dict:
    """What the hook imported so far in this process (tests, logs): {"started", "done",
    "imported", "failed"}; waits up to `timeout` seconds for it to finish."""
    if _state["thread"] is not None and timeout != 0:
        _done.wait(timeout)
    return {"started": _state["thread"] is not None, "done": _done.is_set(), "imported": list(_state["imported"]),
            "failed": list(_state["failed"]), "started_unix": _state["started_unix"], "done_unix": _state["done_unix"]}

"""A worker's start: imports begun while Ray Train forms the group (runner.prewarm), and rank 0's
MLflow client opened in the background (runner.tracker) without reordering or losing anything."""
from __future__ import annotations

import threading
import types

import pytest

from trainyard.runner import prewarm
from trainyard.runner import tracker as tracker_mod


def test_the_store_module_follows_the_tracking_uri_scheme():
    base = list(prewarm.BASE_MODULES)
    assert prewarm.modules_for(tracking_uri="sqlite:////tmp/m.db") == base + ["mlflow.store.tracking.sqlalchemy_store"]
    assert prewarm.modules_for(tracking_uri="postgresql+psycopg://h/db")[-1] == "mlflow.store.tracking.sqlalchemy_store"
    assert prewarm.modules_for(tracking_uri="http://mlflow:5000")[-1] == "mlflow.store.tracking.rest_store"
    assert prewarm.modules_for(tracking_uri="/abs/mlruns")[-1] == "mlflow.store.tracking.file_store"
    assert prewarm.modules_for(tracking_uri="weird://x") == base
    no_run = prewarm.modules_for(tracking_uri=None, mlflow=False)
    assert "deepspeed" in no_run and not any(m.startswith(("mlflow", "trainyard.tracking")) for m in no_run)


def test_a_setup_hook_the_job_has_already_is_never_replaced():
    assert prewarm.prewarm_env(["json"], environ={}) == {prewarm.SETUP_HOOK_ENV: prewarm.HOOK,
                                                         prewarm.PREWARM_ENV: "json"}
    assert prewarm.prewarm_env(["json"], environ={prewarm.SETUP_HOOK_ENV: "their.hook"}) == {}
    assert prewarm.prewarm_env([], environ={}) == {}


def test_the_hook_imports_in_the_background_and_a_module_that_fails_is_only_noted(monkeypatch):
    monkeypatch.setattr(prewarm, "_state", {"thread": None, "imported": [], "failed": [], "started_unix": None,
                                            "done_unix": None})
    monkeypatch.setattr(prewarm, "_done", threading.Event())
    monkeypatch.setenv(prewarm.PREWARM_ENV, "json, trainyard_no_such_module_here ,colorsys")
    assert prewarm.start() is None  # returns at once; the imports run in a daemon thread
    seen = prewarm.warmed(timeout=60)
    assert seen["done"] and seen["imported"] == ["json", "colorsys"]
    assert [name for name, _ in seen["failed"]] == ["trainyard_no_such_module_here"]
    prewarm.start()  # a second call starts nothing
    assert prewarm.warmed()["imported"] == ["json", "colorsys"]


def test_make_trainer_gives_the_workers_the_hook_and_the_spec_env_wins(tmp_path, monkeypatch):
    pytest.importorskip("ray.train")
    from trainyard.runner.launch import make_trainer
    from trainyard.runner.storage import resolve_storage
    from trainyard.specs import parse_job_spec

    monkeypatch.delenv(prewarm.SETUP_HOOK_ENV, raising=False)
    spec = parse_job_spec({"name": "p", "workload": "cnn", "resources": {"workers": 2, "cpus_per_worker": 1},
                           "env": {prewarm.PREWARM_ENV: ""}})
    target = resolve_storage(f"file://{tmp_path}", project="p", endpoint_url=None)
    trainer = make_trainer(spec, name="p", target=target,
                           loop_config={"mlflow": {"tracking_uri": "sqlite:///x.db", "run_id": "r"}})
    env = trainer.run_config.worker_runtime_env["env_vars"]
    assert env[prewarm.SETUP_HOOK_ENV] == prewarm.HOOK
    assert env[prewarm.PREWARM_ENV] == ""  # the spec's env turns it off
    assert env["DS_ACCELERATOR"] == "cpu"


class _Logger:
    max_batch = 1000

    def __init__(self, calls, gate=None):
        self.calls, self.gate = calls, gate

    def log_params(self, params):
        self.calls.append(("params", sorted(params)))

    def set_tags(self, tags):
        self.calls.append(("tags", sorted(tags)))

    def log_metric_rows(self, rows):
        self.calls.append(("metrics", [step for _, step, *_ in rows]))

    def log_metrics(self, metrics, *, step):
        self.calls.append(("metrics", [step]))

    def flush(self, timeout=None):
        self.calls.append(("flush",))

    def close(self, timeout=None):
        self.calls.append(("close",))


def _spec():
    from trainyard.specs import parse_job_spec

    return parse_job_spec({"name": "p", "workload": "cnn"})


class _Plan:
    zero_stage = 0

    def as_params(self):
        return {"deepspeed.zero_stage": 0}


def test_steps_never_wait_for_the_opening_and_the_run_gets_params_first(monkeypatch):
    calls: list = []
    gate = threading.Event()

    def slow_logger(*, run_id, tracking_uri=None):
        assert gate.wait(60)
        return _Logger(calls)

    monkeypatch.setitem(__import__("sys").modules, "trainyard.tracking.logger",
                        types.SimpleNamespace(RunLogger=slow_logger))
    tracking = {"run_id": "r", "tracking_uri": "sqlite:///x.db"}
    opening = tracker_mod.open_logger(rank=0, tracking=tracking)
    tracker = tracker_mod.Tracker(rank=0, tracking=tracking, queue=None, total_steps=5, opening=opening)
    tracker.start(spec=_spec(), hparams={"channels": 8}, plan=_Plan(), world=2, resumed_from=None, resumed_step=0)
    for step in (1, 2, 3):
        tracker.log_metrics({"loss": 1.0}, step=step)  # returns while the client is still opening
    assert calls == [] and not opening.done
    gate.set()
    tracker.flush()  # waits for the opening, then sends every held step
    kinds = [c[0] for c in calls]
    assert kinds[:3] == ["params", "params", "tags"] and ("metrics", [1, 2, 3]) in calls and kinds[-1] == "flush"
    tracker.close()
    assert tracker.logger is None and calls[-1] == ("close",)


def test_no_opening_on_other_ranks_or_without_a_run():
    assert tracker_mod.open_logger(rank=1, tracking={"run_id": "r"}) is None
    assert tracker_mod.open_logger(rank=0, tracking=None) is None
    tracker = tracker_mod.Tracker(rank=1, tracking={"run_id": "r"}, queue=None, total_steps=1)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.close()
    assert tracker.logger is None


def test_a_client_that_cannot_open_fails_where_the_run_is_needed(monkeypatch):
    def broken(**_):
        raise RuntimeError("no such tracking store")

    monkeypatch.setitem(__import__("sys").modules, "trainyard.tracking.logger",
                        types.SimpleNamespace(RunLogger=broken))
    tracker = tracker_mod.Tracker(rank=0, tracking={"run_id": "r"}, queue=None, total_steps=1)
    with pytest.raises(RuntimeError, match="no such tracking store"):  # as where the client was built before
        tracker.log_metrics({"loss": 1.0}, step=1)
        tracker.flush()
    tracker.close()  # raised once; closing afterwards is quiet
    assert tracker.logger is None

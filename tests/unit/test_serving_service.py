"""The server's sweep -> promotion hand-off: which sweeps get promoted, and only once.

Real SQLite store; the MLflow registry and the promotion itself are replaced by a
recording stand-in (they are covered by the integration tests).
"""
from __future__ import annotations

from trainyard.serving.service import ServingService
from trainyard.store import Database
from trainyard.store import jobs as jobs_repo


class _Registry:
    def __init__(self, done=()):
        self.done = set(done)

    def promotion_for_sweep(self, sweep_id):
        return "run" if sweep_id in self.done else None


def _service(registry):
    service = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None))
    service._registry = registry
    calls = []
    service.promote = lambda model, **kw: calls.append((model, kw)) or {"id": "p"}
    return service, calls


def _sweep(db, name, *, promote, model="m", phase="SUCCEEDED"):
    with db.session() as s:
        row = jobs_repo.create_job(s, spec={"name": name, "promote": promote}, name=name, project="default",
                                   priority=0, kind="sweep")
        row.phase = phase
        row.result = {"model_name": model, "model_version": "7"}
        return row.id


def test_only_succeeded_sweeps_with_a_promote_block_are_promoted_once(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'ty.db'}")
    db.upgrade()
    wanted = _sweep(db, "a", promote={"canary_weight": 0.2})
    _sweep(db, "b", promote=None)
    _sweep(db, "c", promote={"canary_weight": 0.2}, phase="RUNNING")
    already = _sweep(db, "d", promote={"canary_weight": 0.2})
    service, calls = _service(_Registry(done={already}))
    service.promote_finished_sweeps(db)
    assert [(m, kw["candidate"], kw["tags"]) for m, kw in calls] == [("m", "7", {"trainyard.sweep_id": wanted})]
    service.promote_finished_sweeps(db)  # a second pass starts nothing new
    assert len(calls) == 1


def test_a_second_promotion_of_the_same_model_joins_the_running_one():
    service = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None))

    class Reg:
        def versions(self, model):
            return ["1"]

        def alias_version(self, model, alias):
            return "1"

    service._registry = Reg()
    service.manager = lambda cluster=None: None
    running = {"id": "abc", "model": "m", "state": "running", "events": []}
    service.promotions["abc"] = running
    assert service.promote("m", wait=False) is running

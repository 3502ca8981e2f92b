"""What a restarted server does with a promotion its predecessor left unfinished (serving/recovery.py).

Pure decisions first, then the carrying out against a stand-in registry and endpoint manager
(the real flow, with a SIGKILLed server, is tests/integration/test_promotion_restart.py)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from trainyard.errors import ClusterError, NotFoundError
from trainyard.serving.recovery import INTERRUPTED, plan_recovery, recover_promotion
from trainyard.serving.registry import PromotionRecord
from trainyard.serving.service import ServingService, deployment_id
from trainyard.serving.traffic import Traffic


def _record(**kw) -> PromotionRecord:
    base = dict(run_id="r1", model="m", candidate="2", champion="1", endpoint="m", cluster="local",
                instance="old", outcome=None, served_before=None, last_event="canary_started", next_seq=3,
                recovered=False)
    return PromotionRecord(**{**base, **kw})


CANARY = Traffic({"1": 0.9, "2": 0.1}, stable="1", canary="2", generation=5)


def test_a_canary_is_rolled_back_to_the_champion_alone():
    plan = plan_recovery(_record(), champion_now="1", traffic=CANARY)
    assert (plan.action, plan.target, plan.outcome, plan.reason) == ("switch", "1", "rolled_back", INTERRUPTED)


def test_an_endpoint_already_safe_needs_nothing_but_the_record_closed():
    plan = plan_recovery(_record(), champion_now="1", traffic=Traffic.single("1"))
    assert (plan.action, plan.outcome) == ("none", "rolled_back")
    # died before its canary: the candidate never served
    plan = plan_recovery(_record(last_event="compared"), champion_now="1", traffic=Traffic.single("1"))
    assert (plan.action, plan.outcome, plan.reason) == ("none", "rolled_back", INTERRUPTED)


def test_a_deleted_endpoint_is_said_and_not_restored():
    plan = plan_recovery(_record(), champion_now="1", traffic=None)
    assert plan.action == "none" and plan.outcome == "rolled_back"
    assert plan.reason.startswith(INTERRUPTED) and "'m' no longer exists" in plan.reason


def test_alias_moved_by_the_dead_promotion_means_its_gates_passed_so_it_is_finished_forward():
    mid_promotion = Traffic({"1": 0.0, "2": 1.0}, stable="2", generation=6)
    plan = plan_recovery(_record(), champion_now="2", traffic=mid_promotion)
    assert (plan.action, plan.target, plan.outcome) == ("switch", "2", "promoted")
    assert plan_recovery(_record(), champion_now="2", traffic=Traffic.single("2")).action == "none"


def test_first_deployment_without_champion_deletes_the_endpoint_it_created():
    direct = _record(champion=None, served_before="", last_event="compared")
    plan = plan_recovery(direct, champion_now=None, traffic=Traffic.single("2"))
    assert (plan.action, plan.outcome) == ("delete", "rolled_back") and "was deleted" in plan.reason
    # served by hand before the promotion: back to that version
    by_hand = _record(champion=None, served_before="1", last_event="compared")
    plan = plan_recovery(by_hand, champion_now=None, traffic=Traffic({"1": 0.0, "2": 1.0}, stable="2"))
    assert (plan.action, plan.target) == ("switch", "1")


class FakeRegistry:
    def __init__(self, champion="1"):
        self.champion = champion
        self.events, self.ended, self.tags = [], [], {}

    def alias_version(self, model, alias):
        return self.champion

    def log_event(self, run_id, seq, event):
        self.events.append((run_id, seq, event))

    def end_promotion(self, run_id, outcome):
        self.ended.append((run_id, outcome))

    def mark_promotion(self, run_id, key, value):
        self.tags[(run_id, key)] = value

    def set_alias(self, model, alias, version):
        assert alias == "champion"
        self.champion = version


class FakeManager:
    def __init__(self, traffic: Traffic | None):
        self.traffic, self.calls = traffic, []

    def get(self, name):
        if self.traffic is None:
            raise NotFoundError("endpoint", name)
        return SimpleNamespace(name=name, traffic=self.traffic)

    def switch(self, state, version):
        self.calls.append(("switch", version))
        self.traffic = Traffic.single(version, generation=state.traffic.generation + 3)
        return SimpleNamespace(name=state.name, traffic=self.traffic)

    def delete(self, name):
        self.calls.append(("delete", name))
        self.traffic = None


def test_recovery_rolls_back_logs_the_decision_and_is_idempotent():
    registry, manager = FakeRegistry(), FakeManager(CANARY)
    out = recover_promotion(_record(), registry=registry, manager_for=lambda cluster: manager)
    assert manager.calls == [("switch", "1")] and manager.traffic.weights == {"1": 1.0}
    (run_id, seq, event), = registry.events
    assert (run_id, seq, event.kind, event.reason) == ("r1", 3, "rolled_back", INTERRUPTED)
    assert event.evidence["interrupted"] is True and event.evidence["traffic"] == {"1": 1.0}
    assert registry.ended == [("r1", "rolled_back")] and out["outcome"] == "rolled_back"
    # the server died again before the run was closed: nothing to undo, no second event
    recover_promotion(_record(recovered=True, next_seq=4), registry=registry, manager_for=lambda c: manager)
    assert manager.calls == [("switch", "1")] and len(registry.events) == 1
    assert registry.ended[-1] == ("r1", "rolled_back")


def test_recovery_of_a_deleted_endpoint_or_cluster_closes_the_record_without_raising():
    registry = FakeRegistry()
    recover_promotion(_record(), registry=registry, manager_for=lambda cluster: FakeManager(None))
    assert registry.ended == [("r1", "rolled_back")] and "no longer exists" in registry.events[0][2].reason

    def unregistered(cluster):
        raise NotFoundError("cluster", cluster)

    recover_promotion(_record(run_id="r2"), registry=registry, manager_for=unregistered)
    assert registry.ended[-1] == ("r2", "rolled_back") and "cluster 'local'" in registry.events[-1][2].reason


def test_an_outcome_recorded_before_the_crash_only_closes_the_run():
    registry, manager = FakeRegistry(), FakeManager(CANARY)
    recover_promotion(_record(outcome="promoted"), registry=registry, manager_for=lambda c: manager)
    assert registry.ended == [("r1", "promoted")] and registry.events == [] and manager.calls == []


def test_record_read_back_from_an_mlflow_run():
    event = {"kind": "canary_started", "evidence": {"endpoint": "ep"}, "time": 1.0}
    run = SimpleNamespace(
        info=SimpleNamespace(run_id="abc", start_time=5),
        data=SimpleNamespace(params={"policy.endpoint": "None"},
                             tags={"trainyard.model": "m", "trainyard.candidate": "2", "trainyard.champion": "None",
                                   "trainyard.cluster": "local", "trainyard.server_instance": "i1",
                                   "trainyard.last_event": "canary_started",
                                   "event.0001": json.dumps({"kind": "compared", "evidence": {"endpoint": "ep"}}),
                                   "event.0002": json.dumps(event)}))
    record = PromotionRecord.from_run(run)
    assert (record.model, record.candidate, record.champion, record.endpoint) == ("m", "2", None, "ep")
    assert (record.next_seq, record.recovered, record.served_before, record.instance) == (3, False, None, "i1")
    assert (record.kind, record.rollback_from) == ("promotion", None)
    run.data.tags.update({"trainyard.kind": "rollback", "trainyard.rollback_from": "3"})
    assert (PromotionRecord.from_run(run).kind, PromotionRecord.from_run(run).rollback_from) == ("rollback", "3")


def test_service_recovers_only_other_instances_records_and_survives_cluster_errors():
    service = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None), server_id="s1")
    registry = FakeRegistry()
    mine = _record(run_id="mine", instance=service.instance)
    broken = _record(run_id="broken", cluster="down")
    registry.unfinished_promotions = lambda server: [mine, broken, _record()] if server == "s1" else []
    service._registry = registry
    manager = FakeManager(CANARY)

    def manager_for(cluster=None):
        if cluster == "down":
            raise ClusterError("cluster 'down' does not answer")
        return manager

    service.manager = manager_for
    items = service.recover_promotions()
    assert [i["run_id"] for i in items] == ["broken", "r1"]
    assert "error" in items[0] and ("broken", "recovery_error") in registry.tags  # stays RUNNING, marked
    assert registry.ended == [("r1", "rolled_back")] and manager.traffic.weights == {"1": 1.0}
    thread = service.start_recovery(attempts=1)
    thread.join(5)
    assert service._recovered.is_set()


def test_deployment_id_is_stable_and_ignores_the_password():
    url = "postgresql://ty:secret@db:5432/trainyard"
    assert deployment_id(url) == deployment_id(url) != deployment_id("sqlite:////tmp/a.db")
    assert deployment_id(url) == deployment_id("postgresql://ty:other@db:5432/trainyard")


@pytest.mark.parametrize("before", ["", None])
def test_first_deployment_with_only_the_candidate_is_deleted_whether_or_not_the_record_says(before):
    plan = plan_recovery(_record(champion=None, served_before=before), champion_now=None,
                         traffic=Traffic.single("2"))
    assert plan.action == "delete"


# a roll-back asked for by hand (v2 -> v1), its server killed mid-switch: finished forward
ROLLBACK = dict(kind="rollback", candidate="1", champion="2", rollback_from="2", last_event=None, next_seq=1)


def test_an_interrupted_roll_back_is_finished_forward_or_closed_as_failed_when_its_endpoint_is_gone():
    half = Traffic({"1": 0.5, "2": 0.5}, stable="2", canary="1", generation=7)
    plan = plan_recovery(_record(**ROLLBACK), champion_now="2", traffic=half)
    assert (plan.action, plan.target, plan.outcome) == ("switch", "1", "reverted") and "v2 -> v1" in plan.reason
    # switched already, the alias or the event not yet: only the bookkeeping is left
    plan = plan_recovery(_record(**ROLLBACK), champion_now="2", traffic=Traffic.single("1"))
    assert (plan.action, plan.target, plan.outcome) == ("none", "1", "reverted")
    plan = plan_recovery(_record(**ROLLBACK), champion_now="2", traffic=None, gone="cluster 'local' no longer exists")
    assert (plan.action, plan.outcome) == ("none", "failed") and "cluster 'local'" in plan.reason


def test_recovery_finishes_a_roll_back_moves_the_alias_logs_it_once_and_the_history_counts_it():
    from trainyard.serving.policy import plan_rollback

    registry, manager = FakeRegistry(champion="2"), FakeManager(Traffic({"1": 0.5, "2": 0.5}, stable="2", canary="1"))
    out = recover_promotion(_record(**ROLLBACK), registry=registry, manager_for=lambda c: manager)
    assert manager.calls == [("switch", "1")] and manager.traffic.weights == {"1": 1.0} and registry.champion == "1"
    (run_id, seq, event), = registry.events
    assert (event.kind, event.candidate, event.evidence["from_version"], event.evidence["interrupted"]) == \
        ("reverted", "1", "2", True)
    assert registry.ended == [("r1", "reverted")] and out["outcome"] == "reverted"
    # died again after the event, before the close: only the close is left
    recover_promotion(_record(**{**ROLLBACK, "last_event": "reverted"}), registry=registry,
                      manager_for=lambda c: manager)
    assert len(registry.events) == 1 and registry.ended[-1] == ("r1", "reverted") and manager.calls == [("switch", "1")]
    # the finished roll-back undoes the promotion of v2 in the history, as one that was not interrupted
    promoted = {"kind": "promoted", "candidate": "2", "champion": "1", "evidence": {"endpoint": "m"}}
    with pytest.raises(Exception, match="no promotion left"):
        plan_rollback("m", [promoted, event.to_dict()])


def test_a_roll_back_killed_mid_switch_is_found_and_finished_by_the_next_server():
    """The roll-back's run carries the deployment's tags, so the next server process reads it
    back (from the tags the first one wrote) and finishes it."""
    from trainyard.serving.policy import Event

    promoted = Event(kind="promoted", model="m", candidate="2", champion="1", reason="", evidence={"endpoint": "m"})
    runs: dict[str, dict] = {}

    class Registry(FakeRegistry):
        def versions(self, model):
            return ["1", "2"]

        def history(self, model):
            return [promoted.to_dict()]

        def start_promotion(self, model, candidate, champion, policy, tags=None):
            runs["rb"] = {"trainyard.model": model, "trainyard.candidate": str(candidate),
                          "trainyard.champion": str(champion), **(tags or {})}
            return "rb"

    class Dies(FakeManager):
        def exists(self, name):
            return True

        def switch(self, state, version):
            self.traffic = Traffic({"1": 0.5, "2": 0.5}, stable="2", canary="1")
            raise KeyboardInterrupt("the server process is killed mid-switch")

    first = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None), server_id="s1")
    registry, manager = Registry(champion="2"), Dies(Traffic.single("2"))
    first._registry, first.manager = registry, lambda cluster=None: manager
    with pytest.raises(KeyboardInterrupt):
        first.rollback("m")
    run = SimpleNamespace(info=SimpleNamespace(run_id="rb", start_time=1), data=SimpleNamespace(params={}, tags=runs["rb"]))
    record = PromotionRecord.from_run(run)
    assert runs["rb"]["trainyard.server"] == "s1" and (record.kind, record.rollback_from) == ("rollback", "2")

    second = ServingService(tracking_uri="http://mlflow", clusters=lambda name: ("http://ray", None), server_id="s1")
    registry.unfinished_promotions = lambda server: [record] if server == "s1" else []
    healthy = FakeManager(manager.traffic)
    second._registry, second.manager = registry, lambda cluster=None: healthy
    (item,) = second.recover_promotions()
    assert item["outcome"] == "reverted" and healthy.traffic.weights == {"1": 1.0} and registry.champion == "1"
    assert registry.ended == [("rb", "reverted")]

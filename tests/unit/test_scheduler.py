"""The scheduler: order, gang admission, placement, never-fits rejection. Pure data."""
from trainyard.scheduler import (DISPATCH, REJECT, WAIT, ClusterView, QueuedJob, fits, order_queue, pack,
                                 schedule, subtract_reserved, worker_bundle)


def job(id, workers=1, cpus=1.0, priority=0, seq=0.0, cluster=None, **extra):
    return QueuedJob(id=id, workers=workers, per_worker={"CPU": cpus, **extra}, priority=priority, seq=seq,
                     cluster=cluster)


def cluster(name, *nodes, free=None, healthy=True, max_nodes=None):
    totals = [dict(n) for n in nodes]
    return ClusterView(name=name, nodes_free=[dict(n) for n in (free or nodes)], nodes_total=totals,
                       max_nodes=max_nodes, healthy=healthy)


def by_id(decisions):
    return {d.job_id: d for d in decisions}


def test_order_is_priority_then_fifo():
    jobs = [job("a", seq=3), job("b", priority=5, seq=4), job("c", seq=1), job("d", priority=5, seq=2)]
    assert [j.id for j in order_queue(jobs)] == ["d", "b", "c", "a"]


def test_gang_admission_is_all_or_nothing():
    c = cluster("local", {"CPU": 2})
    assert fits(job("a", workers=2), c.nodes_free)
    assert not fits(job("a", workers=3), c.nodes_free)
    assert pack({"CPU": 1}, 3, [{"CPU": 2}]) is None


def test_workers_never_span_nodes():
    # 4 CPUs in total, but no node holds a 3-CPU worker
    nodes = [{"CPU": 2}, {"CPU": 2}]
    assert not fits(job("a", cpus=3), nodes)
    assert fits(job("a", workers=2, cpus=2), nodes)


def test_queue_admits_in_order_and_uses_up_capacity():
    c = cluster("local", {"CPU": 2})
    d = by_id(schedule([job("first", workers=2, seq=1), job("second", seq=2)], [c]))
    assert d["first"].action == DISPATCH and d["first"].cluster == "local"
    assert d["second"].action == WAIT
    assert "0 CPUs free" in d["second"].reason


def test_higher_priority_goes_first_even_if_later():
    c = cluster("local", {"CPU": 1})
    d = by_id(schedule([job("low", seq=1), job("high", priority=10, seq=2)], [c]))
    assert d["high"].action == DISPATCH and d["low"].action == WAIT


def test_no_backfill_past_a_blocked_job():
    c = cluster("local", {"CPU": 2}, free=[{"CPU": 1}])
    d = by_id(schedule([job("big", workers=2, seq=1), job("small", seq=2)], [c]))
    assert d["big"].action == WAIT
    assert d["small"].action == WAIT and "held for a job ahead" in d["small"].reason


def test_never_fits_is_rejected_with_the_field_and_the_fix():
    c = cluster("local", {"CPU": 2})
    d = by_id(schedule([job("huge", workers=8)], [c]))["huge"]
    assert d.action == REJECT and d.field == "resources.workers"
    assert d.reason == ("needs 8 CPUs in total but the largest cluster, 'local', has 2; "
                        "lower resources.workers or cpus_per_worker, or add a bigger cluster")


def test_rejected_job_does_not_block_others():
    c = cluster("local", {"CPU": 2})
    d = by_id(schedule([job("huge", workers=8, seq=1), job("ok", seq=2)], [c]))
    assert d["huge"].action == REJECT and d["ok"].action == DISPATCH


def test_gpu_and_custom_resources():
    c = cluster("local", {"CPU": 4})
    d = by_id(schedule([QueuedJob("g", 1, {"CPU": 1, "GPU": 1})], [c]))["g"]
    assert d.action == REJECT and d.field == "resources.gpus_per_worker" and "1 GPU" in d.reason
    acc = QueuedJob("a", 1, worker_bundle({"CPU": 1}, "A100"))
    assert by_id(schedule([acc], [c]))["a"].field == "resources.accelerator_type"


def test_per_node_limit_message():
    c = cluster("two", {"CPU": 2}, {"CPU": 2})
    d = by_id(schedule([job("wide", cpus=3)], [c]))["wide"]
    assert d.action == REJECT and d.field == "resources.cpus_per_worker" and "single node" in d.reason


def test_placement_across_clusters_prefers_most_free_then_name():
    a = cluster("a", {"CPU": 2})
    b = cluster("b", {"CPU": 4})
    d = by_id(schedule([job("x"), job("y", seq=1), job("z", seq=2)], [a, b]))
    assert d["x"].cluster == "b"
    assert d["y"].cluster == "b"  # after x: a 2 free, b 3 free
    assert d["z"].cluster == "a"  # after y: 2 and 2, a tie broken by name


def test_pinned_cluster_is_respected_and_checked():
    a = cluster("a", {"CPU": 8})
    b = cluster("b", {"CPU": 2})
    d = by_id(schedule([job("p", workers=4, cluster="b"), job("q", cluster="nope")], [a, b]))
    assert d["p"].action == REJECT and "cluster 'b' has 2" in d["p"].reason
    assert d["q"].action == REJECT and d["q"].field == "resources.cluster"
    d = by_id(schedule([job("p", workers=2, cluster="b")], [a, b]))
    assert d["p"].action == DISPATCH and d["p"].cluster == "b"


def test_unhealthy_cluster_is_skipped_but_does_not_reject():
    a = cluster("a", {"CPU": 2}, healthy=False)
    d = by_id(schedule([job("x")], [a]))["x"]
    assert d.action == WAIT and "unreachable" in d.reason


def test_max_nodes_allow_autoscaling_clusters():
    small_now = cluster("auto", {"CPU": 1}, max_nodes=[{"CPU": 1}] * 4)
    d = by_id(schedule([job("x", workers=3)], [small_now]))["x"]
    assert d.action == WAIT  # fits the maximum: waits for the autoscaler instead of failing


def test_subtract_reserved_covers_a_lagging_usage_report():
    totals = [{"CPU": 2.0}]
    assert subtract_reserved([{"CPU": 2.0}], totals, {"CPU": 1.0}) == [{"CPU": 1.0}]
    # the report already shows the usage: nothing more to take
    assert subtract_reserved([{"CPU": 1.0}], totals, {"CPU": 1.0}) == [{"CPU": 1.0}]

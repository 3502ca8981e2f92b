"""Placement across clusters: fit, accelerator, price, locality; pinning; draining. Pure data."""
from trainyard.scheduler import ClusterView, QueuedJob, TickConfig, plan_tick
from trainyard.scheduler.placement import hourly_cost, rank_clusters
from trainyard.scheduler.reasons import CLUSTER_UNHEALTHY

from test_scheduler_quotas import gpu_cluster, gpu_job

CFG = TickConfig()


def cpu_cluster(name, cpus=8.0, **kw):
    return ClusterView(name, nodes_free=[{"CPU": cpus}], nodes_total=[{"CPU": cpus}], **kw)


def options(job, *clusters):
    from trainyard.scheduler.policy import pack
    return [(c, pack(job.per_worker, job.workers, c.nodes_free)) for c in clusters]


def test_fit_spreads_load_like_schedule():
    job = QueuedJob("j", 1, {"CPU": 2.0})
    small, big = cpu_cluster("small", 4), cpu_cluster("big", 16)
    scores = rank_clusters(job, options(job, small, big), config=CFG)
    assert [s.cluster for s in scores] == ["big", "small"]
    assert scores[0].parts["fit"] == 14 / 16


def test_ties_go_by_name():
    job = QueuedJob("j", 1, {"CPU": 1.0})
    assert rank_clusters(job, options(job, cpu_cluster("b"), cpu_cluster("a")), config=CFG)[0].cluster == "a"


def test_cpu_jobs_keep_off_gpu_clusters_and_gpu_jobs_go_to_them():
    cpu = QueuedJob("c", 1, {"CPU": 1.0})
    gpus = gpu_cluster("gpus")
    plain = cpu_cluster("plain", 32)
    assert rank_clusters(cpu, options(cpu, gpus, plain), config=CFG)[0].cluster == "plain"
    gpu = gpu_job("g")
    ranked = rank_clusters(gpu, options(gpu, gpus), config=CFG)
    assert ranked[0].parts["accelerator"] == 1.0


def test_cheaper_cluster_wins_when_prices_are_declared():
    job = gpu_job("g", gpus=2)
    dear = gpu_cluster("dear", prices={"GPU": 4.0})
    cheap = gpu_cluster("zcheap", prices={"GPU": 1.0})
    unpriced = gpu_cluster("unpriced")
    assert hourly_cost(job, dear) == 8.0 and hourly_cost(job, unpriced) is None
    scores = {s.cluster: s for s in rank_clusters(job, options(job, dear, cheap, unpriced), config=CFG)}
    assert scores["zcheap"].parts["price"] == 1.0 and scores["dear"].parts["price"] == 0.25
    assert scores["unpriced"].parts["price"] == 0.5
    assert max(scores.values(), key=lambda s: s.total).cluster == "zcheap"


def test_a_resumed_job_goes_back_to_its_checkpoint():
    near = gpu_cluster("near", gpus=8, free_gpus=[2], region="eu")
    far = gpu_cluster("far", gpus=8, prices={"GPU": 0.1})
    same_region = gpu_cluster("same-region", gpus=8, region="eu")
    job = gpu_job("r", gpus=2, checkpoint_cluster="near", checkpoint_region="eu")
    assert rank_clusters(job, options(job, near, far, same_region), config=CFG)[0].cluster == "near"
    job = gpu_job("r", gpus=2, checkpoint_cluster="gone", checkpoint_region="eu")
    assert rank_clusters(job, options(job, near, far, same_region), config=CFG)[0].cluster == "same-region"


def test_weights_are_configurable():
    job = gpu_job("r", gpus=2, checkpoint_cluster="near")
    near = gpu_cluster("near", free_gpus=[2])
    roomy = gpu_cluster("roomy")
    cfg = TickConfig(w_locality_cluster=0.0)
    assert rank_clusters(job, options(job, near, roomy), config=cfg)[0].cluster == "roomy"


def test_pinned_jobs_stay_pinned():
    job = gpu_job("p", cluster="dear")
    clusters = [gpu_cluster("dear", prices={"GPU": 9.0}), gpu_cluster("cheap", prices={"GPU": 1.0})]
    plan = plan_tick([job], clusters=clusters, now=0.0)
    assert [(d.job_id, d.cluster) for d in plan.dispatch] == [("p", "dear")]


def test_an_unhealthy_clusters_jobs_move_elsewhere():
    down = gpu_cluster("home", healthy=False, region="eu")
    other = gpu_cluster("other")
    job = gpu_job("resumed", checkpoint_cluster="home", checkpoint_region="eu")
    plan = plan_tick([job], clusters=[down, other], now=0.0)
    assert [(d.job_id, d.cluster) for d in plan.dispatch] == [("resumed", "other")]


def test_a_job_pinned_to_an_unhealthy_cluster_waits_with_the_reason():
    plan = plan_tick([gpu_job("p", cluster="home")], clusters=[gpu_cluster("home", healthy=False), gpu_cluster("x")],
                     now=0.0)
    pending = plan.pending("p")
    assert pending.reason.code == CLUSTER_UNHEALTHY and pending.reason.cluster == "home"
    assert "pinned" in pending.reason.message
    plan = plan_tick([gpu_job("q")], clusters=[gpu_cluster("a", healthy=False), gpu_cluster("b", healthy=False)],
                     now=0.0)
    assert plan.pending("q").reason.code == CLUSTER_UNHEALTHY


def test_unknown_pinned_cluster_and_never_fits_are_rejected():
    plan = plan_tick([gpu_job("nope", cluster="nope"), gpu_job("huge", gpus=64)], clusters=[gpu_cluster("a")], now=0.0)
    fields = {d.job_id: d.field for d in plan.reject}
    assert fields == {"nope": "resources.cluster", "huge": "resources.gpus_per_worker"}


def test_a_job_that_fits_only_an_unhealthy_cluster_does_not_hold_a_healthy_one():
    big_down = gpu_cluster("big", gpus=8, healthy=False)
    small_up = gpu_cluster("small", gpus=2)
    queue = [gpu_job("wide", gpus=8, seq=1), gpu_job("narrow", gpus=1, seq=2)]
    plan = plan_tick(queue, clusters=[big_down, small_up], now=0.0, config=TickConfig(fair_share=False))
    assert plan.pending("wide").reason.code == CLUSTER_UNHEALTHY and plan.pending("wide").reason.cluster == "big"
    assert [(d.job_id, d.cluster) for d in plan.dispatch] == [("narrow", "small")]

"""The cost record wired in (ledger + runner figures -> JobCost on the job, REST, CLI) and
stuck-job detection (STALLED, on_stall policies). Real SQLite store and API; the Ray
dashboard is the fake of test_api.py; the controller's clock is a fake one."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from test_api import server, spec  # noqa: F401  (the fixture, and tests/unit is on sys.path)
from trainyard.controller import costs
from trainyard.controller.stall import RESUMED, STALLED, StallPolicy, StallWatch, policy_for
from trainyard.store import state as st

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _usage(**over):
    base = {"steps": 100, "step_seconds": 1500.0, "flops_per_step": 4e14, "accelerator_type": "H100",
            "dtype": "bf16", "workers": 2}
    base.update(over)
    return base


# -- the record from attempts and runner figures (pure) ---------------------------------------------

def test_gpu_hours_are_workers_times_gpus_times_hours_held_and_mfu_is_a_fraction():
    job = {"resources": {"workers": 2, "gpus_per_worker": 4, "cpus_per_worker": 8}}
    record = costs.cost_record(job, submitted_at=T0, finished_at=T0 + timedelta(hours=1, minutes=1),
                               attempts=[(T0 + timedelta(minutes=1), T0 + timedelta(hours=1, minutes=1))],
                               result={"usage": _usage()})
    assert record is not None
    assert record.gpu_hours == pytest.approx(2 * 4 * 1.0)
    assert record.cpu_hours == pytest.approx(2 * 8 * 1.0)
    assert record.queued_seconds == pytest.approx(60) and record.wall_seconds == pytest.approx(3660)
    # 100 steps x 4e14 FLOPs over 8 H100s (989.4 TFLOP/s bf16) for 1500 s of steps
    assert record.mfu == pytest.approx(100 * 4e14 / (8 * 989.4e12 * 1500))
    assert 0 < record.mfu <= 1
    assert record.busy_fraction == pytest.approx(1500 / 3600)
    assert record.cost is None and record.currency is None  # no prices: no money, never a guess
    out = record.to_dict()
    assert out["gpu_hours"] == 8.0 and out["restarts"] == 0


def test_earlier_attempts_count_as_restarts_and_a_kept_first_start_does_not_overlap():
    job = {"resources": {"workers": 1, "cpus_per_worker": 2}}
    first = (T0, T0 + timedelta(minutes=10))
    # a requeued job keeps its first started_at: the ledger's second entry starts there too
    second = (T0, T0 + timedelta(minutes=30))
    record = costs.cost_record(job, submitted_at=T0, finished_at=second[1], attempts=[first, second])
    assert record.restarts == 1 and record.allocations == 2
    assert record.held_seconds == pytest.approx(30 * 60)
    assert record.cpu_hours == pytest.approx(2 * 0.5)
    assert record.mfu is None  # no runner figures: held, not busy


def test_a_malformed_usage_payload_is_ignored_not_trusted():
    job = {"resources": {"workers": 1}}
    attempts = [(T0, T0 + timedelta(minutes=1))]
    for bad in ({"steps": -1}, {"steps": "many"}, {"step_seconds": float("nan"), "steps": 3}, "text", None):
        record = costs.cost_record(job, submitted_at=T0, finished_at=attempts[0][1], attempts=attempts,
                                   result={"usage": bad})
        assert record is not None and record.busy_fraction == 0 and record.mfu is None
    # an accelerator the peak table does not know: the GPU job keeps its record, without an MFU
    gpu = {"resources": {"workers": 1, "gpus_per_worker": 1}}
    record = costs.cost_record(gpu, submitted_at=T0, finished_at=attempts[0][1], attempts=attempts,
                               result={"usage": {"steps": 3, "step_seconds": 1.0, "flops_per_step": 1e9,
                                                 "accelerator_type": "Z9000" * 100}})
    assert record is not None and record.mfu is None and record.gpu_hours == pytest.approx(60 / 3600)


def test_worker_step_time_over_the_ledger_span_is_clipped_not_an_error():
    job = {"resources": {"workers": 1}}
    attempts = [(T0, T0 + timedelta(seconds=10))]
    record = costs.cost_record(job, submitted_at=T0, finished_at=attempts[0][1], attempts=attempts,
                               result={"usage": _usage(step_seconds=50.0, accelerator_type=None, dtype="fp32",
                                                       flops_per_step=1e6)})
    assert record.busy_fraction == pytest.approx(1.0)


def test_cluster_prices_give_money_for_the_one_node_type_the_workers_fit():
    prices = {"prices": {
        "gpu": {"node_type": "gpu", "instance_type": "g5.xlarge", "market": "on_demand", "per_hour": 1.0,
                "cpus": 4.0, "gpus": 1.0, "accelerator_type": "A10G", "as_of": "2026-11-01", "currency": "USD"},
        "cpu": {"node_type": "cpu", "instance_type": "m5.xlarge", "market": "on_demand", "per_hour": 0.2,
                "cpus": 4.0, "gpus": 0.0, "accelerator_type": None, "as_of": "2026-11-01", "currency": "USD"}}}
    job = {"resources": {"workers": 2, "gpus_per_worker": 1, "cpus_per_worker": 4}}
    record = costs.cost_record(job, submitted_at=T0, finished_at=T0 + timedelta(hours=2),
                               attempts=[(T0, T0 + timedelta(hours=2))], prices=costs.prices_of(prices))
    assert record.cost == pytest.approx(2 * 2 * 1.0) and record.currency == "USD"
    assert record.accelerator_type == "A10G"
    assert costs.prices_of({"prices": {"x": {"per_hour": 1}}}) == {}  # malformed: ignored, logged


# -- through the API (fake Ray) ----------------------------------------------------------------------

def _run_to_success(client, ctx, fakes, *, usage):
    job = client.post("/v1/jobs", json={"spec": spec(resources={"workers": 2, "cpus_per_worker": 1})}).json()
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[-1]["submission_id"]
    ray.set(sid, "RUNNING", logs='TRAINYARD_PROGRESS {"step": 3, "total_steps": 5, "epoch": 0, "metrics": {}}\n')
    ctx.controller.tick()
    result = {"metrics": {"accuracy": 0.9}, "mlflow_run_id": "r1", "mlflow_experiment_id": "1",
              "model_name": None, "model_version": None, "checkpoint": None, "usage": usage}
    ray.set(sid, "SUCCEEDED", logs=ray.jobs[sid]["logs"] + "TRAINYARD_RESULT " + json.dumps(result) + "\n")
    ctx.controller.tick()
    return job["id"]


def test_a_finished_job_shows_a_consistent_cost_record(server):  # noqa: F811
    client, ctx, fakes = server
    usage = {"steps": 5, "step_seconds": 20.0, "flops_per_step": 1e9, "accelerator_type": None, "dtype": "fp32",
             "workers": 2}
    job_id = _run_to_success(client, ctx, fakes, usage=usage)
    got = client.get(f"/v1/jobs/{job_id}").json()
    assert got["state"] == "SUCCEEDED"
    cost = got["cost"]
    # the fake Ray ran it from 1_700_000_000 to 1_700_000_100: 2 workers x 1 CPU x 100 s
    assert cost["cpu_hours"] == round(2 * 1 * 100 / 3600, 4) and cost["gpu_hours"] == 0
    assert cost["held_seconds"] == 100
    assert cost["busy_fraction"] == round(20 / 100, 4)
    assert 0 < cost["mfu"] <= 1 and cost["mfu_is_estimate"] is True  # the CPU peak is an estimate
    assert cost["cost"] is None  # the local cluster declares no prices
    listed = client.get("/v1/jobs").json()
    rows = listed["jobs"] if isinstance(listed, dict) else listed
    assert next(j for j in rows if j["id"] == job_id)["cost"] == cost


def test_a_running_job_shows_its_cost_so_far_and_a_queued_one_none(server):  # noqa: F811
    client, ctx, fakes = server
    job = client.post("/v1/jobs", json={"spec": spec()}).json()
    assert client.get(f"/v1/jobs/{job['id']}").json()["cost"] is None
    ctx.controller.tick()
    sid = fakes["local"].submissions[-1]["submission_id"]
    fakes["local"].set(sid, "RUNNING")
    ctx.controller.tick()
    live = client.get(f"/v1/jobs/{job['id']}").json()["cost"]
    assert live is not None and live["held_seconds"] > 0 and live["running_seconds"] >= live["held_seconds"]


# -- STALLED -----------------------------------------------------------------------------------------

def test_the_watch_says_stalled_once_and_resumed_when_a_step_moves():
    watch = StallWatch()
    assert watch.observe("j", None, now=0, timeout_s=60) is None
    assert watch.observe("j", None, now=59, timeout_s=60) is None
    assert watch.observe("j", None, now=60, timeout_s=60) == STALLED
    assert watch.observe("j", None, now=120, timeout_s=60) is None  # said once
    assert watch.observe("j", 4, now=121, timeout_s=60) == RESUMED
    assert watch.observe("j", 4, now=180, timeout_s=60) is None
    assert watch.observe("j", 5, now=181, timeout_s=60) is None  # moving steps never stall
    watch.keep_only([])
    assert watch.seen == {}


def test_the_spec_overrides_the_server_policy_and_repeated_stalls_fail():
    class S:
        stall_timeout_s, on_stall, stall_max_requeues = 600.0, "requeue", 1

    assert policy_for({}, S) == StallPolicy(600.0, "requeue", 1)
    assert policy_for({"failure": {"stall_timeout_s": 45, "on_stall": "stop"}}, S) == StallPolicy(45.0, "stop", 1)
    p = policy_for({}, S)
    assert p.outcome(stalls_so_far=1) == "requeue" and p.outcome(stalls_so_far=2) == "fail"
    assert StallPolicy(60, "stop").outcome(stalls_so_far=1) == "fail"


def test_stalled_is_a_running_phase_that_can_resume_requeue_or_end():
    assert st.public_state(st.STALLED) == st.RUNNING and st.STALLED in st.ACTIVE
    for new in (st.RUNNING, st.PENDING, st.FAILED, st.CANCELLING, st.SUCCEEDED):
        assert st.can_transition(st.STALLED, new)
    assert st.can_transition(st.RUNNING, st.STALLED) and not st.can_transition(st.PENDING, st.STALLED)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _running_job(client, ctx, fakes, **failure):
    body = spec(**({"failure": failure} if failure else {}))
    job = client.post("/v1/jobs", json={"spec": body}).json()
    clock = FakeClock()
    ctx.controller.reconciler.clock = clock
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[-1]["submission_id"]
    ray.set(sid, "RUNNING", logs='TRAINYARD_PROGRESS {"step": 2, "total_steps": 5, "epoch": 0, "metrics": {}}\n')
    ctx.controller.tick()  # -> RUNNING
    ctx.controller.tick()  # first look at its steps: the clock starts
    return job["id"], sid, ray, clock


def _phase(client, job_id):
    return client.get(f"/v1/jobs/{job_id}").json()["phase"]


def test_a_job_with_no_new_step_is_stalled_stopped_and_queued_again(server):  # noqa: F811
    client, ctx, fakes = server
    job_id, sid, ray, clock = _running_job(client, ctx, fakes)
    clock.now += 599
    ctx.controller.tick()
    assert _phase(client, job_id) == "RUNNING" and ray.stops == []
    clock.now += 2
    ctx.controller.tick()  # logs are read at most every 30 s (a tenth of the timeout, capped)
    assert _phase(client, job_id) == "RUNNING"
    clock.now += 28
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job_id}").json()
    assert got["phase"] == "STALLED" and got["state"] == "RUNNING" and "no step for 629 s" in got["message"]
    assert ray.stops == [sid]  # the fake Ray stops it at once (STOPPED)
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job_id}").json()
    # requeued, and dispatched again in the same tick (reconcile, then dispatch)
    assert got["phase"] == "SUBMITTED" and got["attempt"] == 2
    tos = [e["to"] for e in got["events"]]
    assert tos[tos.index("STALLED"):] == ["STALLED", "PENDING", "DISPATCHING", "SUBMITTED"]
    assert ray.submissions[-1]["submission_id"] == sid.rsplit("-", 1)[0] + "-2"  # the next attempt
    assert got["started_at"] is None  # the next attempt starts its own clock
    ray.set(ray.submissions[-1]["submission_id"], "RUNNING")
    ctx.controller.tick()
    ray.set(ray.submissions[-1]["submission_id"], "SUCCEEDED", logs="done\n")
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job_id}").json()
    assert got["state"] == "SUCCEEDED" and got["cost"]["restarts"] == 1 and got["cost"]["allocations"] == 2


def test_on_stall_stop_fails_the_job_and_its_cost_counts_the_held_time(server):  # noqa: F811
    client, ctx, fakes = server
    job_id, sid, ray, clock = _running_job(client, ctx, fakes, stall_timeout_s=60, on_stall="stop")
    clock.now += 61
    ctx.controller.tick()
    assert _phase(client, job_id) == "STALLED" and ray.stops == [sid]
    ctx.controller.tick()
    got = client.get(f"/v1/jobs/{job_id}").json()
    assert got["state"] == "FAILED" and "on_stall: stop" in got["message"]
    assert got["cost"] is not None and got["cost"]["held_seconds"] > 0


def test_on_stall_none_only_marks_it_and_a_new_step_brings_it_back(server):  # noqa: F811
    client, ctx, fakes = server
    job_id, sid, ray, clock = _running_job(client, ctx, fakes, stall_timeout_s=60, on_stall="none")
    clock.now += 61
    ctx.controller.tick()
    assert _phase(client, job_id) == "STALLED" and ray.stops == []
    ray.jobs[sid]["logs"] += 'TRAINYARD_PROGRESS {"step": 3, "total_steps": 5, "epoch": 0, "metrics": {}}\n'
    clock.now += 10
    ctx.controller.tick()
    assert _phase(client, job_id) == "RUNNING"


def test_a_stall_timeout_below_30_s_in_a_spec_is_refused_with_the_field_named(server):  # noqa: F811
    client, ctx, fakes = server
    resp = client.post("/v1/jobs", json={"spec": spec(failure={"stall_timeout_s": 5})})
    assert resp.status_code == 422 or resp.status_code == 400
    assert "failure.stall_timeout_s" in resp.text


# -- the CLI's cells ---------------------------------------------------------------------------------

def test_cli_cells_and_rows():
    from trainyard.cli.costs import cost_rows, gpu_hours_cell, money_cell

    cost = {"gpu_hours": 0.0, "cpu_hours": 0.0556, "cost": None, "currency": None, "wall_seconds": 120.0,
            "queued_seconds": 20.0, "running_seconds": 100.0, "busy_fraction": 0.2, "goodput": 0.2, "mfu": 0.01,
            "mfu_is_estimate": True, "accelerator_type": None, "dtype": "fp32", "lost_total_seconds": 0.0,
            "restarts": 0, "warnings": []}
    job = {"cost": cost}
    assert gpu_hours_cell(job) == "0.0556 cpu-h" and money_cell(job) == ""
    assert money_cell({"cost": {**cost, "cost": 3.5, "currency": "USD"}}) == "3.50 USD"
    rows = dict(cost_rows(job))
    assert rows["MFU"] == "1.0% (estimate: CPU peak)" and rows["busy / goodput"] == "20.0% / 20.0%"
    assert cost_rows({"cost": None}) == [] and gpu_hours_cell({}) == ""


def test_a_cluster_registered_with_node_prices_gives_jobs_a_money_figure(server):  # noqa: F811
    client, ctx, fakes = server
    price = {"node_type": "cpu-node", "instance_type": "m5.large", "market": "on_demand", "per_hour": 3.6,
             "cpus": 2, "gpus": 0, "accelerator_type": None, "as_of": "2026-11-01", "currency": "USD"}
    body = {"name": "priced", "address": "http://ray-priced.example:8265", "check": False,
            "max_resources": {"nodes": [{"CPU": 2}], "prices": {"cpu-node": price}}}
    resp = client.post("/v1/clusters", json=body)
    assert resp.status_code in (200, 201), resp.text
    bad = {**body, "name": "bad-priced", "max_resources": {"nodes": [{"CPU": 2}],
                                                           "prices": {"cpu-node": {**price, "per_hour": -1}}}}
    resp = client.post("/v1/clusters", json=bad)
    assert resp.status_code == 422 and "per_hour" in resp.text
    job = client.post("/v1/jobs", json={"spec": spec(resources={"workers": 1, "cpus_per_worker": 1,
                                                                "cluster": "priced"})}).json()
    ctx.controller.tick(refresh=True)
    ray = fakes["priced"]
    sid = ray.submissions[-1]["submission_id"]
    ray.set(sid, "RUNNING")
    ctx.controller.tick()
    ray.set(sid, "SUCCEEDED", logs="done\n")
    ctx.controller.tick()
    cost = client.get(f"/v1/jobs/{job['id']}").json()["cost"]
    # 100 s x one worker holding half the node (1 of its 2 CPUs) x 3.60 USD/h
    assert cost["cost"] == round(100 / 3600 * 0.5 * 3.6, 2) and cost["currency"] == "USD"
    assert cost["prices_as_of"] == "2026-11-01" and cost["markets"] == ["on_demand"]


# -- sweeps: the sum of their trials -----------------------------------------------------------------

def test_a_sweep_record_sums_its_trials_each_clipped_to_the_sweep():
    job = {"resources": {"workers": 2, "cpus_per_worker": 1}}
    t = T0.timestamp()
    trials = [{"trial": "a", "start": t + 10, "end": t + 370, "steps": 10, "step_seconds": 100.0,
               "flops_per_step": 1e9},
              {"trial": "b", "start": t - 50, "end": t + 3610},  # stopped early: no figures; clipped
              "junk", {"trial": "c", "start": "x", "end": 3}]
    record = costs.sweep_record(job, started_at=T0, ended_at=T0 + timedelta(hours=1), trials_usage=trials)
    assert record.trials == 2
    assert record.cpu_hours == pytest.approx(2 * (360 + 3600) / 3600)
    assert record.held_seconds == pytest.approx(360 + 3600)
    assert record.busy_fraction == pytest.approx(2 * 100 / (2 * (360 + 3600)))
    assert 0 < record.mfu <= 1
    assert costs.sweep_record(job, started_at=T0, ended_at=T0, trials_usage=[]) is None


def test_get_sweep_shows_the_sum_of_its_trials(server):  # noqa: F811
    client, ctx, fakes = server
    body = spec(resources={"workers": 1, "cpus_per_worker": 1})
    body["sweep"] = {"num_trials": 2, "metric": "accuracy", "mode": "max",
                     "search_space": {"training.lr": {"choice": [0.01, 0.02]}}}
    resp = client.post("/v1/sweeps", json={"spec": body})
    assert resp.status_code == 201, resp.text
    sweep_id = resp.json()["id"]
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[-1]["submission_id"]
    ray.set(sid, "RUNNING")
    ctx.controller.tick()
    start = 1_700_000_000  # the fake Ray's start time; it ends 100 s later
    result = {"kind": "sweep", "metrics": {"best_accuracy": 0.9}, "mlflow_run_id": None,
              "mlflow_experiment_id": None, "leaderboard": {"rows": []}, "best": None,
              "trials_usage": [{"trial": "t1", "start": start + 5, "end": start + 45, "steps": 5.0,
                                "step_seconds": 20.0, "flops_per_step": 1e9},
                               {"trial": "t2", "start": start + 50, "end": start + 95}]}
    ray.set(sid, "SUCCEEDED", logs="TRAINYARD_RESULT " + json.dumps(result) + "\n")
    ctx.controller.tick()
    got = client.get(f"/v1/sweeps/{sweep_id}").json()
    cost = got["cost"]
    assert got["state"] == "SUCCEEDED" and cost["trials"] == 2
    assert cost["held_seconds"] == 85 and cost["cpu_hours"] == round(85 / 3600, 4)
    assert cost["busy_fraction"] == round(20 / 85, 4)


def test_jobs_list_wide_and_jobs_show_print_the_cost(monkeypatch, capsys, trainyard_home):
    from test_cli import FakeClient

    from trainyard.cli import main as cli

    cost = {"gpu_hours": 1.5, "cpu_hours": 12.0, "cost": 4.2, "currency": "USD", "prices_as_of": "2026-11-01",
            "wall_seconds": 3700.0, "queued_seconds": 100.0, "running_seconds": 3600.0, "busy_fraction": 0.8,
            "goodput": 0.75, "mfu": 0.41, "mfu_is_estimate": False, "accelerator_type": "A10G", "dtype": "bf16",
            "lost_total_seconds": 60.0, "restarts": 1, "warnings": []}

    class Client(FakeClient):
        def get_job(self, job_id):
            return super().get_job(job_id).model_copy(update={"cost": cost})

    client = Client()
    monkeypatch.setattr(cli, "_client", lambda args: client)
    assert cli.main(["jobs", "list"]) == 0
    assert "GPU-h" not in capsys.readouterr().out
    assert cli.main(["jobs", "list", "--wide"]) == 0
    out = capsys.readouterr().out
    assert "GPU-h" in out and "1.5000" in out and "4.20 USD" in out
    assert cli.main(["jobs", "show", "tiny-1"]) == 0
    out = capsys.readouterr().out
    assert "41.0%" in out and "80.0% / 75.0%" in out and "1 restart(s)" in out and "A10G (bf16)" in out


# -- the runner's side (torch only where the counter needs it) ---------------------------------------

def test_counted_counts_a_real_step_as_it_runs_and_keeps_its_update():
    torch = pytest.importorskip("torch")
    from trainyard.costs.flops import counted

    model = torch.nn.Linear(16, 8, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()

    def step():
        opt.zero_grad()
        model(torch.ones(4, 16)).sum().backward()
        opt.step()
        return {"loss": 1.0}

    out, flops = counted(step)
    # forward 2*B*in*out; backward the same again for the weight's gradient (the input needs none)
    assert out == {"loss": 1.0} and flops == 2 * (2 * 4 * 16 * 8)
    assert not torch.equal(model.weight, before)  # the step's update is the training's own


def test_usage_record_mfu_and_busy_fraction_and_refusal():
    from trainyard.runner.usage import mlflow_figures, usage_record

    device = {"device_name": "cpu", "accelerator_type": None, "peak_flops_per_device": 1e11, "peak_per": "core",
              "peak_is_estimate": True, "dtype": "fp32"}
    usage = usage_record(steps=10, step_seconds=5.0, started_unix=100.0, flops_per_micro_batch=1e9,
                         gradient_accumulation=2, world_size=2, devices_per_worker=1.0, device=device, now=120.0)
    assert usage["flops_per_step"] == 4e9 and usage["busy_fraction"] == 5 / 20
    assert usage["mfu"] == pytest.approx(10 * 4e9 / (1e11 * 2 * 5.0))
    params, metrics = mlflow_figures(usage)
    assert params["cost.peak_per"] == "core" and metrics["cost.worker_mfu"] == usage["mfu"]
    impossible = usage_record(steps=10, step_seconds=5.0, started_unix=100.0, flops_per_micro_batch=1e12,
                              gradient_accumulation=1, world_size=1, devices_per_worker=1.0, device=device, now=120.0)
    assert impossible["mfu"] is None  # above 1: a wrong peak or count, refused
    none = usage_record(steps=0, step_seconds=0.0, started_unix=100.0, flops_per_micro_batch=None,
                        gradient_accumulation=1, world_size=1, devices_per_worker=1.0, device=device, now=100.0)
    assert none["mfu"] is None and none["busy_fraction"] is None and "cost.worker_mfu" not in mlflow_figures(none)[1]


def test_the_cost_sink_copies_the_record_into_the_run_and_never_raises(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    from trainyard.controller.cost_sink import CostSink

    uri = (tmp_path / "mlruns").as_uri()  # MLflow's own file store: no server, real client
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("cost-sink"))
    record = costs.cost_record({"resources": {"workers": 2, "gpus_per_worker": 1}}, submitted_at=T0,
                               finished_at=T0 + timedelta(hours=1), attempts=[(T0, T0 + timedelta(hours=1))],
                               result={"usage": _usage()})
    sink = CostSink(uri)
    sink.submit(run.info.run_id, record)
    sink.submit("no-such-run", record)  # MLflow refuses it: logged and dropped, nothing raised
    sink.submit(None, record)  # a job without a run: nothing to do
    assert sink.drain(timeout=30)
    got = client.get_run(run.info.run_id).data
    assert got.metrics["cost.gpu_hours"] == pytest.approx(2.0) and got.params["cost.accelerator_type"] == "H100-SXM"
    assert (sink.sent, sink.dropped) == (1, 1)
    assert not CostSink("").enabled


def test_clusters_add_config_output_is_accepted_by_the_api_with_its_prices(server):  # noqa: F811
    from pathlib import Path

    from trainyard.clusters.limits import max_resources_from_args

    client, ctx, fakes = server
    aws = Path(__file__).resolve().parents[2] / "cluster" / "aws.yaml"
    body = max_resources_from_args(config=str(aws))
    assert body["prices"] and all(p["currency"] == "USD" and p["per_hour"] > 0 for p in body["prices"].values())
    resp = client.post("/v1/clusters", json={"name": "aws", "address": "http://ray-aws.example:8265",
                                             "check": False, "max_resources": body})
    assert resp.status_code in (200, 201), resp.text

"""One controller tick at 1k, 10k and 50k queued jobs, store included, next to the pure policy.

    python benchmarks/scheduler_scale.py [--smoke] [--sizes 1000,10000,50000] [--db-url URL]

Setup per size: a real store (a SQLite file; `--db-url postgresql://...` for an empty
PostgreSQL database, which is wiped), 3 clusters of 4 nodes x 8 CPUs, each held by one
RUNNING job that reserves the whole cluster, and N queued jobs of 1-4 workers across 10
projects (10% pinned to a cluster, priorities 0-2). So every queued job waits, and each
tick has the whole queue to decide about. The Ray dashboard is an in-process stand-in that
reports the 3 running jobs as RUNNING: Ray is not what is measured here.

Measured, for the platform (trainyard.controller.Controller.tick):
  burst_tick_s   the first tick after N jobs landed in the store at once (the controller was
                 already running with an empty queue): reads them, plans, writes N reasons
  change_tick_s  median tick after one more submission (reads 1 row, plans all, writes 1)
  idle_tick_s    median tick when nothing changed (the plan is kept; no queue read)
  resync_tick_s  median tick that rescans (id, version) of the queue and finds nothing new
                 (what a write from another process costs)
and for the baseline, main's controller as of this change (re-run here, same queries):
  burst_tick_s   the first tick after the burst (one transaction per "waiting" note)
  steady_tick_s  median tick afterwards (the queue read twice: dispatch, then demand)
and for the pure policy on the same jobs in memory: plan_tick_s, schedule_s.
The baseline's burst tick is skipped above --baseline-burst-max (minutes at 50k).

Idle server: the CPU (cores) a real `python -m trainyard.api` uses over 20 s with
--idle-queued jobs queued and nothing happening, for this tree and for main's server
(--baseline-repo, run on a copy of the store; its notes are written beforehand, so it is
measured in its steady state). --smoke measures this tree only, at 1,000 jobs.

Prints one JSON line; ratios are baseline / platform (higher is better). Timings depend on
the machine's load (reported). Without --smoke it takes /tmp/trainyard-measure.lock.
"""
from __future__ import annotations

import _bench  # first: import paths

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = _bench.REPO

from sqlalchemy import bindparam, insert, update  # noqa: E402

from trainyard.clusters.demand import plan_demand  # noqa: E402
from trainyard.clusters.registry import ClusterRegistry  # noqa: E402
from trainyard.config import Settings  # noqa: E402
from trainyard.controller import views  # noqa: E402
from trainyard.controller.group_commit import GroupCommitter  # noqa: E402
from trainyard.controller.loop import Controller  # noqa: E402
from trainyard.scheduler import WAIT, RunningJob, TickConfig, plan_tick, schedule  # noqa: E402
from trainyard.store import Database  # noqa: E402
from trainyard.store import clusters as clusters_repo  # noqa: E402
from trainyard.store import jobs as jobs_repo  # noqa: E402
from trainyard.store import state as st  # noqa: E402
from trainyard.store.models import Base, JobRow  # noqa: E402

CLUSTERS = ("east", "west", "north")
NODES, CPUS = 4, 8.0
PROJECTS = [f"project-{i}" for i in range(10)]
TARGETS = {"tick_at_10k_s": 0.1, "burst_tick_at_10k_s": 1.0}


class StandInRay:
    """The dashboard calls a tick makes for running jobs: status, node resources, and the log
    the stall watch reads for the last step (a running job that has printed one)."""

    def __init__(self, name: str):
        self.name = name

    def status(self, submission_id):
        return {"status": "RUNNING", "message": "", "start_time": 1_700_000_000_000, "end_time": None}

    def logs(self, submission_id):
        return 'TRAINYARD_PROGRESS {"step": 1, "total_steps": 100, "epoch": 0, "metrics": {}}\n'

    def resources(self):
        return {"nodes": [{"id": f"{self.name}-{i}", "total": {"CPU": CPUS}, "free": {"CPU": 0.0}}
                          for i in range(NODES)]}

    def close(self):
        pass


def _spec(name: str, workers: int, cluster: str | None = None) -> dict:
    res = {"workers": workers, "cpus_per_worker": 1.0}
    if cluster:
        res["cluster"] = cluster
    return {"name": name, "workload": "cnn", "project": "default", "priority": 0, "resources": res,
            "training": {"max_steps": 100}, "hyperparameters": {"lr": 0.001}}


def _job_rows(n: int, *, start: int, rng: random.Random, base: datetime) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        pinned = CLUSTERS[i % 3] if rng.random() < 0.1 else None
        project = PROJECTS[rng.randrange(10)]
        rows.append({"id": f"q{i:07d}", "kind": "job", "name": f"q{i}", "project": project,
                     "priority": rng.choice((0, 0, 0, 1, 2)), "spec": _spec(f"q{i}", rng.randint(1, 4), pinned),
                     "phase": st.PENDING, "attempt": 0, "created_at": base + timedelta(milliseconds=i),
                     "message": "queued", "cancel_requested": 0, "version": 1})
    return rows


def _fresh_store(url: str | None, folder: Path, name: str) -> Database:
    db = Database(url or f"sqlite:///{folder / name}.db")
    if url:  # an empty PostgreSQL database for each store
        Base.metadata.drop_all(db.engine)
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    db.upgrade()
    with db.session() as s:
        for c in CLUSTERS:
            clusters_repo.add_cluster(s, name=c, dashboard_url=f"http://{c}.example:8265")
            clusters_repo.record_resources(s, c, StandInRay(c).resources())
        for k, c in enumerate(CLUSTERS):
            job = jobs_repo.create_job(s, spec=_spec(f"holder-{c}", NODES, c) | {
                "resources": {"workers": NODES, "cpus_per_worker": CPUS, "cluster": c}},
                name=f"holder-{c}", project=PROJECTS[k], priority=0, job_id=f"holder-{c}")
            for phase in (st.DISPATCHING, st.SUBMITTED, st.RUNNING):
                jobs_repo.transition(s, job, phase, reason="benchmark setup", cluster=c, attempt=1,
                                     submission_id=jobs_repo.submission_id_for(job.id, 1))
    return db


def _burst(db: Database, rows: list[dict]) -> None:
    with db.session() as s:
        for i in range(0, len(rows), 5000):
            s.execute(insert(JobRow.__table__), rows[i:i + 5000])


def _controller(db: Database, folder: Path) -> Controller:
    settings = Settings(db_url=db.url, storage=f"file://{folder / 'storage'}", ray_dashboard_url="",
                        extra={"packages_dir": str(folder / "packages")})
    registry = ClusterRegistry(db, settings, client_factory=lambda name, url, token: StandInRay(name))
    # as the server builds it: the tick's notes go through the group committer (a lone writer
    # here, so each chunk of notes is a commit of its own, as in a quiet server)
    ctrl = Controller(db, registry, settings, resources_interval_s=3600.0, commit=GroupCommitter(db).run)
    ctrl.refresh_clusters()
    return ctrl


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _median(fn, n: int) -> float:
    return statistics.median(_timed(fn) for _ in range(n))


def baseline_tick(db: Database, health: dict) -> None:
    """What main's Controller.dispatch + DemandStep.plan did per tick (no job fits, so no Ray call)."""
    with db.session() as s:
        pending = jobs_repo.pending_jobs(s)
        queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                  project=j.project) for j in pending]
        messages = {j.id: j.message for j in pending}
        reserved = views.reserved_by_cluster(jobs_repo.active_jobs(s))
        rows = clusters_repo.list_clusters(s)
    cviews = [v for v in (views.cluster_view(r, healthy=health[r.name], reserved=reserved.get(r.name))
                          for r in rows) if v is not None]
    for d in schedule(queue, cviews):
        if d.action == WAIT and messages.get(d.job_id) != f"waiting: {d.reason}":
            with db.session() as s:  # one transaction per note, as main's _note did
                job = jobs_repo.find_job(s, d.job_id)
                if job is not None and job.phase not in st.TERMINAL:
                    jobs_repo.update_job(s, job, message=f"waiting: {d.reason}")
    # the demand step read everything again and ran the same pass
    with db.session() as s:
        pending = jobs_repo.pending_jobs(s)
        queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                  project=j.project) for j in pending]
        active_rows = jobs_repo.active_jobs(s)
        active = {r.cluster: [views.queued_job(r.id, r.spec)] for r in active_rows}
        reserved = views.reserved_by_cluster(active_rows)
        rows = clusters_repo.list_clusters(s)
        live = {r.name: [dict(n.get("total") or {}) for n in (r.last_resources or {}).get("nodes") or []]
                for r in rows}
    cviews = [v for v in (views.cluster_view(r, healthy=health[r.name], reserved=reserved.get(r.name))
                          for r in rows) if v is not None]
    plan_demand(queue, schedule(queue, cviews), cviews, active=active, live_nodes=live)


def _prime_baseline_notes(db: Database, health: dict) -> None:
    """Give every job the note main's tick would write, in one untimed batch."""
    with db.session() as s:
        pending = jobs_repo.pending_jobs(s)
        queue = [views.queued_job(j.id, j.spec, priority=j.priority, seq=j.created_at.timestamp(),
                                  project=j.project) for j in pending]
        reserved = views.reserved_by_cluster(jobs_repo.active_jobs(s))
        rows = clusters_repo.list_clusters(s)
    cviews = [v for v in (views.cluster_view(r, healthy=health[r.name], reserved=reserved.get(r.name))
                          for r in rows) if v is not None]
    table = JobRow.__table__
    notes = [{"b_id": d.job_id, "b_message": f"waiting: {d.reason}"} for d in schedule(queue, cviews)
             if d.action == WAIT]
    with db.session() as s:
        s.execute(update(table).where(table.c.id == bindparam("b_id")).values(message=bindparam("b_message")), notes)


def measure(n: int, *, url: str | None, folder: Path, baseline_burst: bool, reps: int) -> dict:
    rng = random.Random(n)
    base = datetime.now(timezone.utc) - timedelta(hours=1)
    rows = _job_rows(n, start=0, rng=rng, base=base)
    extra = _job_rows(reps, start=n, rng=rng, base=base + timedelta(minutes=30))
    out: dict = {"queued": n}

    # --- platform
    db = _fresh_store(url, folder, f"platform-{n}")
    ctrl = _controller(db, folder)
    ctrl.tick()  # running, empty queue
    ctrl.tick()
    _burst(db, rows)
    burst = _timed(ctrl.tick)
    assert len(ctrl.queue.pending) == n and ctrl.dispatcher.notes_written >= n, (len(ctrl.queue.pending), ctrl.dispatcher.notes_written)
    ctrl.tick()
    changes = []
    for row in extra:
        _burst(db, [row])
        changes.append(_timed(ctrl.tick))
    plans = ctrl.dispatcher.plans
    idle = _median(ctrl.tick, reps)
    assert ctrl.dispatcher.plans == plans, "an idle tick planned"

    def resync():
        ctrl.queue.mark_dirty()
        ctrl.tick()
    resync_s = _median(resync, reps)
    out["platform"] = {"burst_tick_s": round(burst, 4), "change_tick_s": round(statistics.median(changes), 4),
                       "idle_tick_s": round(idle, 5), "resync_tick_s": round(resync_s, 4),
                       "last_plan_s": round(ctrl.dispatcher.last_plan_s or 0.0, 4)}

    # --- the pure policy on the same jobs, in memory
    queue = [q.job for q in ctrl.queue.pending.values()]
    cviews, _, _ = ctrl.dispatcher._clusters()
    now = time.time()
    running = [RunningJob(id=a.job.id, project=a.job.project, cluster=a.cluster, workers=a.job.workers,
                          per_worker=a.job.per_worker, started_at=now) for a in ctrl.queue.active.values()]
    config = TickConfig(preemption=False)
    out["policy"] = {"plan_tick_s": round(_median(lambda: plan_tick(queue, running=running, clusters=cviews,
                                                                    now=now, config=config), 3), 4),
                     "schedule_s": round(_median(lambda: schedule(queue, cviews), 3), 4)}
    db.dispose()

    # --- baseline: main's tick, on a store of its own
    db = _fresh_store(url, folder, f"baseline-{n}")
    health = {c: True for c in CLUSTERS}
    baseline_tick(db, health)
    _burst(db, rows + extra)
    out["baseline"] = {"burst_tick_s": round(_timed(lambda: baseline_tick(db, health)), 3) if baseline_burst else None,
                       "steady_tick_s": None}
    if not baseline_burst:
        _prime_baseline_notes(db, health)
    out["baseline"]["steady_tick_s"] = round(_median(lambda: baseline_tick(db, health), max(1, min(reps, 3))), 4)
    db.dispose()

    p, b = out["platform"], out["baseline"]
    out["ratio"] = {"burst": round(b["burst_tick_s"] / p["burst_tick_s"], 1) if b["burst_tick_s"] else None,
                    "steady_vs_change_tick": round(b["steady_tick_s"] / p["change_tick_s"], 1),
                    "steady_vs_idle_tick": round(b["steady_tick_s"] / max(p["idle_tick_s"], 1e-6), 1),
                    "change_tick_vs_plan_tick": round(p["change_tick_s"] / out["policy"]["plan_tick_s"], 2)}
    return out


def _server_cpu(db_url: str, folder: Path, *, repo: Path, window_s: float, settle_s: float) -> float:
    """Cores a real server (`python -m trainyard.api` from `repo`) uses on this store while
    nothing happens: no submission, no cluster change (the dashboards do not answer)."""
    import http.client
    import socket
    import subprocess

    import psutil

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = folder / f"home-{port}"
    home.mkdir()
    env = dict(os.environ, TRAINYARD_HOME=str(home), TRAINYARD_DB_URL=db_url, TRAINYARD_RAY_DASHBOARD_URL="",
               PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(repo / "platform"), str(repo)]))
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trainyard.api", "--port", str(port), "--log-level", "warning"],
                                env=env, stdout=log, stderr=log, cwd=str(repo))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        time.sleep(settle_s)  # the first ticks read the queue
        ps = psutil.Process(proc.pid)
        before = sum(ps.cpu_times()[:2])
        time.sleep(window_s)
        return (sum(ps.cpu_times()[:2]) - before) / window_s
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def idle_cpu(n: int, *, folder: Path, window_s: float, settle_s: float, baseline_repo: Path | None) -> dict:
    """Server CPU while idle with `n` queued: this tree's server, and main's on a copy of the store."""
    rng = random.Random(n)
    rows = _job_rows(n, start=0, rng=rng, base=datetime.now(timezone.utc) - timedelta(hours=1))
    out: dict = {"queued": n, "window_s": window_s}
    for who, repo in (("platform", REPO), ("baseline", baseline_repo)):
        if repo is None:
            out[who] = None
            continue
        db = _fresh_store(None, folder, f"idle-{who}-{n}")
        _burst(db, rows)
        with db.session() as s:  # the dashboards do not answer: point them at a closed port
            for row in clusters_repo.list_clusters(s):
                row.dashboard_url = "http://127.0.0.1:9"
        if who == "baseline":
            _prime_baseline_notes(db, {c: False for c in CLUSTERS})
        db.dispose()
        out[who] = {"cores": round(_server_cpu(db.url, folder, repo=repo, window_s=window_s, settle_s=settle_s), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="1,000 jobs, a few repetitions (< 30 s)")
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--db-url", default=None, help="an empty PostgreSQL database (wiped); default: SQLite files")
    parser.add_argument("--baseline-burst-max", type=int, default=10000,
                        help="skip the baseline's burst tick above this many jobs (one transaction per job)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--idle-queued", type=int, default=10000,
                        help="queued jobs for the idle-server CPU measurement (0: skip it)")
    parser.add_argument("--baseline-repo", default="/work/main",
                        help="a checkout of main whose server is the idle-CPU baseline ('' to skip)")
    args = parser.parse_args(argv)
    sizes = [1000] if args.smoke else [int(x) for x in args.sizes.split(",")]
    reps = 3 if args.smoke else args.reps
    out: dict = {"store": "postgresql" if args.db_url else "sqlite", "targets": TARGETS,
}
    with _bench.measurement(args.smoke) as run, tempfile.TemporaryDirectory(prefix="ty-scale-") as tmp:
        out["sizes"] = [measure(n, url=args.db_url, folder=Path(tmp), baseline_burst=n <= args.baseline_burst_max,
                                reps=reps) for n in sizes]
        idle_n = 1000 if args.smoke else args.idle_queued
        if idle_n:
            base_repo = Path(args.baseline_repo) if args.baseline_repo and not args.db_url else None
            if base_repo is not None and not (base_repo / "platform" / "trainyard").is_dir():
                base_repo = None
            out["idle_server"] = idle_cpu(idle_n, folder=Path(tmp), window_s=3.0 if args.smoke else 20.0,
                                          settle_s=2.0 if args.smoke else 8.0, baseline_repo=None if args.smoke
                                          else base_repo)
    at10k = next((s for s in out["sizes"] if s["queued"] == 10000), None)
    if at10k:
        out["meets_target"] = {"tick_at_10k": at10k["platform"]["change_tick_s"] < TARGETS["tick_at_10k_s"],
                               "burst_tick_at_10k": at10k["platform"]["burst_tick_s"] < TARGETS["burst_tick_at_10k_s"]}
    _bench.emit("scheduler_scale", out, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

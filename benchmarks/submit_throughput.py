"""Durable job submissions per second through a real server, and a kill -9 in the middle.

    python benchmarks/submit_throughput.py [--smoke] [--seconds S] [--clients 1,8,32] [--db-url URL]

Starts `python -m trainyard.api` (uvicorn, the controller running) on a fresh home with a
SQLite store (or `--db-url`, an empty PostgreSQL database that is wiped). Its default
cluster points at a dashboard that does not answer, so submissions queue (the capacity check
lets a job wait for a cluster it knows nothing about yet) and the controller keeps ticking
over a growing queue, as it would in a burst.

1. Throughput: for 1, 8 and 32 concurrent clients (threads, one keep-alive HTTP connection
   each), POST /v1/jobs for S seconds; a submission counts when its 201 came back (the row is
   committed by then). Reports submissions/s and p50/p99 latency per level.
2. Baseline, side by side: the store's own floor, the same create_job + commit in one
   thread with no HTTP (durable single-row transactions per second), so the ratio says how
   much of the cost is the store's commit and how much is everything around it.
   Each level also reports the server process's CPU per acknowledged submission, and the
   clients' (this process: their threads, the one keep-alive connection each): on
   this machine both share the same cores, so their sum says how many submissions per
   second the cores could carry at all.
3. Crash: 8 clients submit; the server gets SIGKILL mid-run; a new server starts on the same
   store. Every acknowledged job must be there exactly once (GET /v1/jobs/{id} over HTTP on
   the new server, and no job name stored twice); jobs stored but never acknowledged can
   only be ones in flight at the kill.
   kill -9 stops the process, not the machine: the OS still writes what the process handed
   it, so this checks the server's write-ahead (ack after commit), not fsync on power loss.

Prints one JSON line. Timings depend on the machine's load (reported): the clients run on
the same cores as the server. Without --smoke it takes /tmp/trainyard-measure.lock.
"""
from __future__ import annotations

import _bench  # first: import paths

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = _bench.REPO

TARGETS = {"per_s_at_32_clients": 1000, "p99_ms_at_32_clients": 50}


def _spec(name: str) -> dict:
    return {"name": name, "workload": "cnn", "project": f"bench-{hash(name) % 10}",
            "resources": {"workers": 1}, "training": {"max_steps": 10}}


class Client(threading.Thread):
    def __init__(self, server: _bench.ApiServer, index: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.server, self.index, self.stop_event = server, index, stop
        self.latencies: list[float] = []
        self.acked: list[tuple[str, str]] = []  # (job id, name)
        self.errors = 0
        self.in_flight = False

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.server.token}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        seq = 0
        while not self.stop_event.is_set():
            seq += 1
            name = f"c{self.index}-{seq}"
            body = json.dumps({"spec": _spec(name)})
            t = time.perf_counter()
            self.in_flight = True
            try:
                conn.request("POST", "/v1/jobs", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                self.errors += 1
                self.in_flight = False
                if self.stop_event.is_set():
                    return
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
                time.sleep(0.05)
                continue
            self.in_flight = False
            if resp.status == 201:
                self.latencies.append(time.perf_counter() - t)
                self.acked.append((json.loads(data)["id"], name))
            else:
                self.errors += 1
        conn.close()


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, all its threads (psutil, as
    scheduler_scale.py reads the idle server); None when it is gone."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def run_clients(server: _bench.ApiServer, n: int, seconds: float, *, kill_after: float | None = None) -> dict:
    stop = threading.Event()
    clients = [Client(server, i, stop) for i in range(n)]
    cpu_start, own_start = _cpu_s(server.proc.pid), _cpu_s(os.getpid())
    start = time.perf_counter()
    for c in clients:
        c.start()
    in_flight_at_kill = None
    if kill_after is not None:
        time.sleep(kill_after)
        in_flight_at_kill = sum(c.in_flight for c in clients)  # at most these may land unacknowledged
        server.kill9()
        stop.set()
    else:
        time.sleep(seconds)
        stop.set()
    for c in clients:
        c.join(timeout=60)
    cpu_end = _cpu_s(server.proc.pid) if kill_after is None else None
    own_end = _cpu_s(os.getpid())
    elapsed = time.perf_counter() - start
    lat = sorted(x for c in clients for x in c.latencies)
    out = {"clients": n, "submitted": len(lat), "errors": sum(c.errors for c in clients),
           "per_s": round(len(lat) / elapsed, 1),
           "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
           "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None}
    if cpu_start is not None and cpu_end is not None and lat:
        # the server process's CPU (all its threads) per acknowledged submission
        out["server_cpu_ms_per_submission"] = round(1000 * (cpu_end - cpu_start) / len(lat), 2)
    if own_start is not None and own_end is not None and lat:
        out["client_cpu_ms_per_submission"] = round(1000 * (own_end - own_start) / len(lat), 2)
    out["_acked"] = [a for c in clients for a in c.acked]
    out["_in_flight_at_kill"] = n if in_flight_at_kill is None else max(in_flight_at_kill, 0)
    return out


def store_floor(db_url: str, seconds: float) -> dict:
    """The same durable insert the server makes, one transaction per job, no HTTP."""
    from trainyard.store import Database
    from trainyard.store import jobs as jobs_repo

    db = Database(db_url)
    db.upgrade()
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        i += 1
        t = time.perf_counter()
        with db.session() as s:
            jobs_repo.insert_job(s, spec=_spec(f"floor-{i}"), name=f"floor-{i}", project="floor", priority=0,
                                 message="queued")
        lat.append(time.perf_counter() - t)
    db.dispose()
    lat.sort()
    return {"per_s": round(len(lat) / seconds, 1), "p50_ms": round(1000 * lat[len(lat) // 2], 2),
            "p99_ms": round(1000 * lat[int(len(lat) * 0.99)], 2)}


def crash_check(home: Path, db_url: str | None, *, clients: int, kill_after: float) -> dict:
    server = _bench.ApiServer(home, db_url).start()
    try:
        run = run_clients(server, clients, 0, kill_after=kill_after)
    finally:
        server.stop()
    acked = run["_acked"]
    again = _bench.ApiServer(home, db_url)
    again.port = _bench.free_port()
    again.start()
    missing = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", again.port, timeout=30)
        headers = {"Authorization": f"Bearer {again.token}"}
        for job_id, _ in acked:
            conn.request("GET", f"/v1/jobs/{job_id}", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                missing.append(job_id)
        conn.close()
    finally:
        again.stop()
    from sqlalchemy import func, select

    from trainyard.store import Database
    from trainyard.store.models import JobRow

    db = Database(again.db_url)
    with db.session() as s:
        stored = s.execute(select(func.count()).select_from(JobRow)).scalar()
        twice = s.execute(select(JobRow.name).group_by(JobRow.name).having(func.count() > 1)).scalars().all()
    db.dispose()
    extra = stored - len(acked)
    ok = not missing and not twice and 0 <= extra <= run["_in_flight_at_kill"]
    return {"clients": clients, "killed_after_s": kill_after, "acknowledged": len(acked), "stored": stored,
            "acknowledged_missing": len(missing), "stored_twice": len(twice),
            "stored_not_acknowledged": extra, "in_flight_at_kill": run["_in_flight_at_kill"], "ok": ok}


def _wipe(db_url: str) -> None:
    from trainyard.store import Database
    from trainyard.store.models import Base

    db = Database(db_url)
    Base.metadata.drop_all(db.engine)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    db.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short levels, one crash (< 30 s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per client level")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--db-url", default=None, help="an empty PostgreSQL database (wiped); default: SQLite")
    args = parser.parse_args(argv)
    seconds = 2.0 if args.smoke else args.seconds
    levels = [int(x) for x in args.clients.split(",")]
    out: dict = {"store": "postgresql" if args.db_url else "sqlite", "targets": TARGETS,
}
    with _bench.measurement(args.smoke) as run, tempfile.TemporaryDirectory(prefix="ty-submit-") as tmp:
        home = Path(tmp) / "run"
        home.mkdir()
        if args.db_url:
            _wipe(args.db_url)
        server = _bench.ApiServer(home, args.db_url).start()
        try:
            out["levels"] = []
            for n in levels:
                level = run_clients(server, n, seconds)
                level.pop("_acked")
                level.pop("_in_flight_at_kill")
                out["levels"].append(level)
        finally:
            server.stop()
        floor_home = Path(tmp) / "floor"
        floor_home.mkdir()
        if args.db_url:
            _wipe(args.db_url)
        out["store_floor"] = store_floor(args.db_url or f"sqlite:///{floor_home / 'floor.db'}", min(seconds, 5.0))
        crash_home = Path(tmp) / "crash"
        crash_home.mkdir()
        if args.db_url:
            _wipe(args.db_url)
        out["crash"] = crash_check(crash_home, args.db_url, clients=8, kill_after=min(seconds, 3.0))
    top = out["levels"][-1]
    out["ratio"] = {"http_vs_store_floor": round(top["per_s"] / out["store_floor"]["per_s"], 2)}
    if top["clients"] == 32:
        out["meets_target"] = {"per_s_at_32": top["per_s"] >= TARGETS["per_s_at_32_clients"],
                               "p99_at_32": (top["p99_ms"] or 1e9) < TARGETS["p99_ms_at_32_clients"]}
    _bench.emit("submit_throughput", out, run)
    return 0 if out["crash"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

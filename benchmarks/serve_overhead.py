"""Serving overhead: a Trainyard endpoint vs a bare Ray Serve deployment of the same cnn model.

Both run in one private local Ray cluster (2 CPUs), one replica each, the same actor options
and torch threads. The same closed-loop load (C concurrent keep-alive clients, no pause)
runs from a second process against each in turn, alternating A/B for R rounds; we report
the median round. Prints one JSON line: p50/p99 latency, requests/s, and the ratios.

Targets: throughput >= 0.8x bare, p50 overhead <= 2 ms.

The Trainyard endpoint is not public, as endpoints are by default: its load sends an endpoint
key (`Authorization: Bearer <key>`), so the overhead includes the key check ("key_check": true
in the JSON line; `--public` measures without it). The bare deployment checks nothing.

    .venv/bin/python benchmarks/serve_overhead.py [--seconds 10] [--rounds 3] [--concurrency 4]
    .venv/bin/python benchmarks/serve_overhead.py --split deployments   # the per-version split

`--split deployments` measures the endpoint as a router app plus one app per version (for
models too large to hold twice): it pays one deployment-handle hop per request, so the
targets are expected to fail there; the figures say by how much.

    .venv/bin/python benchmarks/serve_overhead.py --smoke   # 1 round of 1 s, 1 client
    .venv/bin/python benchmarks/serve_overhead.py --mlflow-url http://127.0.0.1:5000

Always starts its own Ray head (Serve owns the cluster's HTTP proxy); starts an MLflow
server unless --mlflow-url names one. The JSON line holds, per concurrency level, the ratios;
at the top, the worst level's ("throughput_ratio": the lowest, "p50_overhead_ms": the highest).
A measured run (not --smoke) holds the measurement lock (benchmarks/_bench.py).
"""
from __future__ import annotations

import _bench  # first: Ray's auth environment before anything imports ray

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = _bench.REPO
HERE = Path(__file__).resolve().parent

CPUS_PER_REPLICA = 0.5


# ----------------------------------------------------------------------------- the bare deployment


def build_bare(args: dict):
    """A plain Ray Serve deployment: the family's predictor behind __call__, nothing else."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="Bare")
    class Bare:
        def __init__(self, uri: str, tracking_uri: str):
            import torch

            os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
            torch.set_num_threads(1)
            from trainyard.tracking.model import load_trainyard_model

            self.workload, self.models, self.hparams = load_trainyard_model(uri)

        async def __call__(self, request: Request):
            payload = await request.json()
            return JSONResponse(self.workload.predictor(self.models, payload, self.hparams))

    return Bare.bind(args["uri"], args["tracking_uri"])


def bare_app(uri: str, tracking_uri: str) -> dict:
    return {"name": "bare", "route_prefix": "/bare", "import_path": "serve_overhead:build_bare",
            "args": {"uri": uri, "tracking_uri": tracking_uri},
            "runtime_env": {"env_vars": {"PYTHONPATH": str(HERE)}},
            "deployments": [{"name": "Bare", "num_replicas": 1, "max_ongoing_requests": 16,
                             "ray_actor_options": {"num_cpus": CPUS_PER_REPLICA}}]}


# ----------------------------------------------------------------------------- the load (2nd process)


def load(url: str, seconds: float, concurrency: int, payload: dict, headers: dict | None = None) -> dict:
    import threading

    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        mine, bad = [], 0
        with httpx.Client(timeout=30, headers=headers or {}) as http:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    break
                resp = http.post(url, json=payload)
                t1 = time.perf_counter()
                if resp.status_code == 200:
                    mine.append((t1 - t0) * 1e3)
                else:
                    bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    q = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))] if latencies else None  # noqa: E731
    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed,
            "p50_ms": q(0.50), "p99_ms": q(0.99)}


KEY_ENV = "TRAINYARD_BENCH_ENDPOINT_KEY"  # the key travels in the environment, not on a command line


def run_load(url: str, seconds: float, concurrency: int, payload: dict, key: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    if key:
        env[KEY_ENV] = key
    out = subprocess.run([sys.executable, __file__, "--load", url, "--seconds", str(seconds),
                          "--concurrency", str(concurrency), "--payload", json.dumps(payload)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=None, help="per round and level; default 10 (--smoke: 1)")
    ap.add_argument("--rounds", type=int, default=None, help="default 3 (--smoke: 1)")
    ap.add_argument("--concurrency", default=None,
                    help="closed-loop clients; a comma list runs each level; default 1,4 (--smoke: 2)")
    ap.add_argument("--batching", choices=["auto", "on", "off"], default="off",
                    help="the Trainyard endpoint's batching (auto: the cnn default, on)")
    ap.add_argument("--split", choices=["replica", "deployments"], default="replica",
                    help="the Trainyard endpoint's traffic split (deployments: router + one app per version)")
    ap.add_argument("--public", action="store_true",
                    help="deploy the Trainyard endpoint public (no key check) instead of with a key")
    ap.add_argument("--mlflow-url", help="use this MLflow server instead of starting one")
    ap.add_argument("--keep", metavar="DIR", help="keep the run's files (logs) under DIR")
    _bench.add_smoke_flag(ap)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    seconds = args.seconds or (1.0 if args.smoke else 10.0)
    rounds_n = args.rounds or (1 if args.smoke else 3)
    concurrency = args.concurrency or ("2" if args.smoke else "1,4")
    if args.load:
        key = os.environ.get(KEY_ENV)
        headers = {"authorization": f"Bearer {key}"} if key else None
        print(json.dumps(load(args.load, seconds, int(concurrency), json.loads(args.payload), headers)))
        return 0

    import logging

    logging.basicConfig(level=logging.WARNING)
    from trainyard.local.processes import free_port, start_mlflow, stop_process
    from trainyard.serving.client import ServeClient

    sys.path.insert(0, str(REPO / "tests" / "integration"))  # serving_support: the test's model helper

    with _bench.measurement(args.smoke) as run, _bench.work_dir("tysb-", keep=args.keep) as root, \
            _bench.ray_head(num_cpus=2, shareable=False, logs=root) as head:
        mlflow = None
        mlflow_url = args.mlflow_url
        if not mlflow_url:
            mlflow = start_mlflow(root=root / "mlflow")
            mlflow_url = mlflow.url
        serve = ServeClient(head.dashboard_url, token=head.token, http_port=free_port())
        try:
            result = measure(serve, mlflow_url, batching=args.batching, split=args.split, public=args.public,
                             seconds=seconds,
                             rounds_n=rounds_n, levels=[int(c) for c in str(concurrency).split(",")],
                             warmup_s=0.5 if args.smoke else 2.0,
                             model=f"bench-cnn-{os.getpid()}")  # a shared MLflow may hold an earlier one
        finally:
            try:
                serve.shutdown()
            except Exception:
                pass
            serve.close()
            if mlflow is not None:
                stop_process(mlflow.pid)
    levels = result["levels"].values()
    result["throughput_ratio"] = min(lv["throughput_ratio"] for lv in levels)
    result["p50_overhead_ms"] = max(lv["p50_overhead_ms"] for lv in levels)
    result["p99_ratio"] = max(lv["p99_ratio"] for lv in levels)
    result["targets_met"] = all(lv["targets_met"] for lv in levels)
    _bench.emit("serve_overhead", result, run)
    return 0


def measure(serve, mlflow_url: str, *, batching: str, split: str, public: bool, seconds: float, rounds_n: int,
            levels: list[int], warmup_s: float, model: str) -> dict:
    from trainyard.serving.config import merge_serve_config
    from trainyard.serving.endpoints import EndpointManager
    from trainyard.serving.registry import Registry

    from serving_support.models import digits, register_cnn

    version = register_cnn(mlflow_url, model, accuracy=0.9, seed=0,
                           hparams={"channels": 32, "hidden": 128, "dropout": 0.1})
    import secrets

    # its own cluster, its own endpoints: a secret of its own for the internal keys (no home needed)
    manager = EndpointManager(serve, Registry(mlflow_url), tracking_uri=mlflow_url, key_secret=secrets.token_bytes(32))
    batching_cfg = {"auto": {}, "on": {"enabled": True}, "off": {"enabled": False}}[batching]
    manager.deploy({"model": model, "cpus_per_replica": CPUS_PER_REPLICA, "max_ongoing_requests": 16,
                    "batching": batching_cfg, "split": split, "public": public,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 1}}, version=version)
    # a client's key, as a maintainer creates it (a few real keys beside it: the check compares with each)
    keys = [manager.create_key(model, f"bench-{i}")["key"] for i in range(3)]
    key = None if public else keys[-1]
    serve.put_config(merge_serve_config(serve.current_config(),
                                        bare_app(f"models:/{model}/{version}", mlflow_url),
                                        http_host="127.0.0.1", http_port=serve.http_port))
    serve.wait_app("bare")
    images, _ = digits(1)
    payload = {"inputs": images}
    urls = {"trainyard": manager.url(model), "bare": f"{serve.serve_url}/bare"}
    keys_of = {"trainyard": key, "bare": None}
    for name, url in urls.items():  # warm up both (lazy imports, first-call paths, connections)
        run_load(url, warmup_s, max(levels), payload, keys_of[name])
    result = {"seconds": seconds, "rounds": rounds_n, "batching": batching, "split": split, "cpus": 2,
              "key_check": not public, "levels": {}}
    for level in levels:
        rounds: dict[str, list[dict]] = {k: [] for k in urls}
        for i in range(rounds_n):  # alternate A/B, and which goes first, against drift
            order = list(urls) if i % 2 == 0 else list(urls)[::-1]
            for name in order:
                rounds[name].append(run_load(urls[name], seconds, level, payload, keys_of[name]))
        out: dict = {}
        for name in urls:
            out[name] = {k: round(statistics.median(r[k] for r in rounds[name]), 3)
                         for k in ("rps", "p50_ms", "p99_ms")}
            out[name]["errors"] = sum(r["errors"] for r in rounds[name])
        t, b = out["trainyard"], out["bare"]
        out["throughput_ratio"] = round(t["rps"] / b["rps"], 3)
        out["p50_overhead_ms"] = round(t["p50_ms"] - b["p50_ms"], 3)
        out["p99_ratio"] = round(t["p99_ms"] / b["p99_ms"], 3)
        out["targets_met"] = out["throughput_ratio"] >= 0.8 and out["p50_overhead_ms"] <= 2.0
        out["rounds"] = rounds
        result["levels"][str(level)] = out
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Serving overhead: a Trainyard endpoint vs a bare Ray Serve deployment of the same cnn model.

Both run in one private local Ray cluster (2 CPUs), one replica each, the same actor options
and torch threads. The same closed-loop load (C concurrent keep-alive clients, no pause)
runs from a second process against each in turn, alternating A/B for R rounds; we report
the median round. Prints one JSON line: p50/p99 latency, requests/s, and the ratios.

Targets: throughput >= 0.8x bare, p50 overhead <= 2 ms.

    .venv/bin/python benchmarks/serve_overhead.py [--seconds 10] [--rounds 3] [--concurrency 4]
    .venv/bin/python benchmarks/serve_overhead.py --split deployments   # the per-version split

`--split deployments` measures the endpoint as a router app plus one app per version (for
models too large to hold twice): it pays one deployment-handle hop per request, so the
targets are expected to fail there; the figures say by how much.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for p in (REPO / "platform", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

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


def load(url: str, seconds: float, concurrency: int, payload: dict) -> dict:
    import threading

    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def worker():
        mine, bad = [], 0
        with httpx.Client(timeout=30) as http:
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


def run_load(url: str, seconds: float, concurrency: int, payload: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--load", url, "--seconds", str(seconds),
                          "--concurrency", str(concurrency), "--payload", json.dumps(payload)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,4", help="closed-loop clients; a comma list runs each level")
    ap.add_argument("--batching", choices=["auto", "on", "off"], default="off",
                    help="the Trainyard endpoint's batching (auto: the cnn default, on)")
    ap.add_argument("--split", choices=["replica", "deployments"], default="replica",
                    help="the Trainyard endpoint's traffic split (deployments: router + one app per version)")
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load:
        print(json.dumps(load(args.load, args.seconds, int(args.concurrency), json.loads(args.payload))))
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    from trainyard.local.processes import free_port, start_mlflow, start_ray_head, stop_process, stop_ray_head
    from trainyard.serving.client import ServeClient
    from trainyard.serving.config import merge_serve_config
    from trainyard.serving.endpoints import EndpointManager
    from trainyard.serving.registry import Registry

    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from serving_support.models import digits, register_cnn

    root = Path(tempfile.mkdtemp(prefix="tysb-", dir="/tmp"))
    for attempt in range(2):  # a busy 2-core machine sometimes times the first start out
        try:
            head = start_ray_head(temp_dir=root / f"ray{attempt}", token=secrets.token_hex(16), num_cpus=2,
                                  log_file=root / "ray-start.log")
            break
        except Exception:
            if attempt:
                shutil.rmtree(root, ignore_errors=True)
                raise
    mlflow = start_mlflow(root=root / "mlflow")
    serve = ServeClient(head.dashboard_url, token=head.token, http_port=free_port())
    try:
        version = register_cnn(mlflow.url, "bench-cnn", accuracy=0.9, seed=0,
                               hparams={"channels": 32, "hidden": 128, "dropout": 0.1})
        manager = EndpointManager(serve, Registry(mlflow.url), tracking_uri=mlflow.url)
        batching = {"auto": {}, "on": {"enabled": True}, "off": {"enabled": False}}[args.batching]
        manager.deploy({"model": "bench-cnn", "cpus_per_replica": CPUS_PER_REPLICA, "max_ongoing_requests": 16,
                        "batching": batching, "split": args.split,
                        "autoscaling": {"min_replicas": 1, "max_replicas": 1}}, version=version)
        serve.put_config(merge_serve_config(serve.current_config(),
                                            bare_app(f"models:/bench-cnn/{version}", mlflow.url),
                                            http_host="127.0.0.1", http_port=serve.http_port))
        serve.wait_app("bare")
        images, _ = digits(1)
        payload = {"inputs": images}
        urls = {"trainyard": manager.url("bench-cnn"), "bare": f"{serve.serve_url}/bare"}
        levels = [int(c) for c in str(args.concurrency).split(",")]
        for url in urls.values():  # warm up both (lazy imports, first-call paths, connections)
            run_load(url, 2.0, max(levels), payload)
        result = {"benchmark": "serve_overhead", "seconds": args.seconds, "rounds": args.rounds,
                  "batching": args.batching, "split": args.split, "cpus": 2, "levels": {}}
        for level in levels:
            rounds: dict[str, list[dict]] = {k: [] for k in urls}
            for i in range(args.rounds):  # alternate A/B, and which goes first, against drift
                order = list(urls) if i % 2 == 0 else list(urls)[::-1]
                for name in order:
                    rounds[name].append(run_load(urls[name], args.seconds, level, payload))
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
        print(json.dumps(result))
    finally:
        try:
            serve.shutdown()
        except Exception:
            pass
        serve.close()
        stop_process(mlflow.pid)
        stop_ray_head(head)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

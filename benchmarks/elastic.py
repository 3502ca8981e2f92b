"""An elastic job that loses a node and gets it back, beside the same job left alone.

    python benchmarks/elastic.py [--steps N] [--zero 2|3] [--keep DIR]

Starts one fake-autoscaling Ray head (cluster/local.yaml, 1 CPU, the way `trainyard up
--autoscaling` starts it, but through trainyard.local.fake_provider.ReclaimingFakeProvider;
its `gpu-fake` nodes hold {CPU: 1, gpu_node: 1}) and runs the real job driver
(`trainyard.runner.job.run_job`, Ray Train + DeepSpeed ZeRO, cnn family) twice on it, with
resources.workers {min: 1, max: 2} and one `gpu_node` per worker, so each worker needs a node
of its own:

  uninterrupted   both nodes are up before it starts; it runs on 2 workers to the end
  interrupted     the same, but once it runs on 2 and passed --kill-at steps, one worker
                  node is reclaimed: its raylet is killed (psutil, SIGKILL, with the node's
                  processes) and the pool has no capacity until the job has shrunk. Ray Train
                  restarts the group on 1 worker from the latest checkpoint; then capacity
                  comes back, the autoscaler replaces the node and the group grows back to 2

and prints one JSON line: each run's wall time, final metrics and the world sizes it ran at,
the interrupted run's events, usage segments, `restart_gap_s` (kill to the first step on 1)
and `regrow_s` (capacity back to the first step on 2), and the ratios interrupted /
uninterrupted ("wall_ratio", "accuracy_delta", "eval_loss_ratio"). No target: a baseline;
timings depend on the machine's load.

    python benchmarks/elastic.py --smoke   # the same scenario; the uninterrupted run unslowed

`tests/integration/test_elastic_node_loss.py` runs the --smoke size and asserts on its line.

Why the provider: Ray's fake provider never drops a node whose raylet died, so the autoscaler
never replaced the killed node and the job stayed on 1 worker (measured; the monitor log is
quoted in trainyard/local/fake_provider.py). A cloud drops a reclaimed instance from its list;
ReclaimingFakeProvider does the same. The no-capacity hold (a file the provider watches) makes
the shrink to 1 happen before the replacement arrives on any machine: without it the node
comes back in ~5 s, before Ray Train gives up on the old size, and the group restarts at 2.

Steps are slowed down (TRAINYARD_TEST_STEP_DELAY_S, tests only) so that a node loss and the
regrow land mid-run on any machine; with --smoke, only until the interrupted run is back on 2
workers (TRAINYARD_TEST_STEP_DELAY_UNTIL). Resizes are checked every 3 s
(TRAINYARD_ELASTIC_RESIZE_INTERVAL_S; production: 60 s). A group restart waits 15 s for a size
that is gone (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, the runner's default for elastic jobs).

Never uses ray.cluster_utils.AutoscalingCluster (its start() runs `ray stop --force`), never
`ray stop`: only the processes started here (the head, and the fake nodes its autoscaler
started) are stopped. `tests/integration/test_elastic_node_loss.py` runs the same scenario.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _bench, also when a test loads this file by path
import _bench  # noqa: E402  (import paths, and Ray's auth environment before anything imports ray)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

GPU_NODE = {"CPU": 1.0, "gpu_node": 1.0}
FAKE_PREFIX = "f" * 51  # node ids the fake provider gives (ray.autoscaler._private.fake_multi_node)
HEAD_NODE_ID = FAKE_PREFIX + "00000"
PROVIDER = "trainyard.local.fake_provider.ReclaimingFakeProvider"
NODE_TIMEOUT_S = 300
RUN_TIMEOUT_S = 900
SMOKE_STEPS = 60

# The job driver, as the server's entrypoint runs it but without logging the model (both runs
# would spend the same seconds on it): progress lines while it trains, one result line.
DRIVER = r'''
import json, os, sys
from trainyard.protocol import RESULT, emit_line, format_line
from trainyard.runner.job import run_job
from trainyard.specs import parse_job_spec

spec = parse_job_spec(json.loads(os.environ["TRAINYARD_SPEC"]))
emit_line(format_line(RESULT, run_job(spec, sys.argv[1], log_model=False)))
'''


def job_spec(*, storage: str, steps: int, zero: int, delay_s: float, delay_until: Path | None = None) -> dict:
    """The job both runs train: ZeRO `zero`, 1 to 2 workers of one gpu_node each, the global batch
    kept at 2 x 16 (elastic_batch keep: 1 worker accumulates 2 micro-batches), a checkpoint
    every 2 steps, no dropout (so a resumed run draws nothing the straight one did not).
    delay_until: a file whose existence ends the step delay (TRAINYARD_TEST_STEP_DELAY_UNTIL)."""
    env = {"TRAINYARD_TEST_STEP_DELAY_S": str(delay_s)}
    if delay_until is not None:
        env["TRAINYARD_TEST_STEP_DELAY_UNTIL"] = str(delay_until)
    return {
        "name": "elastic", "workload": "cnn",
        "data": {"train_limit": 1024},
        "hyperparameters": {"channels": 8, "hidden": 32, "dropout": 0.0},
        "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1, "custom_resources": {"gpu_node": 1}},
        "deepspeed": {"zero_stage": zero, "gradient_accumulation_steps": 1},
        "training": {"max_steps": steps, "batch_size": 16, "lr": 0.003, "eval_every_steps": 4,
                     "log_every_steps": 1, "elastic_batch": "keep"},
        "checkpoint": {"every_steps": 2, "keep": 4, "storage": storage},
        "failure": {"max_failures": 5},
        "tracking": {"experiment": "elastic-bench", "register_model": False},
        "env": env,
    }


class Head:
    """A fake-autoscaling head (cluster/local.yaml rendered with its GCS address)."""

    def __init__(self, root: Path):
        self.root, self.head, self.temp_dir = root, None, None

    def start(self) -> "Head":
        import yaml

        from trainyard.local.autoscaling import local_config
        from trainyard.local.processes import free_port, start_ray_head

        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_dir = tempfile.mkdtemp(prefix="tyel-", dir="/tmp")  # short: unix socket paths
        self.gcs_port = free_port()
        # cluster/local.yaml as `trainyard up --autoscaling` runs it: through ReclaimingFakeProvider
        # (Ray's fake provider never lets go of a node whose raylet died, so the autoscaler never
        # replaced the killed one; trainyard/local/fake_provider.py has the monitor log), plus
        # the no-capacity hold this scenario needs
        config = local_config(f"127.0.0.1:{self.gcs_port}", head_cpus=1)
        assert config["provider"]["module"] == PROVIDER, config["provider"]
        self.hold_file = Path(self.temp_dir) / "no-capacity"
        config["provider"].update(hold_launches_file=str(self.hold_file), hold_launches_max_s=240)
        config_path = Path(self.temp_dir) / "local-cluster.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        bindir = str(Path(sys.executable).parent)
        env = {"PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}
        t0 = time.monotonic()
        self.head = start_ray_head(temp_dir=self.temp_dir, token=secrets.token_hex(16), num_cpus=1,
                                   gcs_port=self.gcs_port, autoscaling_config=str(config_path), env=env,
                                   log_file=self.root / "ray-start.log", timeout=240)
        self.start_s = round(time.monotonic() - t0, 1)
        return self

    def stop(self) -> None:
        from trainyard.local.processes import stop_ray_head

        if self.head is not None:
            stop_ray_head(self.head)
            for proc in self.node_raylets():  # fake nodes the head's autoscaler left running
                _kill_tree(proc)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _get(self, path: str) -> dict:
        req = urllib.request.Request(self.head.dashboard_url + path, headers=self.head.headers())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def gpu_nodes(self) -> list[dict]:
        rows = self._get("/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]
        return [n for n in rows if n["state"] == "ALIVE" and n["resources_total"].get("gpu_node")]

    def node_raylets(self) -> list:
        """This cluster's worker-node raylets (the fake provider starts them with the head's GCS
        address and node ids of its own), newest node first."""
        import psutil

        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            try:
                cmd = proc.info["cmdline"] or []
                if not cmd or "raylet" not in os.path.basename(cmd[0]):
                    continue
                if not any(a.endswith(f":{self.gcs_port}") for a in cmd if "gcs" in a):
                    continue
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            node_id = next((a.split("=", 1)[1] for a in cmd if a.startswith("--node_id=")), "")
            # the fake provider numbers its nodes f...f00001, f...f00002 (the head is Ray's own)
            if node_id.startswith(FAKE_PREFIX) and node_id != HEAD_NODE_ID:
                found.append((node_id, proc))
        return [p for _, p in sorted(found, key=lambda x: x[0], reverse=True)]

    def warm(self, count: int) -> None:
        """Have `count` gpu nodes up before a run starts, so that it starts at its max."""
        driver = ("import json, ray, sys; from ray.autoscaler.sdk import request_resources; ray.init(); "
                  "request_resources(bundles=json.loads(sys.argv[1]))")
        env = {**os.environ, **self.head.env()}
        subprocess.run([sys.executable, "-c", driver, json.dumps([GPU_NODE] * count)], env=env, check=True,
                       capture_output=True, timeout=120)
        _wait(lambda: len(self.gpu_nodes()) >= count, NODE_TIMEOUT_S, f"{count} gpu_node nodes coming up")


def _kill_tree(proc) -> None:
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _wait(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def run(head: Head, spec: dict, *, root: Path, kill_at: int | None = None, timeout_s: float = RUN_TIMEOUT_S,
        regrown_file: Path | None = None) -> dict:
    """Run the job driver against `head`; with kill_at, kill one worker node once the job runs on
    2 workers and reported step kill_at. Returns wall time, result, world sizes, events.
    regrown_file: created once the job runs on 2 again after the kill (the spec's step delay
    ends there, when its delay_until names that file)."""
    from trainyard.protocol import ERROR, PROGRESS, RESULT, parse_line

    job_id = f"elastic-{uuid.uuid4().hex[:6]}"
    script = root / "elastic_driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, **head.head.env(), "TRAINYARD_SPEC": json.dumps(spec),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "TRAINYARD_ELASTIC_RESIZE_INTERVAL_S": "3", "PYTHONUNBUFFERED": "1"}
    log = open(root / f"{job_id}.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), job_id], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    events: list[dict] = []
    worlds: list[int] = []
    result = error = None
    killed_at = None
    worlds_at_kill = 0  # len(worlds) when the node was killed: the shrink and regrow come after
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            parsed = parse_line(line)
            if not parsed:
                continue
            tag, payload = parsed
            if tag == RESULT:
                result = payload
            elif tag == ERROR:
                error = payload
            elif tag == PROGRESS and isinstance(payload.get("workers"), int):
                w = payload["workers"]
                if not worlds or worlds[-1] != w or "restarts" in payload:
                    worlds.append(w)
                    events.append({"t": round(time.monotonic() - t0, 1), "step": payload.get("step"), "workers": w})
                if kill_at is not None and killed_at is None and w == 2 and (payload.get("step") or 0) >= kill_at:
                    raylets = head.node_raylets()
                    if raylets:
                        # a spot reclaim: the instance goes, and the pool has no capacity until
                        # the job has shrunk (else the replacement could come up before Ray
                        # Train gives up on the lost node, and it would restart at 2 directly)
                        head.hold_file.touch()
                        _kill_tree(raylets[0])
                        killed_at = payload.get("step")
                        worlds_at_kill = len(worlds)
                        events.append({"t": round(time.monotonic() - t0, 1), "step": killed_at, "killed": True})
                elif killed_at is not None and w == 1 and head.hold_file.exists():
                    head.hold_file.unlink()
                    events.append({"t": round(time.monotonic() - t0, 1), "step": payload.get("step"),
                                   "capacity_back": True})
                elif (regrown_file is not None and killed_at is not None and w == 2
                      and 1 in worlds[worlds_at_kill:] and not regrown_file.exists()):
                    regrown_file.touch()  # on 2 again after the shrink: the rest need not be slow
        rc = proc.wait()
    finally:
        timer.cancel()
        head.hold_file.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
        log.close()
    return {"job_id": job_id, "rc": rc, "wall_s": round(time.monotonic() - t0, 1), "result": result,
            "error": error, "worlds": worlds, "events": events, "killed_at_step": killed_at,
            "log": str(root / f"{job_id}.log")}


def scenario(head: Head, *, root: Path, steps: int, zero: int, delay_s: float, kill_at: int,
             straight_delay_s: float | None = None, fast_after_regrow: bool = False) -> dict:
    """Both runs, each on its own storage, each started with both nodes up. straight_delay_s:
    the uninterrupted run's step delay (default delay_s; a test that compares metrics only
    needs no delay there). fast_after_regrow: the interrupted run's steps are slowed only
    until it runs on 2 workers again (a test that checks the worlds and the final metrics
    needs no slow steps after that; a measured run keeps both runs' steps alike)."""
    out = {}
    for name, kill in (("uninterrupted", None), ("interrupted", kill_at)):
        storage = root / f"storage-{name}"
        storage.mkdir(parents=True, exist_ok=True)
        delay = delay_s if kill is not None or straight_delay_s is None else straight_delay_s
        regrown = root / f"regrown-{name}" if fast_after_regrow and kill is not None else None
        head.warm(2)
        out[name] = run(head, job_spec(storage=f"file://{storage}", steps=steps, zero=zero, delay_s=delay,
                                       delay_until=regrown),
                        root=root, kill_at=kill, regrown_file=regrown)
    return out


def _ratio(a, b):
    return round(a / b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def summary(runs: dict) -> dict:
    straight, bumped = runs["uninterrupted"], runs["interrupted"]
    m1 = (straight.get("result") or {}).get("metrics") or {}
    m2 = (bumped.get("result") or {}).get("metrics") or {}
    acc = (m2.get("accuracy") - m1.get("accuracy")) if "accuracy" in m1 and "accuracy" in m2 else None
    return {
        "uninterrupted_wall_s": straight["wall_s"], "interrupted_wall_s": bumped["wall_s"],
        "wall_ratio": _ratio(bumped["wall_s"], straight["wall_s"]),
        "uninterrupted_metrics": m1, "interrupted_metrics": m2,
        "accuracy_delta": round(acc, 4) if acc is not None else None,
        "eval_loss_ratio": _ratio(m2.get("eval_loss"), m1.get("eval_loss")),
        "uninterrupted_worlds": straight["worlds"], "interrupted_worlds": bumped["worlds"],
        "killed_at_step": bumped["killed_at_step"], "interrupted_events": bumped["events"],
        "restart_gap_s": _gap(bumped["events"], "killed", 1), "regrow_s": _gap(bumped["events"], "capacity_back", 2),
        "interrupted_usage": (bumped.get("result") or {}).get("usage"),
        "runs": {name: {"rc": r["rc"], "error": r["error"], "log": r["log"]} for name, r in runs.items()},
        "ok": straight["rc"] == 0 and bumped["rc"] == 0,
    }


def _gap(events: list[dict], mark: str, workers: int) -> float | None:
    """Seconds from the event marked `mark` to the first report at `workers` after it."""
    start = next((e["t"] for e in events if e.get(mark)), None)
    if start is None:
        return None
    end = next((e["t"] for e in events if e["t"] >= start and e.get("workers") == workers), None)
    return round(end - start, 1) if end is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=90, help="optimizer steps per run (default 90)")
    parser.add_argument("--zero", type=int, choices=(1, 2, 3), default=2, help="ZeRO stage (default 2)")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds added to each step (default 1.0)")
    parser.add_argument("--kill-at", type=int, default=6, help="kill a node once the job passed this step")
    parser.add_argument("--keep", metavar="DIR", help="keep logs under DIR")
    _bench.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    straight_delay = None
    if args.smoke:
        # the loss, the shrink to 1 and the regrow to 2 all have to land within the run: about
        # 40 slowed steps after the kill; the uninterrupted run is only compared on its metrics,
        # and the interrupted one goes at full speed once it runs on 2 again
        args.steps, args.delay, args.kill_at = min(args.steps, SMOKE_STEPS), min(args.delay, 1.0), min(args.kill_at, 6)
        straight_delay = 0.0
    with _bench.measurement(args.smoke) as run_info, _bench.work_dir("ty-elastic-", keep=args.keep) as root:
        head = Head(root)
        try:
            head.start()
            runs = scenario(head, root=root, steps=args.steps, zero=args.zero, delay_s=args.delay,
                            kill_at=args.kill_at, straight_delay_s=straight_delay, fast_after_regrow=args.smoke)
        finally:
            head.stop()
        out = {"steps": args.steps, "zero_stage": args.zero, "step_delay_s": args.delay,
               "head_start_s": head.start_s, **summary(runs)}
        if not out["ok"]:
            print(json.dumps(out["runs"]), file=sys.stderr, flush=True)
    _bench.emit("elastic", out, run_info)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally blocks stop what was started
    sys.exit(main())

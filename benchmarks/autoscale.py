"""Demand-driven autoscaling through the Trainyard controller, on cluster/local.yaml.

    python benchmarks/autoscale.py [--runner standin|cnn] [--keep DIR]

Starts one fake-autoscaling Ray head (1 CPU, no `gpu_node`; the way `trainyard up
--autoscaling` starts it) and a Trainyard server whose default cluster gets its maximum from
the rendered config (TRAINYARD_RAY_AUTOSCALING_CONFIG). Submits one job with 1 worker of
{CPU: 1, gpu_node: 1}, which only a `gpu-fake` node can hold, and measures:

  submit_to_node_up_s       job submitted -> the gpu_node node is ALIVE
  submit_to_first_step_s    job submitted -> the job reports its first training step
  job_end_to_node_down_s    job ended (Trainyard says so) -> the node is gone (idle timeout 6 s);
                            negative when it went while the driver still ran (model logging)

Then the baseline on the same head: a bare Ray job (submitted through Ray's Jobs API, no
Trainyard) whose driver runs one task that needs {CPU: 1, gpu_node: 1}, so that Ray's own
demand brings the node up:

  bare_submit_to_node_up_s     Ray job submitted -> the gpu_node node is ALIVE
  bare_submit_to_first_step_s  Ray job submitted -> its task has run on that node

and the ratios trainyard / bare ("node_up_ratio", "first_step_ratio"). Prints one JSON line.
No target: a baseline, and timings depend on the machine's load.

    python benchmarks/autoscale.py --smoke   # the same sizes; skips waiting for the bare node to go

A measured run (not --smoke) holds the measurement lock (benchmarks/_bench.py). On a failure
the run's logs (ray-start.log, server.log, the autoscaler's monitor.*) are kept and named.

Runners:
  standin  (default) a stand-in driver that asks Ray for nothing until a gpu_node exists, so
           only the controller's demand request can bring the node up; then it runs one task
           per worker on it and speaks the TRAINYARD_PROGRESS/RESULT protocol.
  cnn      the real runner (Ray Train + DeepSpeed, cnn family, 2 steps, 64 samples), whose own
           placement group would also ask the autoscaler, later (after its imports).

Never uses ray.cluster_utils.AutoscalingCluster (its start() runs `ray stop --force`), never
`ray stop`: only the processes started here are stopped.
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
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

STANDIN_RUNNER = r'''
import json, os, sys, time
import ray

job_id = sys.argv[1]
spec = json.loads(os.environ["TRAINYARD_SPEC"])
res = spec["resources"]
per = {"CPU": float(res.get("cpus_per_worker", 1.0)), **{k: float(v) for k, v in (res.get("custom_resources") or {}).items()}}
workers = int(res.get("workers", 1))
ray.init(log_to_driver=False)
# Ask Ray for nothing until the nodes exist: no task, no placement group, so Ray's own
# demand stays empty and only the Trainyard controller's request can bring the node up.
deadline = time.time() + float(os.environ.get("STANDIN_WAIT_S", "600"))
while not all(ray.cluster_resources().get(k, 0.0) >= v * workers for k, v in per.items()):
    if time.time() > deadline:
        print('TRAINYARD_ERROR {"error": "capacity", "message": "no node with %s came up"}' % json.dumps(per), flush=True)
        sys.exit(3)
    time.sleep(0.5)

@ray.remote
def step():
    return ray.get_runtime_context().get_node_id()

custom = {k: v for k, v in per.items() if k != "CPU"}
nodes = ray.get([step.options(num_cpus=per["CPU"], resources=custom).remote() for _ in range(workers)])
steps = int(spec["training"].get("max_steps") or 2)
for i in range(1, steps + 1):
    print("TRAINYARD_PROGRESS " + json.dumps({"step": i, "total_steps": steps, "epoch": 0,
                                             "metrics": {"loss": 1.0 / i}}), flush=True)
print("STANDIN_NODES " + json.dumps(sorted(set(nodes))), flush=True)
print("TRAINYARD_RESULT " + json.dumps({"metrics": {"loss": 1.0 / steps}, "mlflow_run_id": None,
      "mlflow_experiment_id": None, "model_name": None, "model_version": None, "checkpoint": None}), flush=True)
'''

BARE_DRIVER = r'''
import ray
ray.init(log_to_driver=False)

@ray.remote(num_cpus=1, resources={"gpu_node": 1})
def step():
    return ray.get_runtime_context().get_node_id()

print("BARE_NODE " + ray.get(step.remote()), flush=True)
'''

UP_TIMEOUT_S = 420
DOWN_TIMEOUT_S = 240


def _get(head, path: str) -> dict:
    req = urllib.request.Request(head.dashboard_url + path, headers=head.headers())
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def alive_nodes(head) -> list[dict]:
    rows = _get(head, "/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]
    return [n for n in rows if n["state"] == "ALIVE"]


def gpu_nodes(head) -> list[dict]:
    return [n for n in alive_nodes(head) if n["resources_total"].get("gpu_node")]


def ray_jobs(head) -> list[dict]:
    return _get(head, "/api/jobs/")


def demand_jobs(head) -> list[dict]:
    return sorted((j for j in ray_jobs(head) if (j.get("submission_id") or "").startswith("trainyard-demand-")),
                  key=lambda j: j.get("start_time") or 0)


def requested_bundles(job: dict) -> list[dict]:
    import shlex

    return json.loads(shlex.split(job["entrypoint"])[-1])


def wait(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


class Stack:
    """One fake-autoscaling Ray head + one Trainyard server, under `root`."""

    def __init__(self, root: Path, *, runner: str = "standin", demand: bool = True,
                 grace_s: float | None = None):
        self.root = root
        self.runner = runner
        self.demand = demand
        self.grace_s = grace_s
        self.head = None
        self.server = None
        self.temp_dir = None

    def start(self) -> "Stack":
        from trainyard.local.autoscaling import render_local_config
        from trainyard.local.processes import free_port, start_process, start_ray_head

        self.root.mkdir(parents=True, exist_ok=True)
        self.temp_dir = tempfile.mkdtemp(prefix="tyad-", dir="/tmp")  # short: unix socket paths
        gcs_port = free_port()
        self.config = render_local_config(f"127.0.0.1:{gcs_port}", out_dir=self.temp_dir, head_cpus=1)
        bindir = str(Path(sys.executable).parent)
        # job drivers (demand agent, runner) resolve `python` through the head's PATH
        path_env = {"PATH": os.pathsep.join([bindir, os.environ.get("PATH", "")])}
        t0 = time.monotonic()
        self.head = start_ray_head(temp_dir=self.temp_dir, token=secrets.token_hex(16), num_cpus=1,
                                   gcs_port=gcs_port, autoscaling_config=str(self.config), env=path_env,
                                   log_file=self.root / "ray-start.log", timeout=240)
        self.head_start_s = round(time.monotonic() - t0, 1)
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "ray.token").write_text(self.head.token + "\n")
        self.admin_token = "autoscale-admin-" + secrets.token_hex(4)
        (home / "admin.token").write_text(self.admin_token + "\n")
        env = {
            "TRAINYARD_HOME": str(home),
            "TRAINYARD_RAY_DASHBOARD_URL": self.head.dashboard_url,
            "TRAINYARD_RAY_TOKEN_FILE": str(home / "ray.token"),
            "TRAINYARD_ADMIN_TOKEN_FILE": str(home / "admin.token"),
            # what `trainyard up --autoscaling` hands the server: the rendered cluster/local.yaml
            "TRAINYARD_RAY_AUTOSCALING_CONFIG": str(self.config),
            "TRAINYARD_POLL_INTERVAL_S": "0.5",
            "TRAINYARD_STORAGE": f"file://{self.root / 'storage'}",
            "TRAINYARD_CLUSTER_PYTHON": sys.executable,
            "TRAINYARD_AUTOSCALER_DEMAND": "on" if self.demand else "off",
        }
        if self.runner == "standin":
            script = self.root / "standin_runner.py"
            script.write_text(STANDIN_RUNNER)
            env["TRAINYARD_RUNNER_ENTRYPOINT"] = f"{sys.executable} {script} {{job_id}}"
            env["TRAINYARD_MLFLOW_URI"] = "http://127.0.0.1:1"  # never contacted by the stand-in
            # the stand-in never asks Ray for its node (a real trainer does, once it starts), so
            # it stays in the controller's request while it runs
            env["TRAINYARD_DEMAND_RUNNING_GRACE_S"] = "3600"
        else:
            env["TRAINYARD_MLFLOW_URI"] = f"sqlite:///{self.root / 'mlflow.db'}"
        if self.grace_s is not None:
            env["TRAINYARD_DEMAND_RUNNING_GRACE_S"] = str(self.grace_s)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1",
                                        "--port", str(port)],
                             url=self.url, health_url=f"{self.url}/healthz",
                             log_file=self.root / "server.log", env=env, timeout=120)
        self.server = proc.pid
        return self

    def client(self):
        from trainyard.sdk import Client

        return Client(url=self.url, token=self.admin_token)

    def stop(self) -> None:
        from trainyard.local.processes import stop_process, stop_ray_head

        if self.server:
            stop_process(self.server)
            self.server = None
        if self.head is not None:
            stop_ray_head(self.head)
            self.head = None
        if self.temp_dir:  # the autoscaler's own account of what it added and removed, and why
            for log in Path(self.temp_dir).glob("session_*/logs/monitor.*"):
                if log.is_file() and not log.is_symlink():
                    shutil.copy(log, self.root / log.name)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def job_spec(runner: str) -> dict:
    spec = {"name": "autoscale-demo", "workload": "cnn",
            "resources": {"workers": 1, "cpus_per_worker": 1, "custom_resources": {"gpu_node": 1}},
            "training": {"max_steps": 2}}
    if runner != "standin":
        spec["data"] = {"train_limit": 64}
        spec["training"]["batch_size"] = 16
    return spec


def measure(stack: Stack) -> dict:
    """Submit the gpu_node job and time it; raises when a step never happens."""
    head, client = stack.head, stack.client()
    assert not gpu_nodes(head), "the head must start without a gpu_node node"
    # the server's first pass withdraws whatever an earlier server may have left (a demand job
    # with []): wait for it, so that it is not counted in the job's time
    if stack.demand:
        wait(lambda: any(j["status"] == "SUCCEEDED" for j in demand_jobs(head)), 240,
             "the controller's first (withdrawing) demand job")
    before = {j["submission_id"] for j in demand_jobs(head)}
    t_submit = time.monotonic()
    wall_submit = time.time()
    job = client.submit_job(job_spec(stack.runner))
    job_id = job["id"]
    first_step = {}
    up = {}
    down = {}

    def progress_or_node():
        # poll both: the first training step and the node can come in either order
        nodes = gpu_nodes(head)
        if "t" not in up and nodes:
            up["t"] = time.monotonic()
            up["wall"] = time.time()
        if "t" in up and not nodes and "t" not in down:
            # the real runner's driver logs the model after training: the idle node can go
            # (6 s) before the job ends, and the time below comes out negative
            down["t"] = time.monotonic()
        shown = client.get_job(job_id)
        if "t" not in first_step and (shown.get("progress") or {}).get("step"):
            first_step["t"] = time.monotonic()
        if shown["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return shown
        return None

    shown = wait(progress_or_node, UP_TIMEOUT_S + 300, "the job ending")
    t_end = time.monotonic()
    if "t" not in up:
        raise AssertionError(f"the job ended ({shown['state']}) but no gpu_node node was ever seen: "
                             f"{shown.get('message')}")
    wait(lambda: not gpu_nodes(head), DOWN_TIMEOUT_S, "the idle gpu_node node going away")
    t_down = down.get("t", time.monotonic())
    # the withdrawing demand job may still be shutting its driver down after it took effect
    new_demands = wait(lambda: (lambda jobs: jobs if all(j["status"] in ("SUCCEEDED", "FAILED", "STOPPED")
                                                         for j in jobs) else None)(
        [j for j in demand_jobs(head) if j["submission_id"] not in before]), 180, "the demand jobs ending")
    logs = client.job_logs(job_id)
    # the real runner stamps its first optimizer step (rank 0's clock, this machine); progress
    # lines come only every log_every_steps, so polling them would see the step late
    import re

    stamp = re.search(r"'trainyard_first_step_unix': ([0-9.]+)", logs or "")
    first_step_s = (round(float(stamp.group(1)) - wall_submit, 1) if stamp
                    else round(first_step["t"] - t_submit, 1) if "t" in first_step else None)
    return {
        "job": shown,
        "logs": logs,
        "demands": [{"submission_id": j["submission_id"], "status": j["status"],
                     "bundles": requested_bundles(j),
                     "end_after_submit_s": (round(j["end_time"] / 1000 - wall_submit, 1)
                                            if j.get("end_time") else None)} for j in new_demands],
        "node_up_after_submit_wall_s": round(up["wall"] - wall_submit, 1),
        "times": {
            "submit_to_node_up_s": round(up["t"] - t_submit, 1),
            "submit_to_first_step_s": first_step_s,
            "submit_to_job_end_s": round(t_end - t_submit, 1),
            "job_end_to_node_down_s": round(t_down - t_end, 1),
        },
    }


def measure_bare(stack: Stack, *, wait_down: bool) -> dict:
    """The baseline: a plain Ray job whose one task needs the gpu_node; only Ray's demand scales."""
    import shlex

    head = stack.head
    wait(lambda: not gpu_nodes(head), DOWN_TIMEOUT_S, "the gpu_node node going away before the baseline")
    script = stack.root / "bare_driver.py"
    script.write_text(BARE_DRIVER)
    body = json.dumps({"entrypoint": f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}",
                       "submission_id": f"bench-bare-{secrets.token_hex(3)}"}).encode()
    req = urllib.request.Request(head.dashboard_url + "/api/jobs/", data=body, method="POST",
                                 headers={**head.headers(), "Content-Type": "application/json"})
    t_submit = time.monotonic()
    with urllib.request.urlopen(req, timeout=30) as resp:
        sid = json.loads(resp.read())["submission_id"]
    up: dict = {}

    def done():
        if "t" not in up and gpu_nodes(head):
            up["t"] = time.monotonic()
        job = _get(head, f"/api/jobs/{sid}")
        return job if job["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    job = wait(done, UP_TIMEOUT_S, "the bare Ray job ending")
    t_end = time.monotonic()
    if job["status"] != "SUCCEEDED" or "t" not in up:
        raise AssertionError(f"the bare Ray job ended {job['status']} (node seen: {'t' in up}): {job.get('message')}")
    out = {"bare_submit_to_node_up_s": round(up["t"] - t_submit, 1),
           # the driver's end stands for its task's: the task is all it does
           "bare_submit_to_first_step_s": round(t_end - t_submit, 1)}
    if wait_down:
        wait(lambda: not gpu_nodes(head), DOWN_TIMEOUT_S, "the bare job's gpu_node node going away")
        out["bare_job_end_to_node_down_s"] = round(time.monotonic() - t_end, 1)
    return out


def _launches(root: Path) -> int | None:
    """How many nodes the autoscaler launched (monitor.log), to see churn and double counting."""
    log = root / "monitor.log"
    if not log.exists():
        return None
    import re

    return sum(int(n) for n in re.findall(r"Queue (\d+) new nodes for launch", log.read_text(errors="replace")))


def _ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", choices=("standin", "cnn"), default="standin")
    parser.add_argument("--no-demand", action="store_true",
                        help="controller sends no autoscaler demand (TRAINYARD_AUTOSCALER_DEMAND=off): the "
                             "baseline where only Ray's own demand (the cnn runner's placement group) scales")
    parser.add_argument("--grace", type=float, metavar="S",
                        help="TRAINYARD_DEMAND_RUNNING_GRACE_S for the server (default: the server's, 0; "
                             "the stand-in runner always gets 3600)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare Ray baseline")
    parser.add_argument("--keep", metavar="DIR", help="keep logs under DIR")
    _bench.add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.no_demand and args.runner == "standin":
        parser.error("--no-demand needs --runner cnn: the stand-in never asks Ray for the node itself")
    with _bench.measurement(args.smoke) as run, _bench.work_dir("ty-autoscale-", keep=args.keep) as root:
        stack = Stack(root, runner=args.runner, demand=not args.no_demand, grace_s=args.grace)
        try:
            stack.start()
            result = measure(stack)
            bare = {} if args.no_bare else measure_bare(stack, wait_down=not args.smoke)
        finally:
            stack.stop()
        launches = _launches(root)
    times = result["times"]
    out = {"runner": args.runner, "demand": not args.no_demand, "grace_s": args.grace,
           "state": result["job"]["state"],
           **times, **bare,
           "node_up_ratio": _ratio(times["submit_to_node_up_s"], bare.get("bare_submit_to_node_up_s")),
           "first_step_ratio": _ratio(times["submit_to_first_step_s"], bare.get("bare_submit_to_first_step_s")),
           "head_start_s": stack.head_start_s,
           "demand_requests": [d["bundles"] for d in result["demands"]],
           "nodes_launched": launches}
    _bench.emit("autoscale", out, run)
    return 0 if result["job"]["state"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())

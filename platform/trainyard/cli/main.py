"""`trainyard`: the command line. Noun-verb, thin over the SDK and trainyard.local.stack.

Exit codes (trainyard.errors): 0 ok, 1 the job failed or was cancelled, 2 bad input,
3 not found, 4 unreachable, 5 auth, 6 conflict (port taken, state change not allowed).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from trainyard import __version__
from trainyard.apitypes import BudgetLeft, Job, JobDetail, PendingInfo, QuotaUse
from trainyard.cli import context
from trainyard.cli.context import EXIT_CODES_HELP, ui
from trainyard.cli.context import fmt as _fmt
from trainyard.errors import (
    EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, SpecError, TrainyardError,
)

__all__ = ["main", "build_parser", "follow_job", "print_outcome", "job_metrics"]

# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainyard",
        **_fmt("""
            Train deep-learning models on Ray clusters: Ray Train + DeepSpeed jobs,
            tracked in MLflow. Start a local stack with `trainyard up`, then submit jobs.
            Trainyard keeps its state in $TRAINYARD_HOME (default ~/.trainyard); the
            server address and admin token of the local stack are found there. To use a
            shared server, `trainyard login --server URL` saves it as the current context.
            """, """
            trainyard up                                   # Ray + MLflow + server on this machine
            trainyard jobs submit examples/cnn.yaml --wait # train, follow, print metrics
            trainyard jobs list --state running
            trainyard queue                                # who waits, and why
            trainyard down
            trainyard login --server https://trainyard.example.com   # a team's server
            """))
    parser.epilog += "\n" + EXIT_CODES_HELP
    parser.add_argument("--version", action="version", version=f"trainyard {__version__}")
    parser.add_argument("-o", "--output", choices=ui.OUTPUT_FORMATS, default="table",
                        help="how commands that print data print it: table (for people; the default), json or "
                             "yaml (for scripts: the API's fields as they are). Also after the command: "
                             "`trainyard jobs list -o yaml`")
    parser.add_argument("--url", metavar="URL", dest="server",
                        help="Trainyard server URL (or env TRAINYARD_URL; default: the current context's "
                             "server, else the local stack's)")
    nouns = parser.add_subparsers(dest="noun", metavar="COMMAND")
    nouns.required = True

    # -- stack
    p = nouns.add_parser("up", help="start the local stack (Ray head, MLflow, Trainyard server)", **_fmt("""
        Start the local stack under $TRAINYARD_HOME: a Ray head (dashboard and Jobs API,
        token auth on), an MLflow tracking server (SQLite + local artifacts) and the
        Trainyard server. Idempotent: what already runs is left alone, what died is restarted.

        Default ports are 8080 (server), 5000 (MLflow) and 8265 (Ray dashboard); when one
        is taken, a free port is used instead. A port you ask for with a flag is used or
        the command fails with exit code 6.
        """, """
        trainyard up
        trainyard up --port 9000 --mlflow-port 5050
        TRAINYARD_HOME=/tmp/ty trainyard up --num-cpus 4
        """))
    p.add_argument("--port", type=int, help="Trainyard server port (default 8080, or a free one)")
    p.add_argument("--mlflow-port", type=int, help="MLflow port (default 5000, or a free one)")
    p.add_argument("--dashboard-port", type=int, help="Ray dashboard / Jobs API port (default 8265, or a free one)")
    p.add_argument("--num-cpus", type=int, help="CPUs the Ray head offers (default: all of this machine's)")
    p.add_argument("--autoscaling", action="store_true",
                   help="start Ray with the fake multi-node autoscaler (cluster/local.yaml)")
    p.add_argument("--json", action="store_true", help="print the components as JSON")
    p.set_defaults(func=cmd_up)

    p = nouns.add_parser("down", help="stop the local stack", **_fmt("""
        Stop exactly what `trainyard up` started under $TRAINYARD_HOME. Idempotent.
        Data (jobs, MLflow runs, checkpoints) stays in $TRAINYARD_HOME.
        """, "trainyard down"))
    p.set_defaults(func=cmd_down)

    p = nouns.add_parser("status", help="show what the local stack runs, and where", **_fmt("""
        One row per component: address, PID and whether it answers its health check.
        Exits 0 when every component is healthy, 4 otherwise.
        """, "trainyard status\ntrainyard status --json"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_status)

    p = nouns.add_parser("version", help="print the version", **_fmt("Print Trainyard's version.", "trainyard version"))
    p.set_defaults(func=cmd_version)

    # -- jobs
    jobs = nouns.add_parser("jobs", help="submit, list, follow and cancel training jobs", **_fmt("""
        Training jobs: one spec (YAML) trained by Ray Train + DeepSpeed on a cluster.
        """, """
        trainyard jobs submit examples/cnn.yaml --wait
        trainyard jobs list
        trainyard jobs logs JOB_ID -f
        """))
    verbs = jobs.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("submit", help="validate a job spec and submit it", **_fmt("""
        Validate SPEC locally (errors name the field, the value and the fix; exit 2),
        then submit it. When the spec has `working_dir`, that folder (relative to the spec
        file) is zipped and shipped with the job. With --wait, follow the job with a
        progress bar and print its final metrics and MLflow run; exit 0 only if it
        SUCCEEDED.
        """, """
        trainyard jobs submit examples/cnn.yaml
        trainyard jobs submit examples/cnn.yaml --wait
        trainyard jobs submit my-job.yaml --dry-run    # validate only
        trainyard jobs submit my-job.yaml --dry-run --check-server   # and as the server would
        """))
    p.add_argument("spec", metavar="SPEC", help="job spec YAML file")
    p.add_argument("--wait", action="store_true", help="follow the job until it ends")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and stop")
    p.add_argument("--check-server", action="store_true",
                   help="with --dry-run: the server checks it too (capacity, storage, your role), creating nothing")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.set_defaults(func=cmd_jobs_submit)

    p = verbs.add_parser("list", help="list jobs", **_fmt("""
        List the jobs of the projects you can see, newest first: the newest 50, or --limit N,
        or --all of them. Under the table, "N of TOTAL" says how many jobs match the filters.
        """, """
        trainyard jobs list
        trainyard jobs list --state pending --state running --project vision
        trainyard jobs list --user ann --limit 200
        trainyard jobs list --state failed --all --json
        trainyard jobs list --wide
        """))
    p.add_argument("--state", metavar="STATE", action="append",
                   help="only jobs in this state (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED); "
                        "repeat it or separate with commas")
    p.add_argument("--project", metavar="PROJECT", help="only this project's jobs")
    p.add_argument("--wide", action="store_true", help="also show GPU-hours (CPU-hours for CPU jobs) and cost")
    p.add_argument("--user", metavar="USER", help="only the jobs this user submitted")
    p.add_argument("--cluster", metavar="CLUSTER", help="only jobs placed on this cluster")
    p.add_argument("--limit", metavar="N", type=int, help=f"show at most N jobs (default 50, at most {LIST_MAX})")
    p.add_argument("--all", action="store_true", help="show every matching job (fetched a page at a time)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs_list)

    p = verbs.add_parser("show", help="show one job", **_fmt(
        "Show a job: state, cluster, progress, metrics, MLflow run.", "trainyard jobs show JOB_ID"))
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_jobs_show)

    p = verbs.add_parser("logs", help="print a job's logs", **_fmt("""
        Print the job driver's logs (secrets hidden). With -f, keep printing new lines as the
        job writes them until it ends (a queued job is followed from its start); Ctrl-C stops
        following (exit 130) and leaves the job running. --tail N starts with the last N
        lines; --since shows lines from a time on (RFC 3339, or 30s / 5m / 2h / 1d ago).
        """, """
        trainyard jobs logs JOB_ID
        trainyard jobs logs JOB_ID -f
        trainyard jobs logs JOB_ID -f --tail 100
        trainyard jobs logs JOB_ID --since 10m
        """))
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    p.add_argument("--tail", metavar="N", type=int, help="start with the last N lines (at most 10000)")
    p.add_argument("--since", metavar="WHEN", help="lines from this time on: 2026-12-05T14:00:00Z, or 90s, 5m, 2h, 1d")
    p.set_defaults(func=cmd_jobs_logs)

    p = verbs.add_parser("cancel", help="cancel a job", **_fmt(
        "Cancel a queued or running job. Cancelling a finished job is a conflict (exit 6).",
        "trainyard jobs cancel JOB_ID"))
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(func=cmd_jobs_cancel)

    # -- the queue
    p = nouns.add_parser("queue", help="show the pending queue per cluster and project", **_fmt("""
        The jobs waiting to run, one table per cluster (the cluster the scheduler would place
        them on; "unplaced" when it has not looked yet), in queue order: each job's position
        in the cluster's queue and its project's, why it waits, and when it may start. Below,
        per project: jobs queued and running, quota in use, budget left. Only the projects
        you can read.
        """, """
        trainyard queue
        trainyard queue --project vision
        trainyard queue --cluster gpu-pool --json
        """))
    p.add_argument("--project", metavar="PROJECT", help="only this project's jobs")
    p.add_argument("--cluster", metavar="CLUSTER", help="only jobs waiting for this cluster")
    p.add_argument("--limit", metavar="N", type=int, help="list at most N jobs (default 500, at most 5000)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_queue)

    # -- clusters
    clusters = nouns.add_parser("clusters", help="register the Ray clusters jobs run on", **_fmt("""
        The Ray clusters the server dispatches to. The local stack registers its own.
        """, """
        trainyard clusters list
        trainyard clusters add gpu-pool --address http://10.0.0.5:8265 --token-file ~/.ray/gpu.token
        trainyard clusters remove gpu-pool
        """))
    cverbs = clusters.add_subparsers(dest="verb", metavar="VERB")
    cverbs.required = True
    p = cverbs.add_parser("list", help="list clusters", **_fmt("List registered clusters.", "trainyard clusters list"))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_clusters_list)
    p = cverbs.add_parser("add", help="register a cluster", **_fmt("""
        Register a Ray cluster by its dashboard address (Jobs API). The token file's
        content is sent to the server once and never printed.
        """, "trainyard clusters add gpu-pool --address http://10.0.0.5:8265 --token-file ray.token"))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--address", required=True, metavar="URL", help="Ray dashboard URL, e.g. http://host:8265")
    p.add_argument("--token-file", metavar="FILE", help="file holding the cluster's Ray auth token")
    limits = p.add_mutually_exclusive_group()
    limits.add_argument("--config", metavar="YAML",
                        help="the cluster's launcher config (e.g. cluster/aws.yaml): the most it may "
                             "autoscale to; jobs that could never fit are rejected, waiting ones are "
                             "requested from its autoscaler")
    limits.add_argument("--max-resources", metavar="JSON",
                        help='the most it may grow to, one object per node: \'{"nodes": [{"CPU": 8, "GPU": 1}]}\'')
    p.set_defaults(func=cmd_clusters_add)
    p = cverbs.add_parser("remove", help="unregister a cluster", **_fmt(
        "Unregister a cluster. Jobs already on it keep running.", "trainyard clusters remove gpu-pool"))
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_clusters_remove)

    # -- sweeps (their commands live in trainyard.cli.sweeps)
    from trainyard.cli import sweeps as sweeps_cli

    sweeps_cli.add_parser(nouns)

    # -- endpoints and models (trainyard.cli.endpoints)
    from trainyard.cli import endpoints as endpoints_cli

    endpoints_cli.add_parser(nouns)

    # -- teams: servers and identity, tokens, users, projects, audit (one module per noun)
    from trainyard.cli import audit as audit_cli
    from trainyard.cli import login as login_cli
    from trainyard.cli import projects as projects_cli
    from trainyard.cli import tokens as tokens_cli
    from trainyard.cli import users as users_cli

    for module in (login_cli, tokens_cli, users_cli, projects_cli, audit_cli):
        module.add_parser(nouns)

    p = nouns.add_parser("completion", help="print a shell completion script", **_fmt("""
        Print the completion script of SHELL (every command, flag and choice of this
        version). Load it in your shell's start-up file.
        """, """
        trainyard completion bash > ~/.local/share/bash-completion/completions/trainyard
        trainyard completion zsh > "${fpath[1]}/_trainyard"
        echo 'eval "$(trainyard completion bash)"' >> ~/.bashrc
        """))
    p.add_argument("shell", choices=COMPLETION_SHELLS, metavar="SHELL", help="bash or zsh")
    p.set_defaults(func=cmd_completion)
    _output_on_data_commands(parser)
    return parser


COMPLETION_SHELLS = ("bash", "zsh")


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _output_on_data_commands(parser: argparse.ArgumentParser) -> None:
    """`-o/--output` after the command too, on every command that prints data (those with
    --json): the same option as before the command, which stays the default."""
    for sub in _subcommands(parser):
        if "--json" in sub._option_string_actions and "--output" not in sub._option_string_actions:
            sub.add_argument("-o", "--output", choices=ui.OUTPUT_FORMATS, default=argparse.SUPPRESS,
                             help="table (the default), json or yaml")
        _output_on_data_commands(sub)


def cmd_completion(args) -> int:
    import shtab

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


# ----------------------------------------------------------------------------- helpers


def _client(args):
    """The SDK client; tests replace this function, and every command's client comes from it."""
    return context.sdk_client(args)


def _mlflow_url(client) -> str | None:
    from trainyard import config

    stack = config.read_stack()
    url = (stack.get("mlflow") or {}).get("url")
    if url:
        return url
    try:
        info = client.status()
    except TrainyardError:
        return None
    return info.server.mlflow_uri


# ----------------------------------------------------------------------------- stack commands


def cmd_up(args) -> int:
    from trainyard.local import stack

    console = ui.stderr()
    lines: list[str] = []

    if console.is_terminal:
        with console.status("checking the local stack...") as spinner:
            result = stack.up(port=args.port, mlflow_port=args.mlflow_port,
                              dashboard_port=args.dashboard_port, num_cpus=args.num_cpus,
                              autoscaling=args.autoscaling,
                              on_event=lambda c, m: spinner.update(f"{m}..."))
    else:
        result = stack.up(port=args.port, mlflow_port=args.mlflow_port,
                          dashboard_port=args.dashboard_port, num_cpus=args.num_cpus,
                          autoscaling=args.autoscaling,
                          on_event=lambda c, m: console.print(f"{m}..."))
    if args.json:
        ui.print_json([c.to_dict() for c in result])
        return EXIT_OK
    requested = {"server": args.port, "mlflow": args.mlflow_port, "ray": args.dashboard_port}
    for comp in result:
        port = _port(comp.address)
        if comp.action in ("started", "restarted") and requested[comp.name] is None \
                and port != stack.DEFAULT_PORTS[comp.name]:
            lines.append(f"{comp.name}: port {stack.DEFAULT_PORTS[comp.name]} was taken, "
                         f"so it listens on {port}")
    ui.table("Trainyard local stack", ["component", "address", "pid", "healthy", "action"],
             [(_label(c.name), c.address, c.pid, "yes" if c.healthy else f"no ({c.detail})", c.action)
              for c in result])
    out = ui.stdout()
    for line in lines:
        out.print(line)
    if all(c.action == "running" for c in result):
        out.print("The stack was already running; nothing changed.")
    from trainyard import config

    out.print(f"Home: {config.home()}  (admin token in {config.home() / 'admin.token'})")
    if getattr(args, "hint", True):
        out.print("Next: trainyard jobs submit examples/cnn.yaml --wait")
    return EXIT_OK if all(c.healthy for c in result) else EXIT_UNREACHABLE


def _port(address: str | None) -> int | None:
    try:
        return int(str(address).rsplit(":", 1)[1].split("/")[0])
    except (IndexError, ValueError):
        return None


def _label(name: str) -> str:
    return {"ray": "ray (dashboard)", "mlflow": "mlflow", "server": "trainyard server"}.get(name, name)


def cmd_down(args) -> int:
    from trainyard.local import stack

    console = ui.stderr()
    if console.is_terminal:
        with console.status("stopping the local stack...") as spinner:
            stopped = stack.down(on_event=lambda c, m: spinner.update(f"{m}..."))
    else:
        stopped = stack.down()
    if stopped:
        ui.stdout().print(f"Stopped: {', '.join(stopped)}")
    else:
        ui.stdout().print("The local stack was not running; nothing to stop.")
    return EXIT_OK


def cmd_status(args) -> int:
    from trainyard import config
    from trainyard.local import stack

    comps = stack.status()
    healthy = all(c.healthy for c in comps)
    if args.json:
        ui.print_json({"home": str(config.home()), "up": healthy, "components": [c.to_dict() for c in comps]})
    elif not config.read_stack():
        ui.stdout().print(f"The local stack is not running (home: {config.home()}). Start it with `trainyard up`.")
    else:
        ui.table(f"Trainyard local stack ({config.home()})", ["component", "address", "pid", "healthy"],
                 [(_label(c.name), c.address, c.pid, "yes" if c.healthy else f"no ({c.detail})") for c in comps])
        if not healthy:
            ui.stdout().print("Some components are down; `trainyard up` restarts them.")
    return EXIT_OK if healthy else EXIT_UNREACHABLE


def cmd_version(args) -> int:
    ui.stdout().print(f"trainyard {__version__}")
    return EXIT_OK


# ----------------------------------------------------------------------------- jobs


def _load_spec(path_arg: str):
    """Validate locally: (raw mapping, JobSpec, working_dir path or None)."""
    from trainyard.specs import parse_job_spec

    return context.load_spec_file(path_arg, parse=parse_job_spec, example="examples/cnn.yaml")


def _worker_count(resources) -> str:
    """'2', or '1-4' for an elastic job."""
    if resources.elastic:
        return f"{resources.min_workers}-{resources.max_workers}"
    return str(resources.max_workers)


def _workers_cell(job) -> str:
    """'2' for a fixed job; 'live/max' for an elastic one, e.g. '1/2' (max: its grant once
    dispatched, else the spec's)."""
    span = getattr(job, "workers_range", None)
    if not span:
        return str(job.workers)
    top = span.granted if span.granted is not None else span.max
    return f"{job.workers}/{top}"


def cmd_jobs_submit(args) -> int:
    context.check_server_needs_dry_run(args)
    raw, job, working_dir = _load_spec(args.spec)
    if args.dry_run:
        if args.check_server:
            context.client(args).validate_job(raw, working_dir=str(working_dir) if working_dir else None)
        ui.stdout().print(f"{args.spec}: valid job spec '{job.name}' (workload {job.workload}, "
                          f"{_worker_count(job.resources)} worker(s))"
                          + (", accepted by the server" if args.check_server else ""))
        return EXIT_OK
    client = context.client(args)
    submitted = client.submit_job(raw, working_dir=str(working_dir) if working_dir else None)
    job_id = _job_id(submitted)
    if args.json and not args.wait:
        ui.print_json(submitted)
        return EXIT_OK
    ui.stdout().print(f"Submitted job [bold]{job_id}[/] ({job.name}, workload {job.workload}).")
    if not args.wait:
        ui.stdout().print(f"Follow it: trainyard jobs logs {job_id} -f   |   trainyard jobs show {job_id}")
        return EXIT_OK
    try:
        return _follow(client, job_id, job.name, as_json=args.json)
    except KeyboardInterrupt:
        ui.stderr().print(f"Stopped following; job {job_id} keeps running "
                          f"(`trainyard jobs cancel {job_id}` stops it).")
        return 130


def _job_id(job: Job) -> str:
    return job.id


def _state(job: Job) -> str:
    return job.state


def follow_job(client, job_id: str, name: str = "") -> JobDetail:
    """Show a progress bar until the job ends; return the final job (used by the demo too)."""
    with ui.JobFollower(job_id, name) as follower:
        final = client.wait_job(job_id, on_progress=follower.update)
        follower.finish(final)
    return final


def job_metrics(job: Job) -> dict:
    """The job's final metrics (from the runner's TRAINYARD_RESULT)."""
    return _result(job).get("metrics") or job.metrics or {}


def _follow(client, job_id: str, name: str, *, as_json: bool = False) -> int:
    final = follow_job(client, job_id, name)
    if as_json:
        ui.print_json(final)
    else:
        print_outcome(client, final)
    return EXIT_OK if _state(final) == "SUCCEEDED" else EXIT_FAILED


def _result(job: Job) -> dict:
    """The runner's TRAINYARD_RESULT (jobs described one by one carry it; list items do not)."""
    return getattr(job, "result", None) or {}


def _run_url(client, job: Job) -> str | None:
    from trainyard.local.stack import mlflow_run_url

    if job.mlflow_url:  # the server knows MLflow's web address
        return job.mlflow_url
    if not job.mlflow_run_id:
        return None
    return mlflow_run_url(_mlflow_url(client) or "", job.mlflow_experiment_id, job.mlflow_run_id)


def print_outcome(client, job: JobDetail) -> None:
    out = ui.stdout()
    state = _state(job)
    metrics = job_metrics(job)
    colour = "green" if state == "SUCCEEDED" else "red"
    out.print(f"Job {_job_id(job)} [{colour}]{state}[/]")
    if metrics:
        ui.table("final metrics", ["metric", "value"],
                 [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in metrics.items()])
    model = _result(job).get("model_name")
    if model:
        out.print(f"Registered model: {model} version {_result(job).get('model_version')}")
    url = _run_url(client, job)
    if url:
        out.print(f"MLflow run: {url}")
    if state != "SUCCEEDED" and job.message:
        out.print(f"[red]{job.message}[/]")
        out.print(f"See the logs: trainyard jobs logs {_job_id(job)}")


LIST_MAX = 100_000  # --limit; --all has no bound but the server's total


def cmd_jobs_list(args) -> int:
    from trainyard.cli.costs import gpu_hours_cell, money_cell

    filters: dict[str, Any] = {}
    for flag in ("project", "user", "cluster"):
        value = getattr(args, flag, None)
        if value is not None:
            filters[flag] = context.check_name(value, flag=f"--{flag}", example=f"--{flag} vision")
    states = getattr(args, "state", None)
    if states:
        filters["state"] = [item.strip() for value in states for item in value.split(",") if item.strip()]
    limit, every = getattr(args, "limit", None), getattr(args, "all", False)
    if limit is not None and every:
        raise SpecError("cannot be combined with --all", field="--limit", value=limit,
                        fix="give --limit N for the newest N jobs, or --all for every one")
    context.check_range(limit, flag="--limit", low=1, high=LIST_MAX)
    client = context.client(args)
    if every:
        jobs = list(client.iter_jobs(**filters))
        total = len(jobs)
    else:
        page = client.list_jobs(**filters, **({"limit": limit} if limit is not None else {}))
        jobs = list(page)
        total = getattr(page, "total", len(jobs))  # a JobPage; a plain list from an older client
    if args.json:
        ui.print_json(jobs)
        return EXIT_OK
    if not jobs:
        if filters and total == 0:
            ui.stdout().print("No jobs match these filters.")
        else:
            ui.stdout().print("No jobs yet. Submit one: trainyard jobs submit examples/cnn.yaml")
        return EXIT_OK
    wide = getattr(args, "wide", False)
    rows = [(job.id, job.name, job.state, job.project, job.owner, job.workload, job.cluster, _workers_cell(job),
             ui.fmt_metrics(job_metrics(job), limit=2), ui.fmt_time(job.created_at),
             *((gpu_hours_cell(job), money_cell(job)) if wide else ())) for job in jobs]
    ui.table(None, ["id", "name", "state", "project", "owner", "workload", "cluster", "workers", "metrics",
                    "submitted", *(("GPU-h", "cost") if wide else ())], rows)
    more = "" if len(jobs) >= total else "  (--limit N or --all for more)"
    ui.stdout().print(f"{len(jobs)} of {total}{more}")
    return EXIT_OK


def cmd_jobs_show(args) -> int:
    from trainyard.cli.costs import cost_rows

    client = context.client(args)
    job = client.get_job(args.job_id)
    if args.json:
        ui.print_json(job)
        return EXIT_OK
    prog = job.progress or {}
    rows = [
        ("id", job.id), ("name", job.name), ("state", job.state), ("workload", job.workload),
        ("project", job.project), ("owner", job.owner), ("cluster", job.cluster),
        ("workers", _workers_cell(job)),
        ("ray job", job.submission_id),
        ("submitted", ui.fmt_time(job.created_at)),
        ("started", ui.fmt_time(job.started_at)),
        ("finished", ui.fmt_time(job.ended_at)),
        ("progress", f"step {prog.get('step')}/{prog.get('total_steps')} epoch {prog.get('epoch')}"
         if prog.get("step") is not None else ""),
        ("metrics", ui.fmt_metrics(job_metrics(job) or prog.get("metrics"), limit=20)),
        ("model", f"{_result(job).get('model_name')} v{_result(job).get('model_version')}"
         if _result(job).get("model_name") else ""),
        ("mlflow run", _run_url(client, job)),
        ("message", job.message),
        *_pending_rows(job.pending),
        ("preempted", _preempted(job)),
    ]
    ui.table(f"job {_job_id(job)}", ["field", "value"], [(k, v) for k, v in rows if v not in (None, "")])
    cost = cost_rows(job)
    if cost:
        ui.table("cost", ["figure", "value"], cost)
    return EXIT_OK


def _preempted(job: Any) -> str:
    """"2 times, 95.0 s stopping" when the scheduler took the job's place for others; "" when never."""
    count = job.preemptions or 0
    if not isinstance(count, int) or count <= 0:
        return ""
    text = f"{count} time{'s' if count != 1 else ''}"
    held = job.preempted_s
    return f"{text}, {held:.1f} s stopping" if isinstance(held, (int, float)) else text


def _pending_rows(pending: PendingInfo | None) -> list[tuple[str, str]]:
    """Why a queued job waits (reason code: quota, budget, capacity, ...), and where it stands."""
    if pending is None:
        return []
    reason = pending.reason
    extra = ", ".join(f"{k} {reason[k]}" for k in ("resource", "cluster", "blocking_job") if reason.get(k))
    where = [f"{n} in {label}" for n, label in ((pending.position_in_queue, "the queue"),
                                                (pending.position_in_project, "its project"),
                                                (pending.position_in_cluster, "the cluster")) if n]
    return [("waiting for", str(reason.get("code", "")) + (f" ({extra})" if extra else "")),
            ("position", ", ".join(where)),
            ("estimated start", ui.fmt_time(pending.estimated_start))]


def _log_chunk(client, job_id: str, offset: int) -> tuple[str, int]:
    """The log from character `offset`, and the offset after it."""
    text = client.job_logs(job_id, offset)
    return text, offset + len(text)


_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since_arg(value: str | None) -> str | None:
    """--since: RFC 3339 passes through; 90s / 5m / 2h / 1d (or plain seconds) become seconds."""
    import re

    if value is None:
        return None
    text = value.strip()
    match = re.fullmatch(r"([0-9]{1,9})([smhd]?)", text)
    if match:
        return str(int(match.group(1)) * _SINCE_UNITS.get(match.group(2) or "s", 1))
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.]+(Z|[+-][0-9]{2}:?[0-9]{2})", text):
        return text
    raise SpecError(f"is neither a time nor a duration: {text[:40]!r}", field="--since", value=text[:40],
                    fix="give e.g. --since 10m, --since 2h or --since 2026-12-05T14:00:00Z")


def cmd_jobs_logs(args) -> int:
    import time

    tail, since = getattr(args, "tail", None), _since_arg(getattr(args, "since", None))
    context.check_range(tail, flag="--tail", low=0, high=10_000)
    client = context.client(args)
    if tail is not None or since is not None or (args.follow and hasattr(client, "stream_logs")):
        for line in client.stream_logs(args.job_id, follow=args.follow, tail=tail, since=since):
            sys.stdout.write(ui.redact(line) + "\n")
            sys.stdout.flush()
        return EXIT_OK
    offset = 0
    while True:
        text, offset = _log_chunk(client, args.job_id, offset)
        if text:
            sys.stdout.write(ui.redact(text))
            sys.stdout.flush()
        if not args.follow:
            return EXIT_OK
        if not text:
            if _state(client.get_job(args.job_id)) in ui.TERMINAL_STATES:
                # one last read: lines written between the two calls
                text, offset = _log_chunk(client, args.job_id, offset)
                sys.stdout.write(ui.redact(text))
                return EXIT_OK
            time.sleep(1.0)


def cmd_jobs_cancel(args) -> int:
    job = context.client(args).cancel_job(args.job_id)
    ui.stdout().print(f"Job {args.job_id}: {job.state}")
    return EXIT_OK


# ----------------------------------------------------------------------------- queue


def cmd_queue(args) -> int:
    filters: dict[str, Any] = {}
    for flag in ("project", "cluster"):
        value = getattr(args, flag, None)
        if value is not None:
            filters[flag] = context.check_name(value, flag=f"--{flag}", example=f"--{flag} vision")
    if getattr(args, "limit", None) is not None:
        filters["limit"] = context.check_range(args.limit, flag="--limit", low=1, high=5000)
    queue = context.client(args).get_queue(**filters)
    if args.json:
        ui.print_json(queue)
        return EXIT_OK
    out = ui.stdout()
    if not queue.total:
        out.print("No jobs are waiting." + (" (filters: " + ", ".join(f"{k}={v}" for k, v in filters.items()
                                                                      if k != "limit") + ")" if filters else ""))
        return EXIT_OK
    for group in queue.clusters:
        rows = []
        for job in group.jobs:
            reason = job.reason or {}
            rows.append((job.position_in_cluster or job.position_in_queue or "", job.id, job.project,
                         job.position_in_project or "", job.owner, job.priority,
                         reason.get("code", "not scheduled yet"), reason.get("message", ""),
                         ui.fmt_time(job.estimated_start) if job.estimated_start else ""))
        shown = len(group.jobs)
        title = f"cluster {group.cluster or 'unplaced'}: {group.count} waiting" + (
            f" ({shown} shown)" if shown < group.count else "")
        ui.table(title, ["#", "job", "project", "# in project", "owner", "priority", "waiting for", "why",
                         "estimated start"], rows)
    if queue.projects:
        ui.table("projects", ["project", "queued", "running", "weight", "quota in use", "budget left"],
                 [(p.project, p.queued, p.running, _num(p.weight), _quota_cell(p.quota), _budget_cell(p.budget))
                  for p in queue.projects])
    if queue.truncated:
        out.print(f"{queue.total} jobs wait; the first ones are shown (--limit N for more).")
    return EXIT_OK


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else ("" if value is None else str(value))


def _quota_cell(quota: QuotaUse | None) -> str:
    if quota is None:
        return ""
    return " ".join(f"{k} {_num(v)}/{_num(quota.nominal.get(k))}" if k in quota.nominal else f"{k} {_num(v)}"
                    for k, v in quota.used.items())


def _budget_cell(budget: dict[str, BudgetLeft] | None) -> str:
    return " ".join(f"{kind.upper()} {_num(b.remaining_hours)} of {_num(b.budget_hours)} h"
                    for kind, b in (budget or {}).items())


# ----------------------------------------------------------------------------- clusters


def cmd_clusters_list(args) -> int:
    items = context.client(args).list_clusters()
    if args.json:
        ui.print_json(items)
        return EXIT_OK
    if not items:
        ui.stdout().print("No clusters registered. Add one: trainyard clusters add NAME --address URL")
        return EXIT_OK
    ui.table(None, ["name", "address", "reachable", "nodes", "resources (total)", "free", "error"],
             [(c.name, c.address, _yes(c.reachable), c.nodes, _resources(c.resources_total),
               _resources(c.resources_free), c.last_error) for c in items])
    return EXIT_OK


def _yes(value: Any) -> str:
    return "" if value is None else ("yes" if value else "no")


def _resources(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                        for k, v in value.items() if not str(k).startswith("node:"))
    return "" if value is None else str(value)


def cmd_clusters_add(args) -> int:
    token = None
    if args.token_file:
        path = Path(args.token_file).expanduser()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise SpecError(f"cannot read {args.token_file}: {exc.strerror}", field="--token-file",
                            value=args.token_file, fix="give a readable file holding the token") from None
        if not token:
            raise SpecError("the token file is empty", field="--token-file", value=args.token_file,
                            fix="write the cluster's Ray auth token into it")
        ui.add_secret(token)
    from trainyard.clusters.limits import max_resources_from_args

    max_resources = max_resources_from_args(config=getattr(args, "config", None),
                                            max_resources=getattr(args, "max_resources", None))
    extra = {"max_resources": max_resources} if max_resources else {}
    context.client(args).add_cluster(args.name, address=args.address, token=token, **extra)
    ui.stdout().print(f"Cluster {args.name} registered at {args.address}.")
    return EXIT_OK


def cmd_clusters_remove(args) -> int:
    context.client(args).remove_cluster(args.name)
    ui.stdout().print(f"Cluster {args.name} removed.")
    return EXIT_OK


# ----------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # looked up now, so that a test's replacement of `_client` reaches every noun module
    context.use_client_factory(args, _client)
    # --json is --output json; --output json|yaml turns each command's machine-readable view on
    fmt = "json" if getattr(args, "json", False) and args.output == "table" else args.output
    if fmt != "table" and hasattr(args, "json"):
        args.json = True
    ui.set_output(fmt)
    func: Callable[[Any], int] = args.func
    try:
        return int(func(args) or 0)
    except TrainyardError as exc:
        ui.stderr().print(f"[red]error:[/] {_escape(str(exc))}", highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        ui.stderr().print("interrupted")
        return 130
    except ImportError as exc:
        # a component of this install that another part of Trainyard did not ship yet
        ui.stderr().print(f"[red]error:[/] {_escape(str(exc))} (reinstall Trainyard: `make venv`)")
        return EXIT_UNREACHABLE


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


if __name__ == "__main__":
    sys.exit(main())

"""`trainyard sweeps submit|list|show|cancel`: hyperparameter sweeps, thin over the SDK.

Registered by cli.main.build_parser through `add_parser(nouns)`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from trainyard.apitypes import Sweep
from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_FAILED, EXIT_OK, SpecError

__all__ = ["add_parser"]

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def add_parser(nouns) -> None:
    sweeps = nouns.add_parser("sweeps", help="hyperparameter sweeps: many trials of one job spec", **fmt("""
        A sweep runs one job spec as many trials (Ray Tune over Ray Train + DeepSpeed), each
        with values from the spec's `sweep.search_space`, and registers the best trial's model
        with the MLflow alias `candidate`. See docs/sweeps.md.
        """, """
        trainyard sweeps submit examples/sweep-cnn.yaml --wait
        trainyard sweeps show SWEEP_ID --plot curves.png
        """))
    verbs = sweeps.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("submit", help="validate a sweep spec and submit it", **fmt("""
        Validate SPEC locally (errors name the field; exit 2), then submit it. With --wait,
        print the leaderboard as it changes and the winner at the end; exit 0 only if the
        sweep SUCCEEDED.
        """, """
        trainyard sweeps submit examples/sweep-cnn.yaml --wait
        trainyard sweeps submit my-sweep.yaml --dry-run
        """))
    p.add_argument("spec", metavar="SPEC", help="sweep spec YAML file")
    p.add_argument("--wait", action="store_true", help="follow the sweep until it ends")
    p.add_argument("--dry-run", action="store_true", help="validate the spec and stop")
    p.add_argument("--check-server", action="store_true",
                   help="with --dry-run: the server checks it too (capacity, storage, your role), creating nothing")
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    p.set_defaults(func=cmd_submit)

    p = verbs.add_parser("list", help="list sweeps", **fmt(
        "List the sweeps of the projects you can see, newest first.", """
        trainyard sweeps list
        trainyard sweeps list --project vision
        """))
    p.add_argument("--project", metavar="PROJECT", help="only this project's sweeps")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("show", help="show a sweep and its leaderboard", **fmt("""
        Show a sweep: state, best trial, registered model, and the leaderboard (trial,
        hyperparameters, metric, state, iterations), best first. --plot FILE.png draws every
        trial's learning curve and the best-so-far line.
        """, """
        trainyard sweeps show SWEEP_ID
        trainyard sweeps show SWEEP_ID --plot curves.png
        """))
    p.add_argument("sweep_id", metavar="SWEEP_ID")
    p.add_argument("--plot", metavar="FILE.png", help="write the learning curves to this PNG")
    p.add_argument("--limit", type=int, default=None, help="show only the best N trials")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = verbs.add_parser("cancel", help="cancel a sweep", **fmt(
        "Cancel a queued or running sweep; its running trials stop with it.", "trainyard sweeps cancel SWEEP_ID"))
    p.add_argument("sweep_id", metavar="SWEEP_ID")
    p.set_defaults(func=cmd_cancel)


def _load(path_arg: str):
    from trainyard.specs import parse_sweep_spec

    return context.load_spec_file(path_arg, parse=parse_sweep_spec, example="examples/sweep-cnn.yaml")


def _board(sweep: Sweep) -> dict:
    """The leaderboard as the pure sweeps code reads it (a mapping; what is unknown left out)."""
    return sweep.leaderboard.model_dump(exclude_none=True) if sweep.leaderboard is not None else {}


def _print_board(out, sweep: Sweep, limit: int | None = None) -> None:
    from trainyard.sweeps.leaderboard import board_table

    table = board_table(_board(sweep), limit=limit)
    # a terminal gets a table that fits it; a pipe or a log gets every column at full width
    out.print(table, width=None if out.is_terminal else 10_000)


def cmd_submit(args) -> int:
    context.check_server_needs_dry_run(args)
    raw, spec, working_dir = _load(args.spec)
    if args.dry_run:
        from trainyard.sweeps.plan import plan_sweep

        plan = plan_sweep(spec, sweep_id="dry-run")
        if args.check_server:
            context.client(args).validate_job(raw, working_dir=str(working_dir) if working_dir else None,
                                              kind="sweep")
        ui.stdout().print(f"{args.spec}: valid sweep spec '{spec.name}' (workload {spec.workload}, "
                          f"{plan.num_trials} trials of {spec.resources.workers} worker(s), "
                          f"{spec.sweep.algorithm}/{spec.sweep.scheduler}, {plan.metric} {plan.mode})",
                          highlight=False)
        return EXIT_OK
    client = context.client(args)
    sweep = client.submit_sweep(raw, working_dir=str(working_dir) if working_dir else None)
    if args.json and not args.wait:
        ui.print_json(sweep)
        return EXIT_OK
    ui.stdout().print(f"Submitted sweep [bold]{sweep.id}[/] ({spec.name}, workload {spec.workload}).")
    if not args.wait:
        ui.stdout().print(f"Follow it: trainyard sweeps show {sweep.id}")
        return EXIT_OK
    final = follow_sweep(client, sweep.id)
    if args.json:
        ui.print_json(final)
    else:
        print_sweep(client, final)
    return EXIT_OK if final.state == "SUCCEEDED" else EXIT_FAILED


def follow_sweep(client, sweep_id: str) -> Sweep:
    last = None
    while True:
        sweep = client.get_sweep(sweep_id)
        rows = sweep.leaderboard.rows if sweep.leaderboard is not None else []
        seen = (sweep.state, tuple((r.get("trial"), r.get("iterations"), r.get("state")) for r in rows))
        if seen != last:
            best = sweep.best or {}
            done = sum(1 for r in rows if r.get("state") in ("DONE", "STOPPED", "ERROR"))
            line = f"[{time.strftime('%H:%M:%S')}] {sweep.state}: {done}/{len(rows)} trials ended"
            if best.get("metric") is not None:
                line += f", best {best.get('trial')} = {best['metric']:.4g}"
            print(line, flush=True)
            last = seen
        if sweep.state in TERMINAL:
            return sweep
        time.sleep(2.0)


def print_sweep(client, sweep: Sweep, limit: int | None = None) -> None:
    out = ui.stdout()
    state = sweep.state
    spec_sweep = sweep.sweep or {}
    out.print(f"Sweep {sweep.id} ({sweep.name}, workload {sweep.workload}) "
              f"[{'green' if state == 'SUCCEEDED' else 'yellow' if state == 'RUNNING' else 'red'}]{state}[/]")
    out.print(f"search: {spec_sweep.get('algorithm')} / {spec_sweep.get('scheduler')}, "
              f"{spec_sweep.get('num_trials') or 'default'} trials, "
              f"{spec_sweep.get('max_concurrent_trials')} at a time", highlight=False)
    best = sweep.best
    if best and best.get("metric") is not None:
        out.print(f"best: trial {best['trial']}  {_board(sweep).get('metric', 'metric')} = {best['metric']:.4g}  "
                  + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in (best.get("params") or {}).items()), highlight=False)
    model = sweep.model
    if model:
        out.print(f"registered: {model.model_name} version {model.model_version} "
                  f"(alias {model.model_alias}, trial {model.registered_trial})", highlight=False)
    if sweep.mlflow_url:
        out.print(f"MLflow run: {sweep.mlflow_url}", highlight=False)
    if sweep.leaderboard is not None:
        _print_board(out, sweep, limit)
    elif state not in TERMINAL:
        out.print("no trial has reported yet")
    if state in ("FAILED", "CANCELLED") and sweep.message:
        out.print(f"[red]{sweep.message}[/]")


def cmd_list(args) -> int:
    project = getattr(args, "project", None)
    if project is not None:
        context.check_name(project, flag="--project", example="--project vision")
    sweeps = context.client(args).list_sweeps(**({"project": project} if project else {}))
    if args.json:
        ui.print_json(sweeps)
        return EXIT_OK
    if not sweeps:
        ui.stdout().print("No sweeps yet. Submit one: trainyard sweeps submit examples/sweep-cnn.yaml")
        return EXIT_OK
    rows = []
    for s in sweeps:
        best = s.best or {}
        rows.append((s.id, s.name, s.state, s.project, s.owner, s.workload, s.num_trials or "",
                     f"{best['metric']:.4g} ({best.get('trial')})" if best.get("metric") is not None else "",
                     ui.fmt_time(s.created_at)))
    ui.table(None, ["id", "name", "state", "project", "owner", "workload", "trials", "best", "submitted"], rows)
    return EXIT_OK


def cmd_show(args) -> int:
    client = context.client(args)
    sweep = client.get_sweep(args.sweep_id)
    if args.json:
        ui.print_json(sweep)
    else:
        print_sweep(client, sweep, args.limit)
    if args.plot:
        board = _board(sweep)
        if not board.get("curves"):
            raise SpecError("this sweep has no learning curves yet (no trial has reported)", field="--plot",
                            value=args.plot, fix="try again once trials have reported")
        from trainyard.sweeps.plot import plot_board

        path = plot_board(board, args.plot, title=f"sweep {sweep.id} ({sweep.name})")
        ui.stdout().print(f"wrote {path}", highlight=False)
    return EXIT_OK


def cmd_cancel(args) -> int:
    sweep = context.client(args).cancel_sweep(args.sweep_id)
    ui.stdout().print(f"Sweep {args.sweep_id}: {sweep.state}")
    return EXIT_OK

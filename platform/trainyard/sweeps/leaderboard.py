"""The sweep leaderboard: one row per trial, learning curves, and the best-so-far line.

A board is plain JSON (it travels in TRAINYARD_PROGRESS / TRAINYARD_RESULT lines and is
logged as leaderboard.json to the sweep's MLflow run):

    {"metric": "accuracy", "mode": "max",
     "rows": [{"trial": "t_00001", "params": {"training.lr": 0.003}, "metric": 0.91,
               "best": 0.93, "state": "DONE", "iterations": 6, "steps": 120,
               "mlflow_run_id": "...", "model_uri": "..."}, ...],          # best first
     "best": <the first row or None>,
     "curves": {"t_00001": [[time_s, iteration, step, value], ...]},
     "best_so_far": [[time_s, total_steps_spent, best_value], ...]}

`time_s` counts from the sweep's first result; `total_steps_spent` sums the optimizer steps
every trial had done at that moment (the efficiency benchmark reads it).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["build_board", "board_table", "format_table", "steps_to_target", "better", "STATES"]

STATES = ("PENDING", "RUNNING", "DONE", "STOPPED", "ERROR")


def better(a: float | None, b: float | None, mode: str) -> bool:
    """Is a strictly better than b (None is worst)."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


def _sort_key(mode: str):
    def key(row):
        value = row.get("metric")
        if value is None:
            return (1, 0.0)
        return (0, -value if mode == "max" else value)
    return key


def build_board(trials: Iterable[Mapping[str, Any]], *, metric: str, mode: str) -> dict:
    """trials: {"trial", "params", "state", "points": [{"time", "iteration", "step", metric...}],
    optional "mlflow_run_id", "model_uri", "error"}."""
    rows: list[dict] = []
    curves: dict[str, list] = {}
    events: list[tuple[float, str, int, float | None]] = []
    t0 = None
    trials = list(trials)
    for trial in trials:
        for point in trial.get("points") or []:
            if point.get("time") is not None:
                t0 = point["time"] if t0 is None else min(t0, point["time"])
    t0 = t0 or 0.0
    for trial in trials:
        name = str(trial["trial"])
        points = sorted(trial.get("points") or [], key=lambda p: (p.get("time") or 0, p.get("iteration") or 0))
        curve = []
        best = None
        for p in points:
            value = p.get(metric)
            value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
            t = float(p.get("time") or 0) - t0
            step = int(p.get("step") or p.get("iteration") or 0)
            curve.append([round(t, 3), int(p.get("iteration") or 0), step, value])
            events.append((t, name, step, value))
            if better(value, best, mode):
                best = value
        last = next((c[3] for c in reversed(curve) if c[3] is not None), None)
        curves[name] = curve
        row = {"trial": name, "params": dict(trial.get("params") or {}), "metric": last, "best": best,
               "state": trial.get("state") or "PENDING",
               "iterations": max([c[1] for c in curve], default=0),
               "steps": max([c[2] for c in curve], default=0)}
        for key in ("mlflow_run_id", "model_uri", "error"):
            if trial.get(key):
                row[key] = trial[key]
        rows.append(row)
    rows.sort(key=_sort_key(mode))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    spent: dict[str, int] = {}
    best_so_far: list[list] = []
    best = None
    for t, name, step, value in sorted(events, key=lambda e: e[0]):
        spent[name] = max(spent.get(name, 0), step)
        if better(value, best, mode):
            best = value
        if best is not None:
            best_so_far.append([round(t, 3), sum(spent.values()), best])
    return {"metric": metric, "mode": mode, "rows": rows,
            "best": rows[0] if rows and rows[0].get("metric") is not None else None,
            "curves": curves, "best_so_far": best_so_far}


def steps_to_target(board: Mapping[str, Any], target: float) -> int | None:
    """Total steps spent (all trials) when the best-so-far first reached `target`."""
    mode = board.get("mode", "max")
    for _t, steps, value in board.get("best_so_far") or []:
        if (value >= target) if mode == "max" else (value <= target):
            return int(steps)
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


_STATE_STYLES = {"DONE": "green", "RUNNING": "yellow", "PENDING": "dim", "STOPPED": "dim", "ERROR": "red"}


def board_table(board: Mapping[str, Any], *, limit: int | None = None):
    """The leaderboard as a rich Table, best first: rank, trial, each parameter, the metric's
    last and best values, state, iterations. Cells are Text, so a trial name or a parameter
    value is never read as markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    rows = list(board.get("rows") or [])[: limit or None]
    metric = board.get("metric", "metric")
    keys: list[str] = []
    for row in rows:
        for key in row.get("params", {}):
            if key not in keys:
                keys.append(key)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold",
                  caption=None if rows else "(no trials yet)", caption_justify="left")
    for name in ["#", "trial", *keys, metric, "best", "state", "iters"]:
        table.add_column(name, no_wrap=True)
    for row in rows:
        state = str(row.get("state", ""))
        table.add_row(Text(str(row.get("rank", ""))), Text(str(row["trial"])),
                      *[Text(_fmt(row.get("params", {}).get(k, ""))) for k in keys],
                      Text(_fmt(row.get("metric")) if row.get("metric") is not None else "-"),
                      Text(_fmt(row.get("best")) if row.get("best") is not None else "-"),
                      Text(state, style=_STATE_STYLES.get(state, "")), Text(str(row.get("iterations", 0))))
    return table


def format_table(board: Mapping[str, Any], *, limit: int | None = None) -> str:
    """The leaderboard as plain text (no colour, its natural width), e.g. for a file."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=10_000, color_system=None, force_terminal=False, highlight=False,
            emoji=False).print(board_table(board, limit=limit))
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").splitlines())

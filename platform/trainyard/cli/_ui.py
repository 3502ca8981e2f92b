"""Output helpers for the CLI: a console that never prints a secret, tables, job progress.

Everything the CLI writes goes through `Console` objects whose file is a `_Redacting`
writer: whatever the server, the SDK or an exception says, a token read from the
Trainyard home (or a --token-file) is replaced by *** before it reaches the terminal.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from trainyard import redact as _redact

__all__ = ["stdout", "stderr", "add_secret", "redact", "table", "print_json", "print_data", "render", "set_output",
           "OUTPUT_FORMATS", "JobFollower", "TERMINAL_STATES", "fmt_metrics", "fmt_time"]

OUTPUT_FORMATS = ("table", "json", "yaml")
# what --output asked for; "table" is the human view, which each command prints its own way
_output = {"format": "table"}

TERMINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELLED", "STOPPED"}


def add_secret(value: str | None) -> None:
    _redact.register(value)


def _load_home_secrets() -> None:
    from trainyard import config

    for name in ("admin.token", "ray.token", "mlflow.password"):
        add_secret(config.read_secret(config.home() / name))
    for var in ("TRAINYARD_TOKEN", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_PASSWORD"):
        add_secret(os.environ.get(var))
    from trainyard import contexts
    from trainyard.errors import TrainyardError

    try:
        saved = contexts.load().contexts.values()
    except TrainyardError:
        saved = ()  # a broken file: the command that reads it says so (its errors quote no token)
    for ctx in saved:
        add_secret(ctx.token)


def redact(text: str) -> str:
    return _redact.redact(text)


class _Redacting(io.TextIOBase):
    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):  # rich asks
        return getattr(self._stream, "encoding", "utf-8")


_consoles: dict[str, Any] = {}


def _console(name: str):
    # built on first use, on the streams of that moment (tests swap sys.stdout)
    from rich.console import Console

    stream = sys.stdout if name == "out" else sys.stderr
    cached = _consoles.get(name)
    if cached is None or cached[0] is not stream:
        _load_home_secrets()
        force = None if stream.isatty() else False
        console = Console(file=_Redacting(stream), force_terminal=force,
                          width=None if stream.isatty() else 120, highlight=False,
                          soft_wrap=not stream.isatty())
        _consoles[name] = (stream, console)
    return _consoles[name][1]


def stdout():
    return _console("out")


def stderr():
    return _console("err")


def set_output(fmt: str) -> None:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(fmt)
    _output["format"] = fmt


def render(data: Any, fmt: str | None = None) -> str:
    """The data (API models, lists of them, plain data) as JSON or YAML text, secrets NOT hidden.
    `fmt`: json or yaml; default: what --output asked for, JSON for the human view (--json)."""
    from trainyard.apitypes import to_plain

    fmt = fmt or (_output["format"] if _output["format"] != "table" else "json")
    plain = json.loads(json.dumps(to_plain(data), default=str))
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(plain, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return json.dumps(plain, indent=2, sort_keys=True) + "\n"


def print_data(data: Any, fmt: str | None = None) -> None:
    """render(data), with every secret this process knows hidden."""
    sys.stdout.write(redact(render(data, fmt)))


def print_json(data: Any) -> None:
    """The machine-readable view (--json, --output json|yaml)."""
    print_data(data)


def table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """Cells are plain text (a server's value such as "[/x]" is shown as is, never read as
    markup); a cell that is a rich Text keeps its style."""
    from rich.table import Table
    from rich.text import Text

    tbl = Table(title=title, title_justify="left", header_style="bold")
    for i, col in enumerate(columns):
        # the first column is what commands take (an id, a name): never broken, so it can be copied
        tbl.add_column(col, overflow="fold", no_wrap=i == 0)
    for row in rows:
        tbl.add_row(*[v if isinstance(v, Text) else Text("" if v is None else str(v)) for v in row])
    out = stdout()
    # a terminal gets a table that fits it; a pipe or a log gets every column at full width
    # (print(width=) is capped at the console's own width, so widen the console for this one table)
    if out.is_terminal:
        out.print(tbl)
        return
    saved = out.width
    out.width = 10_000
    try:
        out.print(tbl)
    finally:
        out.width = saved


def fmt_metrics(metrics: Mapping[str, Any] | None, limit: int = 4) -> str:
    if not metrics:
        return ""
    parts = []
    # step and epoch have their own columns wherever metrics are shown
    items = [(k, v) for k, v in metrics.items() if k not in ("step", "epoch", "total_steps")]
    for key, value in items[:limit]:
        parts.append(f"{key}={value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool)
                     else f"{key}={value}")
    return " ".join(parts)


def fmt_time(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return str(value).replace("T", " ").split(".")[0]


def _progress_of(job: Any) -> dict:
    """The job's last TRAINYARD_PROGRESS record (the SDK hands on_progress a JobDetail)."""
    return dict(getattr(job, "progress", None) or {})


class JobFollower:
    """A progress bar for one job: step/total_steps, epoch, latest metrics.

    On a terminal it is a live rich bar; otherwise (CI, pipes, tests) it prints one line
    per epoch, so logs show progress without control characters.
    """

    def __init__(self, job_id: str, name: str = "", console=None):
        self.job_id = job_id
        self.name = name or job_id
        self.console = console or stdout()
        self.live = self.console.is_terminal
        self._progress = None
        self._task = None
        self._last_line: tuple | None = None
        self.state = ""

    def __enter__(self) -> "JobFollower":
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                       TextColumn, TimeElapsedColumn)

            self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                      BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), console=self.console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(self.name, total=None, info="waiting for a cluster")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def update(self, update: Any) -> None:
        """`update`: the job (apitypes.JobDetail) as wait_job hands it over."""
        if update.state:
            self.state = update.state
        prog = _progress_of(update)
        step, total = prog.get("step"), prog.get("total_steps")
        epoch, metrics = prog.get("epoch"), prog.get("metrics") or {}
        info = " ".join(x for x in (
            f"epoch {epoch}" if epoch is not None else "",
            fmt_metrics(metrics),
            self.state if self.state and step is None else "") if x)
        if self._progress is not None:
            kwargs: dict = {"info": info}
            if total:
                kwargs["total"] = total
            if step is not None:
                kwargs["completed"] = step
            self._progress.update(self._task, **kwargs)
            return
        key = (epoch, self.state)
        if key != self._last_line:
            self._last_line = key
            where = f"step {step}/{total or '?'} " if step is not None else ""
            self.console.print(f"{self.name}: {where}{info}".rstrip())

    def finish(self, job: Any) -> None:
        if self._progress is not None:
            state = job.state
            prog = _progress_of(job)
            total = prog.get("total_steps")
            if state == "SUCCEEDED" and total:
                self._progress.update(self._task, completed=total, total=total)
            self._progress.update(self._task, info=state)


"""The wire contract between the server and the job driver: tagged JSON lines on stdout (torch-free).

While a job trains, the job driver prints one line per progress update:

    TRAINYARD_PROGRESS {"step": 120, "total_steps": 600, "epoch": 2, "metrics": {"loss": 0.31}}

and, when the job ends well, exactly one line

    TRAINYARD_RESULT {"metrics": {...final eval metrics...}, "mlflow_run_id": "...",
                      "mlflow_experiment_id": "...", "model_name": "...",
                      "model_version": "3", "checkpoint": "s3://bucket/prefix/...",
                      "usage": {...}}

`usage` (optional) holds rank 0's figures for the cost record (trainyard.runner.usage):
steps, step_seconds, loop_seconds, started_unix, flops_per_step (all workers), workers,
devices_per_worker, device_name, accelerator_type, peak_flops_per_device, peak_per
("device" or "core"), peak_is_estimate, dtype, busy_fraction, mfu; these describe the last
worker group. When the group restarted during the run (a lost worker; an elastic job's
resize), `segments` lists every group in order (trainyard.runner.segments).

A progress line also carries `workers`, the size of the group that reported it (an elastic
job's changes), and a restarted group announces itself with one line holding `restarts`.

each a single line of JSON after the tag. Both are printed by the driver process itself,
so the lines start at column 0 in the Ray job log (no "(pid=...)" prefix). On failure
the driver prints `TRAINYARD_ERROR {"error": ..., "message": ...}` and exits non-zero.
A job asked to stop (preemption: Ray's stop_job sends SIGTERM; or a node's stop notice)
checkpoints at its next step boundary and prints, instead of a result,

    TRAINYARD_PREEMPTED {"step": 40, "total_steps": 600, "checkpoint": "s3://...", "mlflow_run_id": "..."}

then exits with code 75 (errors.EXIT_PREEMPTED); the next run of the same job resumes there.
"""
from __future__ import annotations

import json
import math
import sys
import threading
from typing import Any

__all__ = ["PROGRESS", "RESULT", "ERROR", "PREEMPTED", "format_line", "emit_line", "parse_line", "last_progress", "find_result"]

PROGRESS = "TRAINYARD_PROGRESS"
RESULT = "TRAINYARD_RESULT"
ERROR = "TRAINYARD_ERROR"
PREEMPTED = "TRAINYARD_PREEMPTED"
_TAGS = (PROGRESS, RESULT, ERROR, PREEMPTED)


def _clean(value: Any) -> Any:
    """JSON without NaN/Infinity (not valid JSON; the server's parser would reject it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def format_line(tag: str, payload: dict) -> str:
    assert tag in _TAGS, tag
    return f"{tag} {json.dumps(_clean(payload), separators=(',', ':'), sort_keys=True)}"


_EMIT_LOCK = threading.Lock()


def emit_line(line: str, stream=None) -> None:
    """Print one protocol line in ONE write. print() writes the text and its newline separately,
    and a thread that printed in between (Ray's log monitor relaying workers' output in the
    driver) glued its own text onto the line, which then no longer parsed."""
    stream = stream if stream is not None else sys.stdout
    with _EMIT_LOCK:
        stream.write(line + "\n")
        stream.flush()


def parse_line(line: str) -> tuple[str, dict] | None:
    """(tag, payload) for a protocol line, else None. Tolerates a Ray log prefix."""
    for tag in _TAGS:
        idx = line.find(tag + " ")
        if idx >= 0:
            try:
                payload = json.loads(line[idx + len(tag) + 1:].strip())
            except json.JSONDecodeError:
                return None
            return (tag, payload) if isinstance(payload, dict) else None
    return None


def last_progress(log_text: str) -> dict | None:
    """The last TRAINYARD_PROGRESS payload in a job log."""
    found = None
    for line in log_text.splitlines():
        parsed = parse_line(line)
        if parsed and parsed[0] == PROGRESS:
            found = parsed[1]
    return found


def find_result(log_text: str) -> dict | None:
    """The TRAINYARD_RESULT payload in a job log, if the job got that far."""
    for line in reversed(log_text.splitlines()):
        parsed = parse_line(line)
        if parsed and parsed[0] == RESULT:
            return parsed[1]
    return None

"""`python -m trainyard.runner job --job-id ID` : the Ray job entrypoint the server submits.

The JobSpec comes as JSON (or YAML) in $TRAINYARD_SPEC, or from --spec-file PATH.
stdout protocol (see trainyard.protocol): TRAINYARD_PROGRESS lines while training,
one TRAINYARD_RESULT line at the end; exit 0. On failure one TRAINYARD_ERROR line, a
message on stderr, and a non-zero exit code (2: the spec is wrong, 1: training failed).
Asked to stop (SIGTERM: Ray's stop_job, a node's stop notice): it checkpoints after the
current step, prints one TRAINYARD_PREEMPTED line and exits 75; running it again resumes.

`python -m trainyard.runner sweep ...` is handed to trainyard.runner.sweep_driver.main(argv).
"""
from __future__ import annotations

import argparse
import os
import sys

from trainyard.errors import EXIT_FAILED, EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE, SpecError, TrainyardError


def _load_spec(args):
    from trainyard.runner import checked_spec
    from trainyard.specs import parse_job_spec

    if args.spec_file:
        from pathlib import Path

        return checked_spec(parse_job_spec, Path(args.spec_file))
    text = os.environ.get("TRAINYARD_SPEC")
    if not text:
        raise SpecError("no job spec given", field="TRAINYARD_SPEC",
                        fix="set $TRAINYARD_SPEC to the JobSpec JSON, or pass --spec-file PATH")
    return checked_spec(parse_job_spec, text, source="TRAINYARD_SPEC")


def _protect_secrets() -> None:
    """Register what this job must never print (its spec's env values, the credentials the
    server passed) and filter every log handler through trainyard.redact."""
    import json

    from trainyard import redact

    redact.register(*(os.environ.get(name) for name in (
        "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "RAY_AUTH_TOKEN")))
    try:
        redact.register(*redact.env_secrets(json.loads(os.environ.get("TRAINYARD_SPEC") or "{}")))
    except (ValueError, AttributeError):
        pass  # YAML or broken: the spec loader reports it
    redact.install_log_filter("ray", "trainyard")


def _error(kind: str, message: str) -> None:
    from trainyard import redact
    from trainyard.protocol import ERROR, emit_line, format_line

    message = redact.redact(message)
    emit_line(format_line(ERROR, {"error": kind, "message": message}))
    print(f"trainyard runner: {message}", file=sys.stderr, flush=True)


def job_main(args) -> int:
    from trainyard.protocol import PREEMPTED, RESULT, emit_line, format_line

    try:
        spec = _load_spec(args)
    except TrainyardError as exc:
        _error(exc.code, str(exc))
        return exc.exit_code or EXIT_USAGE
    try:
        from trainyard.runner.job import run_job

        result = run_job(spec, args.job_id, storage=args.storage)
    except TrainyardError as exc:
        _error(exc.code, str(exc))
        return exc.exit_code or EXIT_FAILED
    except Exception as exc:  # training failed: the cause is in the worker traceback above
        _error("training_failed", _describe(exc))
        return EXIT_FAILED
    if result.pop("preempted", False):
        emit_line(format_line(PREEMPTED, result))
        return EXIT_PREEMPTED
    emit_line(format_line(RESULT, result))
    return EXIT_OK


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray's TrainingFailedError repeats worker tracebacks; the last lines say what broke
    if len(lines) > 12:
        lines = lines[:3] + ["..."] + lines[-8:]
    return "\n".join(lines)[:4000]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainyard.runner",
                                     description="Trainyard's Ray job entrypoint.")
    sub = parser.add_subparsers(dest="command", required=True)
    job = sub.add_parser("job", help="train one job (spec in $TRAINYARD_SPEC or --spec-file)")
    job.add_argument("--job-id", default=os.environ.get("TRAINYARD_JOB_ID"),
                     help="the job's id: names its checkpoints and MLflow run (default $TRAINYARD_JOB_ID)")
    job.add_argument("--spec-file", help="read the JobSpec from this YAML/JSON file instead of $TRAINYARD_SPEC")
    job.add_argument("--storage", help="checkpoint storage URI (default: spec, then $TRAINYARD_STORAGE)")
    sub.add_parser("sweep", help="run a sweep (trainyard.runner.sweep_driver)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    _protect_secrets()
    if args.command == "sweep":
        try:
            from trainyard.runner import sweep_driver as sweep
        except ImportError as exc:
            _error("not_available", f"sweeps are not available in this build ({exc})")
            return EXIT_USAGE
        return int(sweep.main(rest) or 0)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not args.job_id:
        parser.error("--job-id is required (or set $TRAINYARD_JOB_ID)")
    return job_main(args)


if __name__ == "__main__":
    sys.exit(main())

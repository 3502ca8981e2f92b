"""`make demo`: start the local stack, train examples/cnn.yaml, print accuracy and the MLflow run, stop.

Uses ./.trainyard-demo as the Trainyard home unless TRAINYARD_HOME is set. Stops what it
started, also on Ctrl-C or failure; a stack that was already running before the demo is
left running. Exits non-zero when the job fails or its test accuracy is below 0.95.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "cnn.yaml"
MIN_ACCURACY = 0.95


def _sigterm(signum, frame):  # `kill` and CI timeouts clean up like Ctrl-C does
    raise KeyboardInterrupt


def _shown_home() -> str:
    home = Path(os.environ["TRAINYARD_HOME"]).resolve()
    try:
        return str(home.relative_to(Path.cwd()))
    except ValueError:
        return str(home)


def main() -> int:
    os.environ.setdefault("TRAINYARD_HOME", str(REPO / ".trainyard-demo"))
    signal.signal(signal.SIGTERM, _sigterm)

    from trainyard.cli import _ui as ui
    from trainyard.cli.main import build_parser, cmd_up, follow_job, job_metrics, print_outcome
    from trainyard.errors import TrainyardError
    from trainyard.local import stack
    from trainyard.specs import load_yaml, parse_job_spec

    out = ui.stdout()
    t0 = time.monotonic()
    out.print(f"[bold]Trainyard demo[/] (home: {os.environ['TRAINYARD_HOME']})")
    spec_raw = load_yaml(SPEC.read_text(), source=str(SPEC))
    spec = parse_job_spec(spec_raw, source=str(SPEC))

    started_here = not stack.is_up()
    client = job_id = None
    code = 1
    try:
        # the same code path as `trainyard up`: spinner, then the address table
        up_args = build_parser().parse_args(["up"])
        up_args.hint = False
        cmd_up(up_args)
        from trainyard.sdk import Client

        client = Client()
        submitted = client.submit_job(spec_raw)
        job_id = str(ui.job_field(submitted, "id", "job_id")) if isinstance(submitted, dict) else str(submitted)
        out.print(f"Submitted {SPEC.relative_to(REPO)} as job [bold]{job_id}[/]")
        final = follow_job(client, job_id, spec.name)
        print_outcome(client, final)
        state = str(ui.job_field(final, "state", "status", "phase"))
        accuracy = job_metrics(final).get("accuracy")
        if state != "SUCCEEDED":
            out.print(f"[red]The demo job ended {state}.[/]")
        elif accuracy is None:
            out.print("[red]The job reported no accuracy.[/]")
        elif accuracy < MIN_ACCURACY:
            out.print(f"[red]Test accuracy {accuracy:.4f} is below {MIN_ACCURACY}.[/]")
        else:
            out.print(f"[green bold]Test accuracy: {accuracy:.4f}[/] (>= {MIN_ACCURACY})")
            code = 0
        job_id = None  # finished: nothing to cancel
    except TrainyardError as exc:
        ui.stderr().print(f"[red]error:[/] {exc}")
        code = exc.exit_code or 1
    except KeyboardInterrupt:
        ui.stderr().print("interrupted")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if client is not None and job_id is not None:
            try:
                client.cancel_job(job_id)
            except Exception:  # the stack is going down anyway
                pass
        if started_here:
            with ui.stderr().status("stopping the local stack..."):
                stack.down()
            out.print("Stopped the local stack. Runs and models stay in the home: "
                      f"`TRAINYARD_HOME={_shown_home()} trainyard up` brings MLflow back to browse them.")
        else:
            out.print("The stack was running before the demo; left it running (`trainyard down` stops it).")
        out.print(f"Demo finished in {time.monotonic() - t0:.0f} s.")
    return code


if __name__ == "__main__":
    sys.exit(main())

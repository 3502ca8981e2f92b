"""`python -m trainyard.api --host H --port P`: serve the API with uvicorn (settings from TRAINYARD_*)."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path


SWITCH_INTERVAL_S = 0.0005
GC_THRESHOLDS = (2000, 10, 100)  # CPython 3.11's are (700, 10, 10)


def drop_launch_dir(path: list[str] | None = None) -> list[str]:
    """Take the launch folder (cwd, or '') off the import path, in place.

    `python -m` puts the cwd first on sys.path, so any .py file where the server was
    started could be imported by name. The server imports no user code; this keeps a slip
    from turning into it. The folder stays only when Trainyard itself is loaded from it
    (a source checkout run as `cd platform && python -m trainyard.api`)."""
    path = sys.path if path is None else path
    cwd = os.path.realpath(os.getcwd())
    own = os.path.realpath(str(Path(__file__).resolve().parent.parent.parent))
    path[:] = [p for p in path if not ((p == "" or os.path.realpath(p) == cwd) and cwd != own)]
    return path


def main(argv: list[str] | None = None) -> None:
    drop_launch_dir()
    parser = argparse.ArgumentParser(prog="python -m trainyard.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8400)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    from trainyard import config, redact

    # the database, its WAL files and everything else this process writes are private
    config.private_umask()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # one line per Ray poll drowns the state changes that matter
    logging.getLogger("httpx").setLevel(logging.WARNING)
    import uvicorn

    from trainyard.api.app import create_app

    # The event loop and the group commit's writer thread share the GIL. At Python's default
    # switch interval (5 ms) the writer, back from each SQLite call that released the GIL,
    # waited up to 5 ms for a busy loop to hand it back, a wait per statement of a batch: a
    # burst of submissions queued behind it. 0.5 ms bounds that wait.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    from trainyard.errors import TrainyardError

    try:
        app = create_app()
    except TrainyardError as exc:  # a bad TRAINYARD_* setting: its name, value and fix, no traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    server_config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                   lifespan="on", timeout_graceful_shutdown=5)
    # What was imported and built so far (modules, classes, schemas, routes: ~150,000 objects)
    # lives as long as the process. Frozen, the collector's full passes stop walking it each
    # time: they took up to ~100 ms each under a burst of submissions, a pause of every
    # request in flight (measured in-process: 6 full passes per 3,000 submissions).
    gc.collect()
    gc.freeze()
    # What stays alive after that grows with the queue: the controller's mirror holds a few
    # objects per queued job. At the default thresholds a full pass ran each time that grew
    # by a quarter, about 10 times in a 15 s burst at 1,000 submissions per s, each a 40-90 ms
    # stop of every request (gc.callbacks, measured). Full passes come 10x less often here
    # (third threshold), and young ones less often, as CPython 3.13's default (first one).
    gc.set_threshold(*GC_THRESHOLDS)
    # uvicorn has configured its own handlers by now: filter those and ours
    redact.install_log_filter("uvicorn", "uvicorn.error", "uvicorn.access")
    uvicorn.Server(server_config).run()


if __name__ == "__main__":
    main()

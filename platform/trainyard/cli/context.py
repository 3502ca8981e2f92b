"""What every `trainyard` command shares: the SDK client, the consoles, the help layout.

`cli.main` builds the parser from the noun modules (`cli.sweeps`, `cli.endpoints`); they all
import this module and never each other. Importing it is cheap: no SDK, no rich, no torch
until a command asks for them.
"""
from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, Callable

from trainyard.cli import _ui as ui

__all__ = ["ui", "fmt", "EXIT_CODES_HELP", "client", "sdk_client", "use_client_factory"]

EXIT_CODES_HELP = textwrap.dedent("""\
    exit codes:
      0  ok              1  the job failed or was cancelled
      2  bad input       3  not found
      4  unreachable     5  not authorised
      6  conflict (a port is taken, a state change is not allowed)
""")


def fmt(description: str, examples: str = "") -> dict:
    """argparse keyword arguments: a dedented description and an `examples:` epilog."""
    epilog = ""
    if examples:
        epilog = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  ") + "\n"
    return {"description": textwrap.dedent(description).strip(),
            "epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}


def sdk_client(args: argparse.Namespace) -> Any:
    """The SDK client for the server that `--url` (or the environment, or the local stack) names."""
    from trainyard.sdk import Client

    return Client(url=args.server) if getattr(args, "server", None) else Client()


def use_client_factory(args: argparse.Namespace, factory: Callable[[argparse.Namespace], Any]) -> None:
    """Decide, for this invocation, how its commands get a client (the entry point does)."""
    args.client_factory = factory


def client(args: argparse.Namespace) -> Any:
    """The client a command talks to: the invocation's factory, else the SDK's."""
    factory = getattr(args, "client_factory", None) or sdk_client
    return factory(args)


def local_workload_meta(raw: dict, path: Path) -> dict | None:
    """Your own workload's metadata, read here on your machine: the server imports no user code.

    `raw` is the spec mapping read from `path`; a `working_dir` is taken relative to it."""
    from trainyard.sdk import workload_meta_of

    folder = raw.get("working_dir")
    return workload_meta_of(raw, working_dir=path.parent / folder if isinstance(folder, str) and folder else None)

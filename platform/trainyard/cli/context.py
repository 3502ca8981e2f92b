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


def load_spec_file(path_arg: str, *, parse: Callable[..., Any], example: str) -> tuple[dict, Any, Path | None]:
    """Read and validate a spec file here, before anything is sent: (raw mapping, parsed spec,
    working_dir as an absolute path or None). `parse` is specs.parse_job_spec or
    parse_sweep_spec; `example` names a spec to copy in the error for a missing file.

    A user's own workload is imported here, on the user's machine, for its metadata: the
    server imports no user code."""
    from trainyard.errors import SpecError
    from trainyard.sdk import workload_meta_of
    from trainyard.specs import load_yaml, read_spec_file

    path = Path(path_arg).expanduser()
    if not path.is_file():
        raise SpecError(f"no such file: {path_arg}", field="SPEC", value=path_arg,
                        fix=f"give the path of a spec YAML file, e.g. {example}")
    raw = load_yaml(read_spec_file(path), source=str(path))
    folder = raw.get("working_dir")
    meta = workload_meta_of(raw, working_dir=path.parent / folder if isinstance(folder, str) and folder else None)
    spec = parse(raw, source=str(path), workload_meta=meta)
    working_dir = None
    if spec.working_dir:
        working_dir = (path.parent / Path(spec.working_dir).expanduser()).resolve()
        if not working_dir.is_dir():
            raise SpecError(f"folder {str(working_dir)!r} does not exist", source=str(path),
                            field="working_dir", value=spec.working_dir,
                            fix="working_dir is relative to the spec file; point it at your code folder")
    return raw, spec, working_dir

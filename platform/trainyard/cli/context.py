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

__all__ = ["ui", "fmt", "EXIT_CODES_HELP", "client", "sdk_client", "use_client_factory", "check_name",
           "check_text", "check_choice", "check_range", "ROLES"]

# a project role, lowest first (trainyard.auth.roles on the server)
ROLES = ("viewer", "member", "maintainer")

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
    """The SDK client for the server that `--url` (or the environment, the current context, or
    the local stack) names. `login_token`: the token `trainyard login` checks, with its --server."""
    from trainyard.sdk import Client

    return Client(url=getattr(args, "server", None), token=getattr(args, "login_token", None))


def use_client_factory(args: argparse.Namespace, factory: Callable[[argparse.Namespace], Any]) -> None:
    """Decide, for this invocation, how its commands get a client (the entry point does)."""
    args.client_factory = factory


def client(args: argparse.Namespace) -> Any:
    """The client a command talks to: the invocation's factory, else the SDK's."""
    factory = getattr(args, "client_factory", None) or sdk_client
    return factory(args)


def check_server_needs_dry_run(args: argparse.Namespace) -> None:
    """`--check-server` asks the server instead of submitting: alone it would submit, unasked."""
    if getattr(args, "check_server", False) and not getattr(args, "dry_run", False):
        from trainyard.errors import SpecError

        raise SpecError("only goes with --dry-run", field="--check-server",
                        fix="add --dry-run to check the spec without submitting it, or leave --check-server out")


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


# ----------------------------------------------------------------------------- argument checks
# Run before anything is sent: a bad value is exit 2 with the flag, the value and the fix.


def check_name(value: str, *, flag: str, example: str) -> str:
    """A user, project or other name of the API: lower-case letters, digits and '-', at most 63."""
    import re

    from trainyard.errors import SpecError
    from trainyard.specs.models import NAME_RE

    if not re.fullmatch(NAME_RE, value or ""):
        raise SpecError(f"must be 1 to 63 lower-case letters, digits or '-', starting and ending with a letter "
                        f"or digit, got {value[:80]!r}", field=flag, value=value, fix=f"e.g. {example}")
    return value


def check_text(value: str, *, flag: str, max_chars: int, allow_empty: bool = False) -> str:
    """Free text (a description, a token's name): bounded, one line, no control characters."""
    from trainyard.errors import SpecError

    if not allow_empty and not value.strip():
        raise SpecError("is empty", field=flag, fix="give some text")
    if len(value) > max_chars:
        raise SpecError(f"is {len(value)} characters long, more than {max_chars}", field=flag,
                        value=value[:40] + "...", fix=f"keep it to {max_chars} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SpecError(f"holds a line break or a control character, got {value[:80]!r}", field=flag, value=value,
                        fix="give one line of plain text")
    return value


def check_choice(value: str, *, flag: str, choices: tuple[str, ...]) -> str:
    from trainyard.errors import SpecError, did_you_mean

    if value not in choices:
        hint = did_you_mean(value, choices)
        raise SpecError(f"must be one of {', '.join(choices)}, got {value[:80]!r}" + (f";{hint}" if hint else ""),
                        field=flag, value=value, fix=f"e.g. {flag} {choices[0]}")
    return value


def check_range(value: int | None, *, flag: str, low: int, high: int) -> int | None:
    from trainyard.errors import SpecError

    if value is not None and not low <= value <= high:
        raise SpecError(f"must be between {low} and {high}, got {value}", field=flag, value=value,
                        fix=f"give a whole number from {low} to {high}")
    return value

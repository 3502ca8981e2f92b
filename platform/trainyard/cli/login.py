"""`trainyard login`, `trainyard context list|use|remove`, `trainyard whoami`.

A context is a server and a token saved under a name in <TRAINYARD_HOME>/contexts.json
(trainyard.contexts); the current one is what every other command talks to, unless
--url / TRAINYARD_URL say otherwise. Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_OK, AuthError, SpecError

__all__ = ["add_parser", "read_token"]

# what a token looks like at a glance: a personal token, an endpoint key, a JWT
_TOKEN_PREFIXES = ("tyk_", "tye_", "eyJ")


def add_parser(nouns) -> None:
    # allow_abbrev off: `--token X` must not be read as `--token-file X` (and then echoed as a file name)
    p = nouns.add_parser("login", help="save a server and your token as a context", allow_abbrev=False, **fmt("""
        Check TOKEN against the server (GET /v1/me), then save the server and the token as a
        context in $TRAINYARD_HOME/contexts.json (private, 0600) and make it the current one:
        later commands talk to that server as you.

        The token is read from --token-file, else from stdin when stdin is not a terminal,
        else from a hidden prompt. It is never taken as an argument: arguments stay in your
        shell history and in the process list. Nothing is saved if the server refuses it.
        """, """
        trainyard login --server https://trainyard.example.com            # asks for the token
        trainyard login --server https://trainyard.example.com --token-file ~/ty.token --context prod
        echo "$TY_TOKEN" | trainyard login --server http://127.0.0.1:8080 --context local
        """))
    p.add_argument("--server", required=True, dest="login_server", metavar="URL",
                   help="the Trainyard server's base URL")
    p.add_argument("--token-file", metavar="FILE", help="file holding your token (else stdin, else a prompt)")
    p.add_argument("--context", metavar="NAME", dest="context_name",
                   help="name of the context (default: the server's host and port)")
    # taken only to be refused with a clear error that does not echo it
    p.add_argument("--token", dest="plain_token", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_login)

    ctx = nouns.add_parser("context", help="list, switch and remove saved servers (contexts)", **fmt("""
        Contexts are servers you logged in to, each with its token. The current one (marked *)
        is what commands talk to; --url or TRAINYARD_URL/TRAINYARD_TOKEN override it for one
        command. With no current context, commands talk to the local stack (`trainyard up`).
        """, """
        trainyard context list
        trainyard context use prod
        trainyard context remove old-server
        """))
    verbs = ctx.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    p = verbs.add_parser("list", help="list contexts", **fmt(
        "List saved contexts: name, server, and * for the current one. Tokens are never shown.", """
        trainyard context list
        trainyard context list --json
        """))
    p.add_argument("--json", action="store_true", help="print JSON (without tokens)")
    p.set_defaults(func=cmd_context_list)
    p = verbs.add_parser("use", help="make a context the current one", **fmt(
        "Make NAME the current context: later commands talk to its server with its token.",
        "trainyard context use prod"))
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_context_use)
    p = verbs.add_parser("remove", help="forget a context and its token", **fmt("""
        Forget NAME and its token (on this machine only: to make the token useless everywhere,
        `trainyard tokens revoke ID` first). If it was current, no context is current after.
        """, "trainyard context remove old-server"))
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_context_remove)

    p = nouns.add_parser("whoami", help="who the server thinks you are, and your projects", **fmt("""
        Ask the server who this token belongs to: user, kind (user or service), admin or not,
        how you authenticated, and your role in each project. Shows which server and context
        were used.
        """, """
        trainyard whoami
        trainyard whoami --json
        """))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_whoami)


def read_token(token_file: str | None, *, server: str) -> str:
    """The token: from the file, else stdin when piped, else a hidden prompt. Checked, never echoed."""
    from trainyard.contexts import MAX_TOKEN_CHARS, check_token

    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            with path.open(encoding="utf-8") as fh:
                text = fh.read(MAX_TOKEN_CHARS + 2)  # bounded: a wrong, large file is refused, not read whole
        except FileNotFoundError:
            if token_file.startswith(_TOKEN_PREFIXES):
                ui.add_secret(token_file)
                raise SpecError("looks like a token, not the name of a file holding one", field="--token-file",
                                fix="save the token in a file (or pipe it on stdin); as it is now in your shell "
                                    "history, consider revoking it") from None
            raise SpecError(f"no such file: {token_file}", field="--token-file", value=token_file,
                            fix="give the file you saved your token in") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise SpecError(f"cannot read {token_file}: {reason}", field="--token-file", value=token_file,
                            fix="give a readable text file holding only your token") from None
        where = "--token-file"
    elif not sys.stdin.isatty():
        text = sys.stdin.read(MAX_TOKEN_CHARS + 2)
        where = "stdin"
    else:
        try:
            text = getpass.getpass(f"Token for {server}: ")
        except EOFError:
            text = ""
        where = "token"
    token = check_token(text, field_name=where)
    ui.add_secret(token)  # from here on, nothing this process prints can show it
    return token


def cmd_login(args) -> int:
    from trainyard import contexts

    if args.plain_token is not None:
        ui.add_secret(args.plain_token)
        raise SpecError("a token is never taken as an argument: it would stay in your shell history and show in "
                        "the process list", field="--token",
                        fix="use --token-file FILE, pipe it on stdin, or type it at the prompt; consider revoking "
                            "that token, as it is now in your shell history")

    server = contexts.check_server(args.login_server)
    name = contexts.check_context_name(args.context_name) if args.context_name else contexts.default_name(server)
    token = read_token(args.token_file, server=server)
    args.server, args.login_token = server, token  # the client below talks to this server with this token
    client = context.client(args)
    try:
        me = client.me()
    except AuthError as exc:
        raise AuthError(f"the server at {server} refused this token: {exc.message}; nothing was saved",
                        status=getattr(exc, "status", 401),
                        fix="check the token (`trainyard tokens create` prints a new one)") from None
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
    replaced = contexts.save_context(name, server=server, token=token, make_current=True)
    user = me.get("user", "?")
    extra = ", admin" if me.get("admin") else ""
    ui.stdout().print(f"Logged in to {server} as {user} ({me.get('kind', 'user')}{extra}). "
                      f"Context {name} {'updated' if replaced else 'saved'} and now current.", highlight=False, markup=False)
    ui.stdout().print(f"Token saved in {contexts.contexts_file()} (readable by you only).", highlight=False, markup=False)
    return EXIT_OK


def cmd_context_list(args) -> int:
    from trainyard import contexts

    data = contexts.load()
    if args.json:
        ui.print_json({"current": data.current,
                       "contexts": [c.public() for _, c in sorted(data.contexts.items())]})
        return EXIT_OK
    if not data.contexts:
        ui.stdout().print("No contexts saved. Add one: trainyard login --server URL")
        return EXIT_OK
    ui.table(None, ["name", "server", "current"],
             [(n, c.server, "*" if n == data.current else "") for n, c in sorted(data.contexts.items())])
    if data.current is None:
        ui.stdout().print("No context is current: commands talk to the local stack (`trainyard context use NAME`).")
    return EXIT_OK


def cmd_context_use(args) -> int:
    from trainyard import contexts

    ctx = contexts.use_context(args.name)
    ui.stdout().print(f"Context {ctx.name} is now current ({ctx.server}).", highlight=False, markup=False)
    return EXIT_OK


def cmd_context_remove(args) -> int:
    from trainyard import contexts

    was_current = contexts.remove_context(args.name)
    ui.stdout().print(f"Context {args.name} removed; its token is no longer stored here.", highlight=False, markup=False)
    if was_current:
        ui.stdout().print("It was the current context: no context is current now "
                          "(`trainyard context use NAME` picks another).", highlight=False, markup=False)
    return EXIT_OK


def cmd_whoami(args) -> int:
    client = context.client(args)
    me = client.me()
    server, ctx_name = getattr(client, "url", None), getattr(client, "context", None)
    if args.json:
        from trainyard.apitypes import to_plain

        ui.print_json({**to_plain(me), "server": server, "context": ctx_name})
        return EXIT_OK
    out = ui.stdout()
    kind = me.get("kind", "user")
    role = "admin" if me.get("admin") else ("service account" if kind == "service" else "user")
    out.print(f"{me.get('user')} ({role}, signed in with {me.get('via', 'token')})", highlight=False, markup=False)
    if server:
        out.print(f"server: {server}" + (f" (context {ctx_name})" if ctx_name else ""), highlight=False, markup=False)
    projects = me.get("projects") or {}
    if projects:
        ui.table(None, ["project", "role"], sorted(projects.items()))
    elif me.get("admin"):
        out.print("projects: all (admin)")
    else:
        out.print("projects: none yet (an admin or a project maintainer adds you)")
    return EXIT_OK

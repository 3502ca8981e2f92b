"""`trainyard tokens create|list|revoke`: personal API tokens, thin over the SDK.

Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from typing import Any

from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_OK, SpecError

__all__ = ["add_parser", "token_state"]

TOKEN_ID_RE = re.compile(r"^[0-9a-f]{12}$")
MAX_EXPIRY_DAYS = 3650


def add_parser(nouns) -> None:
    tokens = nouns.add_parser("tokens", help="create, list and revoke your API tokens", **fmt("""
        Personal API tokens: each is named, may expire, can be revoked, and shows when it was
        last used. A token is shown once, when it is created; the server keeps only its hash.
        Admins manage other users' and service accounts' tokens with --user.
        """, """
        trainyard tokens create laptop --expires-in-days 90
        trainyard tokens list
        trainyard tokens revoke 0123456789ab
        """))
    verbs = tokens.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("create", help="create a token (shown once)", **fmt("""
        Create a token named NAME and print it once: copy it now, it is not shown again.
        Use it with `trainyard login --server URL` (on stdin or --token-file), or as
        TRAINYARD_TOKEN. --user creates it for another user or a service account (admin).
        """, """
        trainyard tokens create laptop
        trainyard tokens create ci --user ci-bot --expires-in-days 30 > ci.token
        """))
    p.add_argument("name", metavar="NAME", help="what the token is for (at most 64 characters)")
    p.add_argument("--expires-in-days", type=int, metavar="N",
                   help=f"expire after N days (1 to {MAX_EXPIRY_DAYS}; default: never)")
    p.add_argument("--user", metavar="USER", help="create it for this user or service account (admin)")
    p.add_argument("--json", action="store_true", help="print JSON (holds the token)")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("list", help="list tokens (never their text)", **fmt(
        "List your tokens (or --user's, as an admin): id, name, created, expires, last used, state.", """
        trainyard tokens list
        trainyard tokens list --user ci-bot --json
        """))
    p.add_argument("--user", metavar="USER", help="list this user's tokens (admin)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("revoke", help="revoke a token by its id", **fmt("""
        Revoke the token with this ID (the 12 hex characters `tokens list` shows): from now on
        the server refuses it. Your own tokens, or anyone's as an admin.
        """, "trainyard tokens revoke 0123456789ab"))
    p.add_argument("token_id", metavar="ID")
    p.set_defaults(func=cmd_revoke)


def _check_user(user: str | None) -> str | None:
    return None if user is None else context.check_name(user, flag="--user", example="--user ci-bot")


def cmd_create(args) -> int:
    name = context.check_text(args.name, flag="NAME", max_chars=64)
    context.check_range(args.expires_in_days, flag="--expires-in-days", low=1, high=MAX_EXPIRY_DAYS)
    user = _check_user(args.user)
    created = context.client(args).create_token(name, expires_in_days=args.expires_in_days, user=user)
    token = created.get("token")
    if not token:
        raise SpecError("the server answered without the token", field="token",
                        fix="revoke it (`trainyard tokens list`) and create another")
    if args.json:
        # not ui.print_data: that one hides every token this process knows, and this is the token's one showing
        sys.stdout.write(ui.render(created))
    else:
        # the one time it is printed: plain, on a line of its own, so that `> file` or a copy gets exactly it
        sys.stdout.write(token + "\n")
        sys.stdout.flush()
    expires = ui.fmt_time(created.get("expires_at")) or "never"
    ui.stderr().print(f"Token {created.get('id')} ({name}) for {created.get('user') or 'you'}, expires "
                      f"{expires}. Copy it now: it will not be shown again.", style="yellow", highlight=False,
                      markup=False)
    return EXIT_OK


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def token_state(tok: dict, *, now: datetime | None = None) -> str:
    """active, expired or revoked (revoked wins: it is what the server says when refusing it)."""
    if tok.get("revoked_at"):
        return "revoked"
    expires = _parse_time(tok.get("expires_at"))
    if expires is not None and expires <= (now or datetime.now(timezone.utc)):
        return "expired"
    return "active"


def cmd_list(args) -> int:
    user = _check_user(args.user)
    tokens = context.client(args).list_tokens(user=user)
    if args.json:
        ui.print_json(tokens)
        return EXIT_OK
    if not tokens:
        ui.stdout().print("No tokens. Create one: trainyard tokens create NAME")
        return EXIT_OK
    ui.table(None, ["id", "name", "user", "state", "created", "expires", "last used"],
             [(t.get("id"), t.get("name"), t.get("user"), token_state(t), ui.fmt_time(t.get("created_at")),
               ui.fmt_time(t.get("expires_at")) or "never", ui.fmt_time(t.get("last_used_at")) or "never")
              for t in tokens])
    return EXIT_OK


def cmd_revoke(args) -> int:
    token_id = args.token_id.strip()
    if token_id.startswith(("tyk_", "tye_")) or len(token_id) > 40:
        # never echoed: it is probably a whole token, and now in the shell history
        raise SpecError("looks like a whole token, not its id", field="ID",
                        fix="give the 12-character id that `trainyard tokens list` shows; if that token was "
                            "typed here, revoke it now, as it is in your shell history")
    if not TOKEN_ID_RE.match(token_id):
        raise SpecError(f"must be the token's 12 hex-digit id, got {token_id!r}", field="ID", value=token_id,
                        fix="see the ids with `trainyard tokens list`")
    context.client(args).revoke_token(token_id)
    ui.stdout().print(f"Token {token_id} revoked.", highlight=False, markup=False)
    return EXIT_OK

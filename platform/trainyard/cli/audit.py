"""`trainyard audit`: the audit trail of state-changing requests (admin), thin over the SDK.

Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_OK, SpecError

__all__ = ["add_parser", "parse_since", "OUTCOMES"]

OUTCOMES = ("ok", "refused", "error")
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
MAX_BACK = timedelta(days=36500)
# a clock a little ahead of the server's is not a typo; an hour ahead is
FUTURE_SLACK = timedelta(minutes=5)
_RELATIVE = re.compile(r"^(\d{1,9})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SINCE_FIX = ("give an ISO 8601 time, e.g. 2026-12-05T09:30:00Z (UTC when no offset is given), "
              "or how long ago, e.g. 30m, 1h, 2d, 1w")


def add_parser(nouns) -> None:
    p = nouns.add_parser("audit", help="who changed what, when, from where (admin)", **fmt("""
        Show the audit trail, newest first: every state-changing request (allowed or refused),
        with its actor, action, object, project, HTTP status, outcome and source address.
        Filters combine. Admin only.
        """, """
        trainyard audit --since 1h
        trainyard audit --actor alice --outcome refused
        trainyard audit --project vision --action "POST /v1/jobs" --since 2026-12-05T09:00:00Z
        trainyard audit --object-id cnn-7k2m9x --json
        """))
    p.add_argument("--actor", metavar="USER", help="who made the request (a user name, or anonymous)")
    p.add_argument("--action", metavar="ACTION", help='the request, e.g. "POST /v1/jobs"')
    p.add_argument("--project", metavar="PROJECT", help="the project of the object")
    p.add_argument("--object-id", metavar="ID", help="the object's id or name")
    p.add_argument("--outcome", metavar="OUTCOME", help=f"one of {', '.join(OUTCOMES)}")
    p.add_argument("--since", metavar="TIME", help="ISO 8601 time, or how long ago: 30m, 1h, 2d, 1w")
    p.add_argument("--limit", type=int, default=50, metavar="N", help=f"at most N events (1 to {MAX_LIMIT}; default 50)")
    p.add_argument("--offset", type=int, default=0, metavar="N", help="skip the N newest events (paging)")
    p.add_argument("--json", action="store_true", help="print JSON ({events, total})")
    p.set_defaults(func=cmd_audit)


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """--since: an ISO 8601 time (UTC when it has no offset) or a duration back from now
    (`90s`, `30m`, `1h`, `2d`, `1w`). Returns an aware UTC datetime; SpecError otherwise."""
    now = now or datetime.now(timezone.utc)
    value = (text or "").strip()
    match = _RELATIVE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if amount == 0:
            raise SpecError(f"must be a time in the past, got {text!r}", field="--since", value=text, fix=_SINCE_FIX)
        try:
            delta = timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            delta = MAX_BACK * 2
        if delta > MAX_BACK:
            raise SpecError(f"goes back more than {MAX_BACK.days} days, got {text!r}", field="--since", value=text,
                            fix=_SINCE_FIX)
        return now - delta
    try:
        # fromisoformat of Python 3.10 does not read a trailing Z
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise SpecError(f"is neither an ISO 8601 time nor a duration, got {text[:80]!r}", field="--since",
                        value=text, fix=_SINCE_FIX) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    when = when.astimezone(timezone.utc)
    if when > now + FUTURE_SLACK:
        raise SpecError(f"is in the future, got {text!r}", field="--since", value=text, fix=_SINCE_FIX)
    return when


def _filters(args) -> dict:
    """The checked filters, as the SDK's audit() takes them."""
    filters: dict = {"limit": context.check_range(args.limit, flag="--limit", low=1, high=MAX_LIMIT),
                     "offset": context.check_range(args.offset, flag="--offset", low=0, high=MAX_OFFSET)}
    if args.actor is not None:
        filters["actor"] = context.check_name(args.actor, flag="--actor", example="--actor alice")
    if args.project is not None:
        filters["project"] = context.check_name(args.project, flag="--project", example="--project vision")
    if args.action is not None:
        filters["action"] = context.check_text(args.action, flag="--action", max_chars=200)
    if args.object_id is not None:
        filters["object_id"] = context.check_text(args.object_id, flag="--object-id", max_chars=200)
    if args.outcome is not None:
        filters["outcome"] = context.check_choice(args.outcome, flag="--outcome", choices=OUTCOMES)
    if args.since is not None:
        filters["since"] = parse_since(args.since)
    return filters


def _object(event: dict) -> str:
    kind, ident = event.get("object_type") or "", event.get("object_id") or ""
    return f"{kind} {ident}".strip()


def cmd_audit(args) -> int:
    filters = _filters(args)
    page = context.client(args).audit(**filters)
    events, total = page.get("events") or [], page.get("total")
    if args.json:
        ui.print_json(page)
        return EXIT_OK
    if not events:
        ui.stdout().print("No audit events match." if total is not None else "No audit events.")
        return EXIT_OK
    from rich.text import Text

    colour = {"refused": "yellow", "error": "red"}
    ui.table(None, ["time", "actor", "action", "object", "project", "status", "outcome", "from"],
             [(ui.fmt_time(e.get("at")), e.get("actor"), e.get("action"), _object(e), e.get("project"),
               e.get("status_code"), Text(str(e.get("outcome") or ""), style=colour.get(e.get("outcome"), "")),
               e.get("source_ip")) for e in events])
    shown_to = filters["offset"] + len(events)
    if total is not None and shown_to < total:
        ui.stdout().print(f"{len(events)} of {total} events, newest first; more: --offset {shown_to}",
                          highlight=False, markup=False)
    return EXIT_OK

"""`trainyard users create|list|remove`: people and service accounts (admin), thin over the SDK.

Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

from trainyard.cli import context
from trainyard.cli.context import fmt, ui
from trainyard.errors import EXIT_OK

__all__ = ["add_parser"]


def add_parser(nouns) -> None:
    users = nouns.add_parser("users", help="add, list and remove users and service accounts (admin)", **fmt("""
        Users are people; service accounts are CI jobs and pipelines. Both sign in with API
        tokens (`trainyard tokens create --user NAME`) and get roles in projects
        (`trainyard projects members add`). Admin only.
        """, """
        trainyard users create alice
        trainyard users create ci-bot --service
        trainyard users list
        trainyard users remove alice
        """))
    verbs = users.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("create", help="add a user or a service account", **fmt("""
        Add NAME (lower-case letters, digits and '-'). --service makes it a service account;
        --admin makes it a cluster-wide admin. Then give it a token and project roles.
        """, """
        trainyard users create alice
        trainyard users create ci-bot --service
        trainyard tokens create ci --user ci-bot
        """))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--service", action="store_true", help="a service account (CI, pipelines), not a person")
    p.add_argument("--admin", action="store_true", help="a cluster-wide admin (users, projects, clusters, audit)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("list", help="list users", **fmt("List users and service accounts.", """
        trainyard users list
        trainyard users list --json
        """))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("remove", help="disable a user and revoke their tokens", **fmt("""
        Disable NAME and revoke all their tokens. Their jobs and history stay (and keep their
        name). The user `admin` cannot be removed.
        """, "trainyard users remove alice"))
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_remove)


def _yes(value) -> str:
    return "yes" if value else "no"


def cmd_create(args) -> int:
    name = context.check_name(args.name, flag="NAME", example="alice")
    user = context.client(args).create_user(name, kind="service" if args.service else "user", admin=args.admin)
    if args.json:
        ui.print_json(user)
        return EXIT_OK
    what = "service account" if user.get("kind") == "service" else "user"
    ui.stdout().print(f"Created {what} {user.get('name', name)}{' (admin)' if user.get('admin') else ''}. "
                      f"Give it a token: trainyard tokens create NAME --user {name}", highlight=False, markup=False)
    return EXIT_OK


def cmd_list(args) -> int:
    users = context.client(args).list_users()
    if args.json:
        ui.print_json(users)
        return EXIT_OK
    if not users:
        ui.stdout().print("No users. Add one: trainyard users create NAME")
        return EXIT_OK
    ui.table(None, ["name", "kind", "admin", "disabled", "created"],
             [(u.get("name"), u.get("kind"), _yes(u.get("admin")), _yes(u.get("disabled")),
               ui.fmt_time(u.get("created_at"))) for u in users])
    return EXIT_OK


def cmd_remove(args) -> int:
    name = context.check_name(args.name, flag="NAME", example="alice")
    context.client(args).remove_user(name)
    ui.stdout().print(f"User {name} disabled; their tokens are revoked.", highlight=False, markup=False)
    return EXIT_OK

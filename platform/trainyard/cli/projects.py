"""`trainyard projects create|list|show`, `trainyard projects members add|remove` and
`trainyard projects quota set|show`.

Thin over the SDK. Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from trainyard.cli import context
from trainyard.cli.context import ROLES, fmt, ui
from trainyard.errors import EXIT_OK, SpecError

if TYPE_CHECKING:  # the SDK's answer type; the CLI reads its attributes
    from trainyard.apitypes import QuotaView

__all__ = ["add_parser"]

MAX_DESCRIPTION = 1000
RESOURCE_HELP = ("cpu", "gpu", "memory (bytes)", "accelerator_type:<T> (GPUs of type T)")
_CANON = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}
_ACCEL = re.compile(r"^accelerator_type:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PAIRS = 16


def add_parser(nouns) -> None:
    projects = nouns.add_parser("projects", help="projects and who may do what in them", **fmt("""
        Every job, sweep, model and endpoint belongs to a project (`project:` in its spec,
        `default` when omitted). Roles per project: viewer (read), member (submit, cancel
        own), maintainer (cancel any, promote, roll back, manage endpoints and members).
        Admins create projects and see all of them; others see the ones they are in.
        """, """
        trainyard projects create vision --description "image models"
        trainyard projects members add vision alice --role member
        trainyard projects show vision
        """))
    verbs = projects.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    p = verbs.add_parser("create", help="create a project (admin)", **fmt(
        "Create project NAME (lower-case letters, digits and '-'). Admin only.", """
        trainyard projects create vision
        trainyard projects create nlp --description "language models"
        """))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--description", default="", metavar="TEXT",
                   help=f"what the project is for (at most {MAX_DESCRIPTION} characters)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_create)

    p = verbs.add_parser("list", help="list the projects you can see, with your role", **fmt(
        "List the projects you can see, with your role in each (admin: all of them).", """
        trainyard projects list
        trainyard projects list --json
        """))
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("show", help="show a project and its members", **fmt(
        "Show a project: description, your role, and its members with their roles.",
        "trainyard projects show vision"))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    members = verbs.add_parser("members", help="add or remove members of a project", **fmt("""
        Give a user a role in a project, change it, or take it away. Maintainers of the
        project and admins may.
        """, """
        trainyard projects members add vision alice --role member
        trainyard projects members add vision bob --role maintainer
        trainyard projects members remove vision alice
        """))
    mverbs = members.add_subparsers(dest="member_verb", metavar="VERB")
    mverbs.required = True
    p = mverbs.add_parser("add", help="give a user a role in a project (or change it)", **fmt(
        f"Give USER the role ROLE ({', '.join(ROLES)}) in PROJECT; an existing member's role is replaced.", """
        trainyard projects members add vision alice --role member
        trainyard projects members add vision ci-bot --role viewer
        """))
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("user", metavar="USER")
    p.add_argument("--role", required=True, metavar="ROLE", help=f"one of {', '.join(ROLES)}")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_members_add)
    p = mverbs.add_parser("remove", help="take a user out of a project", **fmt(
        "Remove USER from PROJECT: they keep their jobs' history but lose access.",
        "trainyard projects members remove vision alice"))
    p.add_argument("project", metavar="PROJECT")
    p.add_argument("user", metavar="USER")
    p.set_defaults(func=cmd_members_remove)

    quota = verbs.add_parser("quota", help="a project's fair-share weight, quota and GPU-/CPU-hour budget", **fmt("""
        A project's share of the fleet. Nominal: what it is guaranteed; borrowing limit: how
        far beyond nominal it may go on idle capacity; lending limit: how much of its unused
        nominal others may borrow. Budget: GPU-hours and CPU-hours over a rolling window,
        counted from what its jobs really held. A job over the quota or the budget waits,
        with the reason (`trainyard jobs show`); other projects' jobs go on. Admins set them.
        """, """
        trainyard projects quota set vision --weight 2 --nominal cpu=32,gpu=8 --borrowing-limit gpu=4
        trainyard projects quota set vision --gpu-hours 500 --window-days 30
        trainyard projects quota show vision
        """))
    qverbs = quota.add_subparsers(dest="quota_verb", metavar="VERB")
    qverbs.required = True
    p = qverbs.add_parser("set", help="set a project's weight, quota and budget (admin)", **fmt(f"""
        Change the settings named by the flags; the others keep their values. Resources:
        {', '.join(RESOURCE_HELP)}; as NAME=AMOUNT pairs separated by commas. An empty value
        (--borrowing-limit "") unsets a map; --gpu-hours none unsets that budget.
        """, """
        trainyard projects quota set vision --nominal cpu=32,gpu=8,memory=256e9
        trainyard projects quota set vision --nominal accelerator_type:A100=8 --lending-limit gpu=2
        trainyard projects quota set vision --gpu-hours 500 --cpu-hours 20000 --window-days 30
        """))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--weight", metavar="W", help="fair-share weight, > 0 (default 1)")
    p.add_argument("--nominal", metavar="RES=N,...", help="guaranteed amounts, e.g. cpu=4,gpu=2")
    p.add_argument("--borrowing-limit", metavar="RES=N,...",
                   help="how much beyond nominal it may borrow (a resource left out: no limit)")
    p.add_argument("--lending-limit", metavar="RES=N,...",
                   help="how much of its unused nominal others may borrow (left out: all of it)")
    p.add_argument("--gpu-hours", metavar="N", help="GPU-hours per window, or 'none'")
    p.add_argument("--cpu-hours", metavar="N", help="CPU-hours per window, or 'none'")
    p.add_argument("--window-days", metavar="D", help="the budget's rolling window in days (default 30)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_quota_set)
    p = qverbs.add_parser("show", help="show a project's quota, budget, usage and burn rate", **fmt(
        "Nominal, borrowing and lending per resource; GPU-/CPU-hours used in the window, remaining, "
        "and the burn rate over the last day.", """
        trainyard projects quota show vision
        trainyard projects quota show vision --json
        """))
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_quota_show)


def _project(name: str, flag: str = "NAME") -> str:
    return context.check_name(name, flag=flag, example="vision")


def cmd_create(args) -> int:
    name = _project(args.name)
    description = context.check_text(args.description, flag="--description", max_chars=MAX_DESCRIPTION,
                                     allow_empty=True)
    project = context.client(args).create_project(name, description=description)
    if args.json:
        ui.print_json(project)
        return EXIT_OK
    ui.stdout().print(f"Created project {project.name}. Add people: "
                      f"trainyard projects members add {name} USER --role member", highlight=False, markup=False)
    return EXIT_OK


def cmd_list(args) -> int:
    projects = context.client(args).list_projects()
    if args.json:
        ui.print_json(projects)
        return EXIT_OK
    if not projects:
        ui.stdout().print("You are in no project yet: an admin or a project maintainer adds you.")
        return EXIT_OK
    ui.table(None, ["name", "your role", "description", "created"],
             [(p.name, p.role, p.description, ui.fmt_time(p.created_at))
              for p in projects])
    return EXIT_OK


def cmd_show(args) -> int:
    project = context.client(args).get_project(_project(args.name))
    if args.json:
        ui.print_json(project)
        return EXIT_OK
    out = ui.stdout()
    out.print(f"Project {project.name} (your role: {project.role}, created "
              f"{ui.fmt_time(project.created_at)})", highlight=False, markup=False)
    if project.description:
        out.print(f"  {project.description}", highlight=False, markup=False)
    members = project.members
    if members:
        rank = {role: i for i, role in enumerate(reversed(ROLES))}
        ui.table(None, ["user", "role"], [(m.user, m.role) for m in
                                           sorted(members, key=lambda m: (rank.get(m.role, 9), m.user))])
    else:
        out.print(f"No members. Add one: trainyard projects members add {project.name} USER --role member",
                  highlight=False, markup=False)
    _print_quota(project.name, project.quota)
    return EXIT_OK


def cmd_members_add(args) -> int:
    project = _project(args.project, "PROJECT")
    user = context.check_name(args.user, flag="USER", example="alice")
    role = context.check_choice(args.role, flag="--role", choices=ROLES)
    member = context.client(args).set_member(project, user, role=role)
    if args.json:
        ui.print_json(member)
        return EXIT_OK
    ui.stdout().print(f"{user} is now {member.role} in project {project}.", highlight=False, markup=False)
    return EXIT_OK


def cmd_members_remove(args) -> int:
    project = _project(args.project, "PROJECT")
    user = context.check_name(args.user, flag="USER", example="alice")
    context.client(args).remove_member(project, user)
    ui.stdout().print(f"{user} removed from project {project}.", highlight=False, markup=False)
    return EXIT_OK


def _number(text: str, *, flag: str, positive: bool = False, upper: float = 1e15) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > upper:
        raise SpecError(f"must be a number {'> 0' if positive else '>= 0'} and at most {upper:g}, got {text[:80]!r}",
                        field=flag, value=text, fix=f"e.g. {flag} {'2' if positive else '4'}")
    return value


def parse_amounts(text: str, *, flag: str) -> dict[str, float] | None:
    """'cpu=4,gpu=2,accelerator_type:A100=8' -> {"CPU": 4, "GPU": 2, ...}; '' -> None (unset)."""
    if not text.strip():
        return None
    out: dict[str, float] = {}
    parts = text.split(",")
    if len(parts) > MAX_PAIRS:
        raise SpecError(f"names {len(parts)} resources, at most {MAX_PAIRS}", field=flag, value=text[:80],
                        fix="name only the resources the quota limits")
    for part in parts:
        name, sep, amount = part.strip().partition("=")
        key = _CANON.get(name.strip().lower()) or (name.strip() if _ACCEL.match(name.strip()) else None)
        if not sep or key is None:
            raise SpecError(f"{part.strip()[:80]!r} is not RESOURCE=AMOUNT with a known resource", field=flag,
                            value=part[:80], fix=f"e.g. {flag} cpu=4,gpu=2 (resources: {', '.join(RESOURCE_HELP)})")
        if key in out:
            raise SpecError(f"names {key} twice", field=flag, value=text[:80], fix="name each resource once")
        out[key] = _number(amount.strip(), flag=f"{flag} {key}")
    return out


def _hours(text: str, *, flag: str) -> float | None:
    return None if text.strip().lower() == "none" else _number(text, flag=flag, upper=1e9)


def cmd_quota_set(args) -> int:
    name = _project(args.name)
    changes = {}
    if args.weight is not None:
        changes["weight"] = _number(args.weight, flag="--weight", positive=True, upper=1e6)
    for attr, flag in (("nominal", "--nominal"), ("borrowing_limit", "--borrowing-limit"),
                       ("lending_limit", "--lending-limit")):
        if getattr(args, attr) is not None:
            changes[attr] = parse_amounts(getattr(args, attr), flag=flag)
    for attr, flag in (("gpu_hours", "--gpu-hours"), ("cpu_hours", "--cpu-hours")):
        if getattr(args, attr) is not None:
            changes[attr] = _hours(getattr(args, attr), flag=flag)
    if args.window_days is not None:
        changes["window_days"] = _number(args.window_days, flag="--window-days", positive=True, upper=366)
    if not changes:
        raise SpecError("nothing to change", field="--weight", fix="give at least one of --weight, --nominal, "
                        "--borrowing-limit, --lending-limit, --gpu-hours, --cpu-hours, --window-days")
    client = context.client(args)
    current = client.get_quota(name)  # flags change what they name; the rest is kept
    budget = current.budget or {}
    settings = {"weight": current.weight, "nominal": current.nominal,
                "borrowing_limit": current.borrowing_limit, "lending_limit": current.lending_limit,
                "gpu_hours": budget.get("gpu_hours"), "cpu_hours": budget.get("cpu_hours"),
                "window_days": budget.get("window_days") or 30.0}
    settings.update(changes)
    answer = client.set_quota(name, **settings)
    if args.json:
        ui.print_json(answer)
        return EXIT_OK
    ui.stdout().print(f"Quota of project {name} set.", highlight=False, markup=False)
    _print_quota(name, answer)
    return EXIT_OK


def _fmt_amount(value) -> str:
    return "-" if value is None else f"{value:g}"


def _print_quota(name: str, quota: QuotaView) -> None:
    out = ui.stdout()
    out.print(f"Project {name}: fair-share weight {_fmt_amount(quota.weight)}", highlight=False, markup=False)
    nominal, borrow, lend = (quota.nominal or {}, quota.borrowing_limit or {}, quota.lending_limit or {})
    keys = sorted(set(nominal) | set(borrow) | set(lend))
    if keys:
        ui.table("quota", ["resource", "nominal", "borrowing limit", "lending limit"],
                 [(k, _fmt_amount(nominal.get(k)), _fmt_amount(borrow[k]) if k in borrow else "no limit",
                   _fmt_amount(lend[k]) if k in lend else "all of nominal") for k in keys])
    else:
        out.print("No quota: limited by capacity and fair share only.", highlight=False, markup=False)
    days = (quota.budget or {}).get("window_days") or 30
    rows = []
    for kind in ("gpu", "cpu"):
        use = quota.usage.get(kind)
        if use is None:
            rows.append((kind.upper() + "-hours", "-", "0.00", "no limit", "0.00", "-"))
            continue
        rows.append((kind.upper() + "-hours", _fmt_amount(use.budget_hours), f"{use.used_hours:.2f}",
                     "no limit" if use.remaining_hours is None else f"{use.remaining_hours:.2f}",
                     f"{use.burn_per_day:.2f}", ui.fmt_time(use.exhausted_at) if use.exhausted_at else "-"))
    ui.table(f"budget (rolling {days:g} days)", ["", "budget (h)", "used (h)", "remaining (h)", "burn (h/day)",
                                                 "runs out"], rows)


def cmd_quota_show(args) -> int:
    name = _project(args.name)
    quota = context.client(args).get_quota(name)
    if args.json:
        ui.print_json(quota)
        return EXIT_OK
    _print_quota(name, quota)
    return EXIT_OK

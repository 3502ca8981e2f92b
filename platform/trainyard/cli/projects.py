"""`trainyard projects create|list|show` and `trainyard projects members add|remove`.

Thin over the SDK. Registered by cli.main.build_parser via add_parser.
"""
from __future__ import annotations

from trainyard.cli import context
from trainyard.cli.context import ROLES, fmt, ui
from trainyard.errors import EXIT_OK

__all__ = ["add_parser"]

MAX_DESCRIPTION = 1000


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
    ui.stdout().print(f"Created project {project.get('name', name)}. Add people: "
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
             [(p.get("name"), p.get("role"), p.get("description"), ui.fmt_time(p.get("created_at")))
              for p in projects])
    return EXIT_OK


def cmd_show(args) -> int:
    project = context.client(args).get_project(_project(args.name))
    if args.json:
        ui.print_json(project)
        return EXIT_OK
    out = ui.stdout()
    out.print(f"Project {project.get('name')} (your role: {project.get('role')}, created "
              f"{ui.fmt_time(project.get('created_at'))})", highlight=False, markup=False)
    if project.get("description"):
        out.print(f"  {project['description']}", highlight=False, markup=False)
    members = project.get("members") or []
    if members:
        rank = {role: i for i, role in enumerate(reversed(ROLES))}
        ui.table(None, ["user", "role"], [(m.get("user"), m.get("role")) for m in
                                           sorted(members, key=lambda m: (rank.get(m.get("role"), 9), m.get("user")))])
    else:
        out.print(f"No members. Add one: trainyard projects members add {project.get('name')} USER --role member",
                  highlight=False, markup=False)
    return EXIT_OK


def cmd_members_add(args) -> int:
    project = _project(args.project, "PROJECT")
    user = context.check_name(args.user, flag="USER", example="alice")
    role = context.check_choice(args.role, flag="--role", choices=ROLES)
    member = context.client(args).set_member(project, user, role=role)
    if args.json:
        ui.print_json(member)
        return EXIT_OK
    ui.stdout().print(f"{user} is now {member.get('role', role)} in project {project}.", highlight=False, markup=False)
    return EXIT_OK


def cmd_members_remove(args) -> int:
    project = _project(args.project, "PROJECT")
    user = context.check_name(args.user, flag="USER", example="alice")
    context.client(args).remove_member(project, user)
    ui.stdout().print(f"{user} removed from project {project}.", highlight=False, markup=False)
    return EXIT_OK

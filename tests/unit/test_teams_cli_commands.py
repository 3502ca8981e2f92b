"""`trainyard login|context|whoami|tokens|users|projects|audit` against a fake SDK client.

Pure CLI logic: argument checks, output, exit codes, the token's one showing. The fake
answers in the shapes of the REST API contract; the e2e test (tests/e2e/test_teams_cli.py)
runs the same commands against a real server.
"""
from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timedelta, timezone

import pytest

from trainyard import apitypes as T
from trainyard import contexts, redact
from trainyard import errors as E
from trainyard.cli import audit as audit_cli
from trainyard.cli import main as cli
from trainyard.cli.tokens import token_state

from api_views import job_item, sweep_item

NEW_TOKEN = "tyk_00112233aabb_" + "S" * 43
LOGIN_TOKEN = "tyk_aabbccddeeff_" + "L" * 43
SERVER = "https://ty.example.com"


@pytest.fixture(autouse=True)
def _home(trainyard_home, monkeypatch):
    for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    redact.clear()
    yield trainyard_home


class FakeClient:
    """Records calls; answers like the server's REST API (the teams contract)."""

    url = SERVER
    context = "prod"

    def __init__(self):
        self.calls: list[tuple] = []
        self.fail: Exception | None = None
        self.me_answer = {"user": "alice", "kind": "user", "admin": False, "via": "token",
                          "projects": {"vision": "member", "nlp": "viewer"}}
        self.events = [
            {"id": 2, "at": "2026-12-05T10:01:00+00:00", "actor": "bob", "action": "POST /v1/jobs/cnn-1/cancel",
             "object_type": "job", "object_id": "cnn-1", "project": "vision", "status_code": 404,
             "outcome": "refused", "source_ip": "10.0.0.9"},
            {"id": 1, "at": "2026-12-05T10:00:00+00:00", "actor": "alice", "action": "POST /v1/jobs",
             "object_type": "job", "object_id": "cnn-1", "project": "vision", "status_code": 201,
             "outcome": "ok", "source_ip": "10.0.0.8"},
        ]

    def _call(self, *call):
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def me(self):
        self._call("me")
        return self.me_answer

    def create_user(self, name, *, kind="user", admin=False):
        self._call("create_user", name, kind, admin)
        return {"name": name, "kind": kind, "admin": admin, "disabled": False, "created_at": "2026-12-05T10:00:00"}

    def list_users(self):
        self._call("list_users")
        return [{"name": "admin", "kind": "user", "admin": True, "disabled": False, "created_at": "2026-12-01T00:00:00"},
                {"name": "ci-bot", "kind": "service", "admin": False, "disabled": True,
                 "created_at": "2026-12-02T00:00:00"}]

    def remove_user(self, name):
        self._call("remove_user", name)

    def create_token(self, name, *, expires_in_days=None, user=None):
        self._call("create_token", name, expires_in_days, user)
        return {"id": "00112233aabb", "name": name, "user": user or "alice", "token": NEW_TOKEN,
                "created_at": "2026-12-05T10:00:00+00:00", "expires_at": None}

    def list_tokens(self, *, user=None):
        self._call("list_tokens", user)
        return [{"id": "00112233aabb", "name": "laptop", "user": "alice", "created_at": "2026-12-05T10:00:00+00:00",
                 "expires_at": None, "last_used_at": "2026-12-05T11:00:00+00:00", "revoked_at": None},
                {"id": "445566778899", "name": "old", "user": "alice", "created_at": "2026-01-01T00:00:00+00:00",
                 "expires_at": "2026-02-01T00:00:00+00:00", "last_used_at": None, "revoked_at": None}]

    def revoke_token(self, token_id):
        self._call("revoke_token", token_id)

    def create_project(self, name, *, description=""):
        self._call("create_project", name, description)
        return T.ProjectSummary(name=name, description=description, created_at="2026-12-05T10:00:00", role="admin")

    def list_projects(self):
        self._call("list_projects")
        return [T.ProjectSummary(name="vision", description="image models [beta]", created_at="2026-12-05T10:00:00",
                                 role="member")]

    def get_project(self, name):
        self._call("get_project", name)
        no_limit = {"used_hours": 0.0, "budget_hours": None, "remaining_hours": None, "burn_per_day": 0.0}
        quota = {"weight": 1.0, "nominal": None, "borrowing_limit": None, "lending_limit": None, "budget": None,
                 "usage": {"gpu": no_limit, "cpu": no_limit}, "updated_at": None}
        return T.Project.model_validate(
            {"name": name, "description": "[/odd] text", "created_at": "2026-12-05T10:00:00", "role": "maintainer",
             "members": [{"user": "carol", "role": "viewer"}, {"user": "alice", "role": "maintainer"}],
             "quota": quota})

    def set_member(self, project, user, *, role):
        self._call("set_member", project, user, role)
        return T.Membership(project=project, user=user, role=role)

    def remove_member(self, project, user):
        self._call("remove_member", project, user)

    def list_jobs(self, **filters):
        self._call("list_jobs", filters)
        return [job_item("cnn-1", name="cnn", state="RUNNING", phase="RUNNING", project="vision", owner="alice",
                         workload="cnn")]

    def list_sweeps(self, **filters):
        self._call("list_sweeps", filters)
        return [sweep_item("sw-1", name="sw", state="RUNNING", phase="RUNNING", project="vision", owner="bob",
                           workload="cnn")]

    def audit(self, **filters):
        self._call("audit", filters)
        return {"events": self.events, "total": 7}


@pytest.fixture()
def fake(monkeypatch):
    client = FakeClient()
    client.factory_args = []

    def factory(args):
        client.factory_args.append((getattr(args, "server", None), getattr(args, "login_token", None)))
        return client

    # main hands `_client` to context.use_client_factory: every noun module gets the fake through it
    monkeypatch.setattr(cli, "_client", factory)
    return client


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ----------------------------------------------------------------------------- help and parsing


@pytest.mark.parametrize("argv", [
    ["login"], ["context"], ["context", "list"], ["context", "use"], ["context", "remove"], ["whoami"],
    ["tokens"], ["tokens", "create"], ["tokens", "list"], ["tokens", "revoke"],
    ["users"], ["users", "create"], ["users", "list"], ["users", "remove"],
    ["projects"], ["projects", "create"], ["projects", "list"], ["projects", "show"],
    ["projects", "members"], ["projects", "members", "add"], ["projects", "members", "remove"], ["audit"],
])
def test_every_teams_command_has_help_with_examples(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["login"], ["tokens", "create"], ["projects", "members", "add", "p", "u"], ["users", "create", "x", "--root"],
    ["audit", "--limit", "many"], ["tokens", "create", "x", "--expires-in-days", "1.5"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == E.EXIT_USAGE


# ----------------------------------------------------------------------------- login and contexts


def test_login_with_a_token_file_checks_then_saves_a_private_current_context(fake, tmp_path, capsys,
                                                                            trainyard_home):
    token_file = tmp_path / "t.token"
    token_file.write_text(LOGIN_TOKEN + "\n")
    code, out, err = run(["login", "--server", SERVER + "/", "--token-file", str(token_file), "--context", "prod"],
                         capsys)
    assert code == 0, err
    assert fake.factory_args == [(SERVER, LOGIN_TOKEN)] and fake.calls == [("me",)]
    assert "as alice" in out and "Context prod saved and now current" in out
    saved = contexts.current()
    assert (saved.name, saved.server, saved.token) == ("prod", SERVER, LOGIN_TOKEN)
    assert (trainyard_home / "contexts.json").stat().st_mode & 0o777 == 0o600
    assert LOGIN_TOKEN not in out + err


def test_login_reads_stdin_when_it_is_not_a_terminal_and_names_the_context_after_the_host(fake, monkeypatch,
                                                                                          capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO(LOGIN_TOKEN + "\n"))
    code, out, err = run(["login", "--server", "http://127.0.0.1:8080"], capsys)
    assert code == 0, err
    assert contexts.current().name == "127.0.0.1-8080" and contexts.current().token == LOGIN_TOKEN


def test_login_prompts_without_echo_on_a_terminal(fake, monkeypatch, capsys):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    prompts = []
    monkeypatch.setattr(sys, "stdin", Tty(""))
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or LOGIN_TOKEN)
    code, _, err = run(["login", "--server", SERVER], capsys)
    assert code == 0, err
    assert prompts == [f"Token for {SERVER}: "] and contexts.current().token == LOGIN_TOKEN


def test_a_refused_token_exits_5_and_saves_nothing(fake, tmp_path, capsys, trainyard_home):
    fake.fail = E.AuthError("the token was revoked", status=401)
    token_file = tmp_path / "t.token"
    token_file.write_text(LOGIN_TOKEN)
    code, out, err = run(["login", "--server", SERVER, "--token-file", str(token_file)], capsys)
    assert code == E.EXIT_AUTH
    assert "refused this token" in err and "revoked" in err and "nothing was saved" in err
    assert not (trainyard_home / "contexts.json").exists()
    assert LOGIN_TOKEN not in out + err


@pytest.mark.parametrize("argv,stdin,expected", [
    (["--server", "ty.example.com"], LOGIN_TOKEN, "--server: must be an http:// or https:// URL"),
    (["--server", SERVER, "--context", "has space"], LOGIN_TOKEN, "--context: must be 1 to 64"),
    (["--server", SERVER], "", "stdin: is empty"),
    (["--server", SERVER], "two\nlines-of-token", "stdin: holds spaces, line breaks"),
    (["--server", SERVER, "--token", LOGIN_TOKEN], "", "--token: a token is never taken as an argument"),
    (["--server", SERVER, "--token-file", LOGIN_TOKEN], "", "--token-file: looks like a token"),
    (["--server", SERVER, "--token-file", "/nonexistent/t.token"], "", "--token-file: no such file"),
    (["--server", SERVER, "--token-file", "/"], "", "--token-file: cannot read /"),
    (["--server", SERVER], "x" * 100_000, "stdin: is longer than"),
])
def test_login_input_errors_exit_2_before_any_request(fake, monkeypatch, capsys, argv, stdin, expected):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, out, err = run(["login", *argv], capsys)
    assert code == E.EXIT_USAGE, err
    assert expected in err and fake.calls == []
    assert LOGIN_TOKEN not in out + err and "lines-of-token" not in err


def test_context_list_use_remove(fake, capsys):
    contexts.save_context("a", server="https://a.example.com", token=LOGIN_TOKEN)
    contexts.save_context("b", server="https://b.example.com", token=NEW_TOKEN)
    code, out, _ = run(["context", "list"], capsys)
    assert code == 0 and "https://a.example.com" in out and LOGIN_TOKEN not in out
    current_row = [line for line in out.splitlines() if "https://b.example.com" in line][0]
    assert "*" in current_row
    code, out, _ = run(["context", "list", "--json"], capsys)
    data = json.loads(out)
    assert data["current"] == "b" and [c["name"] for c in data["contexts"]] == ["a", "b"]
    assert "token" not in out
    assert run(["context", "use", "a"], capsys)[0] == 0 and contexts.load().current == "a"
    code, out, _ = run(["context", "remove", "a"], capsys)
    assert code == 0 and "no context is current" in out and contexts.load().current is None
    code, _, err = run(["context", "use", "nope"], capsys)
    assert code == E.EXIT_NOT_FOUND and "context 'nope' does not exist" in err


def test_context_list_when_there_is_none(capsys):
    code, out, _ = run(["context", "list"], capsys)
    assert code == 0 and "trainyard login --server URL" in out


def test_whoami_shows_user_server_context_and_roles(fake, capsys):
    code, out, _ = run(["whoami"], capsys)
    assert code == 0
    assert "alice (user, signed in with token)" in out and f"{SERVER} (context prod)" in out
    assert "vision" in out and "member" in out and "viewer" in out
    code, out, _ = run(["whoami", "--json"], capsys)
    assert json.loads(out) == {**fake.me_answer, "server": SERVER, "context": "prod"}


def test_whoami_unauthorised_exits_5(fake, capsys):
    fake.fail = E.AuthError("this request needs a token", status=401)
    assert run(["whoami"], capsys)[0] == E.EXIT_AUTH


# ----------------------------------------------------------------------------- tokens


def test_tokens_create_prints_the_token_once_and_warns(fake, capsys):
    code, out, err = run(["tokens", "create", "laptop", "--expires-in-days", "30"], capsys)
    assert code == 0
    assert out == NEW_TOKEN + "\n"  # only the token on stdout: `> file` gets exactly it
    assert "will not be shown again" in err and NEW_TOKEN not in err
    assert fake.calls == [("create_token", "laptop", 30, None)]
    code, out, _ = run(["tokens", "create", "ci", "--user", "ci-bot", "--json"], capsys)
    assert json.loads(out)["token"] == NEW_TOKEN and fake.calls[-1] == ("create_token", "ci", None, "ci-bot")


@pytest.mark.parametrize("argv,expected", [
    (["tokens", "create", "x", "--expires-in-days", "0"], "--expires-in-days: must be between 1 and 3650"),
    (["tokens", "create", "x", "--expires-in-days", "3651"], "--expires-in-days: must be between 1 and 3650"),
    (["tokens", "create", "x" * 65], "NAME: is 65 characters long"),
    (["tokens", "create", "a\tb"], "NAME: holds a line break or a control character"),
    (["tokens", "create", "x", "--user", "Bob"], "--user: must be 1 to 63 lower-case"),
    (["tokens", "revoke", "xyz"], "ID: must be the token's 12 hex-digit id"),
    (["tokens", "revoke", NEW_TOKEN], "ID: looks like a whole token"),
])
def test_token_arguments_are_checked_before_any_request(fake, capsys, argv, expected):
    code, out, err = run(argv, capsys)
    assert code == E.EXIT_USAGE and expected in err and fake.calls == []
    assert NEW_TOKEN not in out + err


def test_tokens_list_shows_state_and_never_a_token(fake, capsys):
    code, out, _ = run(["tokens", "list"], capsys)
    assert code == 0
    rows = {tid: line for line in out.splitlines() for tid in ("00112233aabb", "445566778899") if tid in line}
    assert "active" in rows["00112233aabb"] and "expired" in rows["445566778899"]
    assert "never" in rows["445566778899"]
    assert run(["tokens", "list", "--user", "ci-bot", "--json"], capsys)[0] == 0
    assert fake.calls[-1] == ("list_tokens", "ci-bot")


def test_token_state():
    now = datetime(2026, 12, 5, tzinfo=timezone.utc)
    assert token_state({"revoked_at": "2026-12-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z"}, now=now) \
        == "revoked"
    assert token_state({"expires_at": "2026-12-04T00:00:00"}, now=now) == "expired"
    assert token_state({"expires_at": "2026-12-06T00:00:00Z"}, now=now) == "active"
    assert token_state({"expires_at": None}, now=now) == "active"


def test_tokens_revoke(fake, capsys):
    code, out, _ = run(["tokens", "revoke", "00112233aabb"], capsys)
    assert code == 0 and "revoked" in out and fake.calls == [("revoke_token", "00112233aabb")]
    fake.fail = E.NotFoundError("token", "00112233aabb")
    assert run(["tokens", "revoke", "00112233aabb"], capsys)[0] == E.EXIT_NOT_FOUND


# ----------------------------------------------------------------------------- users


def test_users_create_list_remove(fake, capsys):
    code, out, _ = run(["users", "create", "ci-bot", "--service"], capsys)
    assert code == 0 and "service account ci-bot" in out
    assert run(["users", "create", "root2", "--admin"], capsys)[0] == 0
    assert fake.calls[:2] == [("create_user", "ci-bot", "service", False), ("create_user", "root2", "user", True)]
    code, out, _ = run(["users", "list"], capsys)
    assert code == 0 and "ci-bot" in out and "service" in out
    code, out, _ = run(["users", "list", "--json"], capsys)
    assert [u["name"] for u in json.loads(out)] == ["admin", "ci-bot"]
    code, out, _ = run(["users", "remove", "ci-bot"], capsys)
    assert code == 0 and "revoked" in out and fake.calls[-1] == ("remove_user", "ci-bot")


@pytest.mark.parametrize("exc,code", [
    (E.AuthError("only an admin may add users", status=403), E.EXIT_AUTH),
    (E.ConflictError("user 'ci-bot' exists"), E.EXIT_CONFLICT),
    (E.NotFoundError("user", "ci-bot"), E.EXIT_NOT_FOUND),
])
def test_server_refusals_map_to_exit_codes(fake, capsys, exc, code):
    fake.fail = exc
    got, _, err = run(["users", "create", "ci-bot"], capsys)
    assert got == code and "Traceback" not in err


def test_bad_user_name_exits_2(fake, capsys):
    code, _, err = run(["users", "create", "Alice Smith"], capsys)
    assert code == E.EXIT_USAGE and "NAME: must be 1 to 63 lower-case" in err and "'Alice Smith'" in err
    assert run(["users", "create", "alice\n"], capsys)[0] == E.EXIT_USAGE  # `$` alone would let it through
    assert fake.calls == []


# ----------------------------------------------------------------------------- projects


def test_projects_create_list_show(fake, capsys):
    code, out, _ = run(["projects", "create", "vision", "--description", "image models"], capsys)
    assert code == 0 and "Created project vision" in out
    assert fake.calls[-1] == ("create_project", "vision", "image models")
    code, out, _ = run(["projects", "list"], capsys)
    assert code == 0 and "vision" in out and "image models [beta]" in out
    code, out, err = run(["projects", "show", "vision"], capsys)
    assert code == 0, err
    assert "[/odd] text" in out  # a server's text is shown as is, never read as markup
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if "alice" in x)) < lines.index(next(x for x in lines if "carol" in x))


def test_project_members_add_remove(fake, capsys):
    code, out, _ = run(["projects", "members", "add", "vision", "alice", "--role", "maintainer"], capsys)
    assert code == 0 and "alice is now maintainer in project vision" in out
    assert fake.calls[-1] == ("set_member", "vision", "alice", "maintainer")
    code, out, _ = run(["projects", "members", "remove", "vision", "alice"], capsys)
    assert code == 0 and fake.calls[-1] == ("remove_member", "vision", "alice")


@pytest.mark.parametrize("argv,expected", [
    (["projects", "members", "add", "vision", "alice", "--role", "mantainer"], "did you mean 'maintainer'"),
    (["projects", "members", "add", "vision", "alice", "--role", "admin"], "--role: must be one of viewer, member"),
    (["projects", "members", "add", "Vision", "alice", "--role", "member"], "PROJECT: must be 1 to 63"),
    (["projects", "create", "x", "--description", "d" * 1001], "--description: is 1001 characters long"),
    (["projects", "show", "../users"], "NAME: must be 1 to 63"),
])
def test_project_arguments_are_checked_before_any_request(fake, capsys, argv, expected):
    code, _, err = run(argv, capsys)
    assert code == E.EXIT_USAGE and expected in err and fake.calls == []


def test_a_project_you_cannot_see_is_not_found(fake, capsys):
    fake.fail = E.NotFoundError("project", "secret")
    code, _, err = run(["projects", "show", "secret"], capsys)
    assert code == E.EXIT_NOT_FOUND and "does not exist" in err


# ----------------------------------------------------------------------------- audit


NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("text,expected", [
    ("30m", NOW - timedelta(minutes=30)), ("1h", NOW - timedelta(hours=1)), ("2d", NOW - timedelta(days=2)),
    ("1w", NOW - timedelta(weeks=1)), ("90s", NOW - timedelta(seconds=90)),
    ("2026-12-05T09:30:00Z", datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)),
    ("2026-12-05T10:30:00+01:00", datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)),
    ("2026-12-05T09:30:00", datetime(2026, 12, 5, 9, 30, tzinfo=timezone.utc)),
    ("2026-12-05", datetime(2026, 12, 5, tzinfo=timezone.utc)),
])
def test_since_reads_iso_times_and_durations(text, expected):
    assert audit_cli.parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text,expected", [
    ("yesterday", "is neither an ISO 8601 time nor a duration"), ("1y", "is neither"), ("-1h", "is neither"),
    ("0m", "must be a time in the past"), ("99999999d", "goes back more than"),
    ("2027-01-01T00:00:00Z", "is in the future"), ("", "is neither"),
])
def test_bad_since_is_a_clear_error(text, expected):
    with pytest.raises(E.SpecError) as info:
        audit_cli.parse_since(text, now=NOW)
    assert expected in str(info.value) and info.value.field == "--since" and "30m, 1h, 2d" in str(info.value)


def test_audit_passes_checked_filters_and_prints_a_table(fake, capsys):
    code, out, err = run(["audit", "--actor", "bob", "--outcome", "refused", "--since", "1h", "--project", "vision",
                          "--action", "POST /v1/jobs", "--object-id", "cnn-1", "--limit", "2"], capsys)
    assert code == 0, err
    (_, filters), = fake.calls
    since = filters.pop("since")
    assert filters == {"actor": "bob", "outcome": "refused", "project": "vision", "action": "POST /v1/jobs",
                       "object_id": "cnn-1", "limit": 2, "offset": 0}
    assert abs((datetime.now(timezone.utc) - timedelta(hours=1) - since).total_seconds()) < 60
    assert "POST /v1/jobs/cnn-1/cancel" in out and "refused" in out and "10.0.0.9" in out
    assert "2 of 7 events" in out and "--offset 2" in out
    code, out, _ = run(["audit", "--json"], capsys)
    assert json.loads(out)["total"] == 7


@pytest.mark.parametrize("argv,expected", [
    (["--outcome", "denied"], "--outcome: must be one of ok, refused, error"),
    (["--limit", "0"], "--limit: must be between 1 and 1000"),
    (["--limit", "5000"], "--limit: must be between 1 and 1000"),
    (["--offset", "-1"], "--offset: must be between 0"),
    (["--since", "last tuesday"], "--since: is neither an ISO 8601 time"),
    (["--actor", "Bob"], "--actor: must be 1 to 63"),
])
def test_audit_arguments_are_checked_before_any_request(fake, capsys, argv, expected):
    code, _, err = run(["audit", *argv], capsys)
    assert code == E.EXIT_USAGE and expected in err and fake.calls == []


def test_audit_rows_with_markup_like_text_print_as_is(fake, capsys):
    fake.events = [{**fake.events[0], "action": "DELETE /v1/jobs/[/bold]", "object_id": "[red]x"}]
    code, out, err = run(["audit"], capsys)
    assert code == 0, err
    assert "[/bold]" in out and "[red]x" in out


def test_audit_for_a_non_admin_exits_5(fake, capsys):
    fake.fail = E.AuthError("only an admin may read the audit trail", status=403)
    code, _, err = run(["audit"], capsys)
    assert code == E.EXIT_AUTH and "admin" in err


# ----------------------------------------------------------------------------- lists by project


def test_jobs_and_sweeps_lists_filter_by_project_and_show_the_owner(fake, capsys):
    code, out, _ = run(["jobs", "list", "--project", "vision"], capsys)
    assert code == 0 and fake.calls[-1] == ("list_jobs", {"project": "vision"})
    row = next(line for line in out.splitlines() if "cnn-1" in line)
    assert "vision" in row and "alice" in row
    code, out, _ = run(["sweeps", "list", "--project", "vision"], capsys)
    assert code == 0 and fake.calls[-1] == ("list_sweeps", {"project": "vision"}) and "bob" in out
    assert run(["jobs", "list"], capsys)[0] == 0 and fake.calls[-1] == ("list_jobs", {})
    code, _, err = run(["jobs", "list", "--project", "Vision!"], capsys)
    assert code == E.EXIT_USAGE and "--project: must be 1 to 63" in err

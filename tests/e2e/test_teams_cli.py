"""Teams end to end, through the `trainyard` command as people would use it.

One real local stack (Ray head, MLflow, server). The admin works from the stack's home (its
admin token is the first admin's); alice and bob each have a home of their own and reach
the server only through `trainyard login`:

  1. the admin creates projects team-a and team-b, users alice and bob (alice a member of
     team-a, bob of team-b), and a token for each;
  2. alice logs in (token file), bob logs in (token on stdin); `whoami` shows each;
  3. alice submits a short job into team-a and it trains;
  4. bob cannot see it (`jobs show` exits 3), nor cancel it (exit 3), nor list it;
  5. the job's MLflow run carries trainyard.user=alice and trainyard.project=team-a;
  6. `trainyard audit` (admin) shows each step, the refused cancel included; bob may not read it.

Tests run in file order and share the stack; the last one stops it.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from test_cli_flow import SHORT_SPEC, Cli, _cli, _report

pytestmark = pytest.mark.e2e

TEAM_SPEC = SHORT_SPEC.replace("name: e2e-cnn", "name: team-cnn") + "project: team-a\n"


class UserCli(Cli):
    """A person on their own machine: their own TRAINYARD_HOME, optional stdin."""

    def __call__(self, *args: str, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([*_cli(), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              input=input if input is not None else "")
        self.outputs.append(proc.stdout + proc.stderr)
        return proc


class Team:
    def __init__(self, root: Path):
        self.admin = UserCli(root / "admin-home")
        self.alice = UserCli(root / "alice-home")
        self.bob = UserCli(root / "bob-home")
        self.root = root
        self.tokens: dict[str, str] = {}
        self.job_id: str | None = None

    @property
    def url(self) -> str:
        return json.loads((self.admin.home / "stack.json").read_text())["server"]["url"]

    @property
    def everyone(self) -> list[UserCli]:
        return [self.admin, self.alice, self.bob]


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, _report(proc)
    return proc


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    root = tmp_path_factory.mktemp("teams")
    t = Team(root)
    up = t.admin("up", "--num-cpus", "2")
    try:
        ok(up)
        yield t
    finally:
        t.admin("down")
        if sys.exc_info()[0] is None:
            shutil.rmtree(root, ignore_errors=True)


def test_admin_sets_up_projects_users_roles_and_tokens(team):
    admin = team.admin
    ok(admin("projects", "create", "team-a", "--description", "alice's team"))
    ok(admin("projects", "create", "team-b"))
    ok(admin("users", "create", "alice"))
    ok(admin("users", "create", "bob"))
    ok(admin("projects", "members", "add", "team-a", "alice", "--role", "member"))
    ok(admin("projects", "members", "add", "team-b", "bob", "--role", "member"))

    shown = ok(admin("projects", "show", "team-a", "--json"))
    assert {"user": "alice", "role": "member"} in json.loads(shown.stdout)["members"]
    users = {u["name"]: u for u in json.loads(ok(admin("users", "list", "--json")).stdout)}
    assert users["admin"]["admin"] is True and users["alice"]["kind"] == "user"

    for user in ("alice", "bob"):
        created = ok(admin("tokens", "create", f"{user}-laptop", "--user", user, "--expires-in-days", "7"))
        token = created.stdout.strip()
        assert re.fullmatch(r"tyk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}", token), "stdout holds exactly the token"
        assert "will not be shown again" in created.stderr and token not in created.stderr
        team.tokens[user] = token
        path = team.root / f"{user}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)

    listed = ok(admin("tokens", "list", "--user", "alice", "--json"))
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "alice-laptop" and row["user"] == "alice" and "token" not in row
    assert team.tokens["alice"] not in listed.stdout


def test_each_user_logs_in_to_a_context_of_their_own(team):
    assert team.tokens, "needs the tokens of the test above"
    alice = ok(team.alice("login", "--server", team.url, "--token-file", str(team.root / "alice.token"),
                          "--context", "team"))
    assert "as alice" in alice.stdout
    bob = ok(team.bob("login", "--server", team.url, "--context", "team", input=team.tokens["bob"] + "\n"))
    assert "as bob" in bob.stdout
    for person in (team.alice, team.bob):
        assert person.home.stat().st_mode & 0o777 == 0o700
        assert (person.home / "contexts.json").stat().st_mode & 0o777 == 0o600
        listed = ok(person("context", "list"))
        assert "team" in listed.stdout and team.url in listed.stdout

    who = json.loads(ok(team.alice("whoami", "--json")).stdout)
    assert (who["user"], who["admin"], who["projects"], who["context"]) == ("alice", False, {"team-a": "member"},
                                                                             "team")
    who = json.loads(ok(team.bob("whoami", "--json")).stdout)
    assert (who["user"], who["projects"]) == ("bob", {"team-b": "member"})
    assert "alice" in ok(team.alice("whoami")).stdout
    admin = json.loads(ok(team.admin("whoami", "--json")).stdout)
    assert admin["user"] == "admin" and admin["admin"] is True

    # a wrong token is refused and saves nothing
    refused = team.bob("login", "--server", team.url, "--context", "wrong", input="tyk_000000000000_" + "x" * 43)
    assert refused.returncode == 5, _report(refused)
    saved = json.loads(ok(team.bob("context", "list", "--json")).stdout)
    assert saved["current"] == "team" and [c["name"] for c in saved["contexts"]] == ["team"]


def test_a_member_submits_into_their_project(team):
    spec = team.root / "team.yaml"
    spec.write_text(TEAM_SPEC)
    proc = team.alice("jobs", "submit", str(spec), "--wait", timeout=900)
    assert proc.returncode == 0, _report(proc)
    team.job_id = re.search(r"Submitted job (\S+)", proc.stdout).group(1)
    job = json.loads(ok(team.alice("jobs", "show", team.job_id, "--json")).stdout)
    assert (job["state"], job["project"], job["owner"]) == ("SUCCEEDED", "team-a", "alice")


def test_a_user_of_another_project_can_neither_see_nor_cancel_it(team):
    assert team.job_id, "needs the job of the test above"
    shown = team.bob("jobs", "show", team.job_id)
    assert shown.returncode == 3, _report(shown)
    cancelled = team.bob("jobs", "cancel", team.job_id)
    assert cancelled.returncode == 3, _report(cancelled)
    assert team.job_id not in ok(team.bob("jobs", "list", "--json")).stdout
    assert team.job_id in ok(team.alice("jobs", "list", "--json")).stdout
    # nor may bob do what only admins do
    assert team.bob("users", "create", "mallory").returncode == 5
    assert team.bob("audit").returncode == 5


def test_the_mlflow_run_carries_the_user_and_the_project(team):
    assert team.job_id, "needs the job of the test above"
    job = json.loads(ok(team.alice("jobs", "show", team.job_id, "--json")).stdout)
    run_id = job.get("mlflow_run_id") or (job.get("result") or {}).get("mlflow_run_id")
    assert run_id, job
    mlflow_url = json.loads((team.admin.home / "stack.json").read_text())["mlflow"]["url"]
    password = (team.admin.home / "mlflow.password").read_text().strip()
    resp = httpx.get(f"{mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": run_id},
                     auth=("trainyard", password), timeout=30)
    assert resp.status_code == 200, resp.text
    tags = {t["key"]: t["value"] for t in resp.json()["run"]["data"].get("tags", [])}
    assert tags.get("trainyard.user") == "alice" and tags.get("trainyard.project") == "team-a", tags


def test_the_audit_trail_shows_each_step(team):
    assert team.job_id, "needs the job of the test above"
    events = json.loads(ok(team.admin("audit", "--limit", "500", "--json")).stdout)["events"]

    def find(**want) -> list[dict]:
        def matches(e: dict) -> bool:
            for key, value in want.items():
                if key == "action_prefix":
                    if not str(e.get("action", "")).startswith(value):
                        return False
                elif key == "action_has":
                    if value not in str(e.get("action", "")):
                        return False
                elif e.get(key) != value:
                    return False
            return True
        return [e for e in events if matches(e)]

    assert find(actor="admin", action="POST /v1/projects", outcome="ok"), events
    assert find(actor="admin", action="POST /v1/users", outcome="ok")
    assert find(actor="admin", action_prefix="PUT /v1/projects/", action_has="members", outcome="ok")
    assert len(find(actor="admin", action="POST /v1/tokens", outcome="ok")) >= 2
    submitted = find(actor="alice", action="POST /v1/jobs", outcome="ok")
    assert submitted and submitted[0]["project"] == "team-a"
    refused = find(actor="bob", action_prefix="POST /v1/jobs", action_has="cancel")
    assert refused and refused[0]["outcome"] == "refused" and refused[0]["status_code"] == 404
    assert find(actor="bob", action="POST /v1/users", outcome="refused")
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True), "newest first"

    table = ok(team.admin("audit", "--actor", "alice", "--since", "1h"))
    assert "POST /v1/jobs" in table.stdout and "team-a" in table.stdout and "bob" not in table.stdout
    refused_only = json.loads(ok(team.admin("audit", "--outcome", "refused", "--json")).stdout)["events"]
    assert refused_only and {e["outcome"] for e in refused_only} == {"refused"}
    assert team.admin("audit", "--since", "yesterday").returncode == 2


def test_a_revoked_token_is_refused(team):
    listed = json.loads(ok(team.admin("tokens", "list", "--user", "bob", "--json")).stdout)
    ok(team.admin("tokens", "revoke", listed[0]["id"]))
    who = team.bob("whoami")
    assert who.returncode == 5, _report(who)
    assert "revoked" in who.stderr


def test_no_output_ever_held_a_token_but_its_one_showing(team):
    secrets = [(team.admin.home / "admin.token").read_text().strip(), *team.tokens.values()]
    for person in team.everyone:
        for output in person.outputs:
            for secret in secrets:
                if secret in output:
                    # the admin's `tokens create` prints a new token exactly once, and nothing else does
                    assert person is team.admin and output.count(secret) == 1 and secret in team.tokens.values()
    shown = sum(output.count(t) for t in team.tokens.values() for output in team.admin.outputs)
    assert shown == len(team.tokens)


def test_down(team):
    proc = team.admin("down")
    assert proc.returncode == 0, _report(proc)
    # the users' homes hold their contexts; the stack's home never needed one
    assert not (team.admin.home / "contexts.json").exists()

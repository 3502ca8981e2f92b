"""The SDK's teams methods speak the REST API of the contract: method, path, body, query.

The transport is httpx's MockTransport (pure request building and answer handling); the
e2e test runs the same methods against the real server.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest

from trainyard import errors as E
from trainyard import redact
from trainyard.sdk import IDEMPOTENCY_HEADER, Client

TOKEN = "tyk_0123456789ab_" + "z" * 43


USER = {"name": "ci-bot", "kind": "service", "admin": False, "disabled": False, "created_at": None}
TOKEN_ROW = {"id": "00112233aabb", "name": "ci", "user": "ci-bot", "created_at": None, "expires_at": None}
PROJECT = {"name": "vision", "description": "", "created_at": None, "role": "admin"}
USAGE = {"used_hours": 0.0, "budget_hours": None, "remaining_hours": None, "burn_per_day": 0.0}
QUOTA = {"weight": 1.0, "nominal": None, "borrowing_limit": None, "lending_limit": None, "budget": None,
         "usage": {"gpu": USAGE, "cpu": USAGE}, "updated_at": None}


def _answer(request: httpx.Request) -> dict:
    """What the server answers (the API's models, complete) when a test sets nothing else."""
    method, path = request.method, request.url.path
    if path.startswith("/v1/projects/") and "/members/" in path:
        return {"project": "vision", "user": "alice", "role": "member"}
    if path.startswith("/v1/projects/"):
        return {**PROJECT, "members": [], "quota": QUOTA}
    return {("POST", "/v1/users"): USER, ("GET", "/v1/users"): {"users": []},
            ("POST", "/v1/tokens"): {**TOKEN_ROW, "token": "tyk_x"}, ("GET", "/v1/tokens"): {"tokens": []},
            ("POST", "/v1/projects"): PROJECT, ("GET", "/v1/audit"): {"events": [], "total": 0}}[(method, path)]


class Recorder:
    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.answers: dict[tuple[str, str], httpx.Response] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get((request.method, request.url.path))
        if answer is not None:
            return answer
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=_answer(request))

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, request: httpx.Request | None = None) -> dict:
        return json.loads((request or self.last).content)


@pytest.fixture()
def sdk(trainyard_home, monkeypatch):
    for var in ("TRAINYARD_URL", "TRAINYARD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    redact.clear()
    rec = Recorder()
    client = Client(url="http://ty.test", token=TOKEN, retries=0)
    client._http._transport = httpx.MockTransport(rec)
    return client, rec


def test_me_sends_the_token(sdk):
    client, rec = sdk
    rec.answers[("GET", "/v1/me")] = httpx.Response(200, json={"user": "alice", "kind": "user", "admin": False,
                                                               "via": "token", "projects": {"vision": "member"}})
    assert client.me().projects == {"vision": "member"}
    assert rec.last.headers["Authorization"] == f"Bearer {TOKEN}"


def test_users(sdk):
    client, rec = sdk
    client.create_user("ci-bot", kind="service")
    assert (rec.last.method, rec.last.url.path) == ("POST", "/v1/users")
    assert rec.body() == {"name": "ci-bot", "kind": "service", "admin": False}
    assert rec.last.headers.get(IDEMPOTENCY_HEADER)
    rec.answers[("GET", "/v1/users")] = httpx.Response(200, json={"users": [{**USER, "name": "admin"}]})
    assert [u.name for u in client.list_users()] == ["admin"]
    client.remove_user("ci-bot")
    assert (rec.last.method, rec.last.url.path) == ("DELETE", "/v1/users/ci-bot")


def test_tokens_are_created_without_an_idempotency_key(sdk):
    client, rec = sdk
    rec.answers[("POST", "/v1/tokens")] = httpx.Response(201, json={**TOKEN_ROW, "token": "tyk_x"})
    assert client.create_token("ci", expires_in_days=30, user="ci-bot").id == "00112233aabb"
    assert rec.body() == {"name": "ci", "expires_in_days": 30, "user": "ci-bot"}
    # a replayed answer would have to be stored with the token in it
    assert IDEMPOTENCY_HEADER not in rec.last.headers
    client.create_token("laptop")
    assert rec.body() == {"name": "laptop", "expires_in_days": None, "user": None}
    client.list_tokens(user="ci-bot")
    assert (rec.last.url.path, dict(rec.last.url.params)) == ("/v1/tokens", {"user": "ci-bot"})
    client.list_tokens()
    assert rec.last.url.query == b""
    client.revoke_token("00112233aabb")
    assert (rec.last.method, rec.last.url.path) == ("DELETE", "/v1/tokens/00112233aabb")


def test_projects_and_members(sdk):
    client, rec = sdk
    client.create_project("vision", description="image models")
    assert rec.body() == {"name": "vision", "description": "image models"}
    client.get_project("vision")
    assert rec.last.url.path == "/v1/projects/vision"
    client.set_member("vision", "alice", role="member")
    assert (rec.last.method, rec.last.url.path, rec.body()) == ("PUT", "/v1/projects/vision/members/alice",
                                                                 {"role": "member"})
    client.remove_member("vision", "alice")
    assert (rec.last.method, rec.last.url.path) == ("DELETE", "/v1/projects/vision/members/alice")


def test_a_name_is_one_path_segment(sdk):
    client, rec = sdk
    client.get_project("../users")
    assert rec.last.url.raw_path == b"/v1/projects/..%2Fusers"


def test_audit_filters(sdk):
    client, rec = sdk
    page = client.audit(actor="bob", outcome="refused", since=datetime(2026, 12, 5, 9, 30), limit=10)
    assert page.events == [] and page.total == 0
    assert rec.last.url.path == "/v1/audit"
    assert dict(rec.last.url.params) == {"actor": "bob", "outcome": "refused", "since": "2026-12-05T09:30:00Z",
                                         "limit": "10"}
    client.audit(since=datetime(2026, 12, 5, 10, 30, tzinfo=timezone.utc).astimezone())
    assert rec.last.url.params["since"] == "2026-12-05T10:30:00Z"
    with pytest.raises(E.SpecError) as info:
        client.audit(user="bob")
    assert info.value.field == "user" and "actor" in str(info.value)


@pytest.mark.parametrize("status,body,exc,exit_code", [
    (401, {"error": "unauthorized", "message": "the token has expired"}, E.AuthError, E.EXIT_AUTH),
    (403, {"error": "forbidden", "message": "needs admin"}, E.AuthError, E.EXIT_AUTH),
    (404, {"error": "not_found", "message": "project 'x' not found"}, E.NotFoundError, E.EXIT_NOT_FOUND),
    (409, {"error": "conflict", "message": "user 'x' exists"}, E.ConflictError, E.EXIT_CONFLICT),
])
def test_refusals_come_back_typed(sdk, status, body, exc, exit_code):
    client, rec = sdk
    rec.answers[("POST", "/v1/projects")] = httpx.Response(status, json=body)
    with pytest.raises(exc) as info:
        client.create_project("x")
    assert info.value.exit_code == exit_code and body["message"] in str(info.value)
    assert TOKEN not in str(info.value)

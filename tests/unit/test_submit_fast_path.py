"""The submission fast path (api.fastpath) answers as FastAPI's routing would.

Two apps on two stores, one built with the fast path and one without, get the same requests:
good ones, and ones that are wrong in each way the routes refuse. Their answers (status,
body, the headers that matter), the rows left behind and the audit trail must match, and the
fast app must have answered the common case itself (else this would compare the routed path
with itself)."""
from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from trainyard.api.app import create_app
from trainyard.api.fastpath import FastSubmit, SubmitRoute
from trainyard.store.models import AuditEventRow, JobRow

from test_api import TOKEN, FakeRay, spec, unit_settings
from test_sweep_api import sweep_spec

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _app(tmp_path, monkeypatch, *, fast: bool):
    home = tmp_path / ("fast" if fast else "routed")
    home.mkdir()
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    fakes: dict[str, FakeRay] = {}
    return create_app(unit_settings(home), client_factory=lambda n, u, t: fakes.setdefault(n, FakeRay(n, u, t)),
                      run_controller=False, fast_submit=fast)


@pytest.fixture()
def pair(tmp_path, monkeypatch):
    fast, routed = _app(tmp_path, monkeypatch, fast=True), _app(tmp_path, monkeypatch, fast=False)
    with TestClient(fast) as f, TestClient(routed) as r:
        for client in (f, r):
            client.app.state.ctx.controller.refresh_clusters()
            assert client.get("/v1/me", headers=AUTH).status_code == 200  # the token is cached now
        yield f, r


_ID = re.compile(r"\b[a-z0-9-]+-[0-9a-z]{6,}\b")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d)?")


def _same(value):
    """An answer with the parts that differ between two stores (ids, times) masked."""
    text = json.dumps(value, sort_keys=True)
    return json.loads(_TIME.sub("<time>", _ID.sub("<id>", text)))


def _both(pair, path: str, *, content: bytes | None = None, body=None, headers: dict | None = None):
    answers = []
    for client in pair:
        kwargs = {"content": content} if content is not None else {"json": body}
        resp = client.post(path, headers=headers if headers is not None else AUTH, **kwargs)
        answers.append(resp)
    fast, routed = answers
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert _same(fast.json()) == _same(routed.json())
    for header in ("content-type", "www-authenticate", "idempotent-replayed"):
        assert fast.headers.get(header) == routed.headers.get(header), header
    return fast


CASES = [
    # (name, path, body or raw bytes, headers, expected status, answered by the fast path)
    ("a job", "/v1/jobs", {"spec": spec(name="a")}, None, 201, True),
    ("a job as YAML text", "/v1/jobs", {"spec": "name: y\nworkload: cnn\nresources: {workers: 1}\n"}, None, 201,
     True),
    ("a sweep", "/v1/sweeps", {"spec": sweep_spec()}, None, 201, True),
    ("an unknown workload", "/v1/jobs", {"spec": spec(workload="cnnn")}, None, 422, True),
    ("an unknown field in the spec", "/v1/jobs", {"spec": spec(trainig={})}, None, 422, True),
    ("a cluster that is not registered", "/v1/jobs", {"spec": spec(resources={"workers": 1, "cluster": "x"})},
     None, 422, True),
    ("an unknown key in the body", "/v1/jobs", {"spec": spec(), "extra": 1}, None, 422, False),
    ("no spec", "/v1/jobs", {}, None, 422, False),
    ("a list for a body", "/v1/jobs", [1, 2], None, 422, False),
    ("a spec that is a number", "/v1/jobs", {"spec": 3}, None, 422, False),
    ("not JSON", "/v1/jobs", b"{not json", None, 422, False),
    ("not UTF-8", "/v1/jobs", b'{"spec": "\xff"}', None, 422, False),
    ("nested too deeply", "/v1/jobs", b'{"spec": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, 422, False),
    ("no token", "/v1/jobs", {"spec": spec()}, {}, 401, False),
    ("an unknown token", "/v1/jobs", {"spec": spec()}, {"Authorization": "Bearer tyk_nope_nope"}, 401, False),
    ("another scheme", "/v1/jobs", {"spec": spec()}, {"Authorization": f"Basic {TOKEN}"}, 401, False),
    ("a bad Idempotency-Key", "/v1/jobs", {"spec": spec()}, {**AUTH, "Idempotency-Key": "has space"}, 422, False),
    ("another content type", "/v1/jobs", json.dumps({"spec": spec()}).encode(),
     {**AUTH, "Content-Type": "text/plain"}, None, False),
]


@pytest.mark.parametrize("name,path,body,headers,status,fast", CASES, ids=[c[0] for c in CASES])
def test_each_request_gets_the_routed_answer_and_the_same_rows(pair, name, path, body, headers, status, fast):
    counts = pair[0].app.state.ctx.fast_submits
    before = dict(counts)
    if isinstance(body, bytes):
        hdrs = {"Content-Type": "application/json", **(AUTH if headers is None else headers)}
        resp = _both(pair, path, content=body, headers=hdrs)
    else:
        resp = _both(pair, path, body=body, headers=headers)
    if status is not None:
        assert resp.status_code == status, resp.text
    served = counts["served"] - before.get("served", 0)
    assert served == (1 if fast else 0), (name, dict(counts))
    rows = []
    for client in pair:
        with client.app.state.ctx.db.session() as s:
            jobs = s.scalars(select(JobRow)).all()
            audit = s.scalars(select(AuditEventRow)).all()
            rows.append(([(j.name, j.kind, j.phase, j.project) for j in jobs],
                         sorted((a.actor, a.action, a.object_type, a.project, a.status_code, a.outcome)
                                for a in audit)))
    assert rows[0] == rows[1]
    assert len(rows[0][0]) == (1 if resp.status_code == 201 else 0)  # a refusal leaves no row


def test_an_idempotent_retry_and_a_reused_key_answer_as_routed(pair):
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    first = _both(pair, "/v1/jobs", body={"spec": spec(name="once")}, headers=headers)
    again = _both(pair, "/v1/jobs", body={"spec": spec(name="once")}, headers=headers)
    assert first.status_code == again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    other = _both(pair, "/v1/jobs", body={"spec": spec(name="twice")}, headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    assert pair[0].app.state.ctx.fast_submits["served"] == 3
    for client in pair:
        with client.app.state.ctx.db.session() as s:
            assert [j.name for j in s.scalars(select(JobRow)).all()] == ["once"]


def test_an_uncached_token_is_looked_up_by_the_routed_path_and_then_served_fast(pair):
    fast = pair[0]
    ctx = fast.app.state.ctx
    ctx.auth.forget()
    assert fast.post("/v1/jobs", json={"spec": spec(name="a")}, headers=AUTH).status_code == 201
    assert dict(ctx.fast_submits) == {"handed_over": 1}
    assert fast.post("/v1/jobs", json={"spec": spec(name="b")}, headers=AUTH).status_code == 201
    assert dict(ctx.fast_submits) == {"handed_over": 1, "served": 1}


def test_an_error_after_the_commit_is_a_500_and_the_job_is_not_submitted_twice(pair, monkeypatch):
    import trainyard.api.routes.jobs as jobs_routes

    def failing(_model, _data):
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(jobs_routes, "validated", failing)
    fast = TestClient(pair[0].app, raise_server_exceptions=False)
    resp = fast.post("/v1/jobs", json={"spec": spec(name="late")}, headers=AUTH)
    assert resp.status_code == 500 and resp.json()["error"] == "internal"
    with pair[0].app.state.ctx.db.session() as s:
        assert [j.name for j in s.scalars(select(JobRow)).all()] == ["late"]
        audit = s.scalars(select(AuditEventRow).where(AuditEventRow.action == "POST /v1/jobs")).all()
        assert [(a.status_code, a.outcome) for a in audit] == [(500, "error")]


# ------------------------------------------------------------- the body, replayed when handed over


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int


def _asgi(routes_app, messages: list[dict], headers: list[tuple[bytes, bytes]]):
    import asyncio

    sent: list[dict] = []
    queue = list(messages)

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers, "state": {}}
    asyncio.run(routes_app(scope, receive, send))
    return sent


def _inner_echo():
    """The full stack's stand-in: answers with every body byte it received."""
    got: list[bytes] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            got.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"".join(got)})
    return app


@pytest.mark.parametrize("chunks,length", [
    ([b'{"x": 1, ', b'"y": 2}'], None),               # refused by the model, sent in two parts
    ([b"0123456789", b"0123456789", b"tail"], None),  # past the limit while read: the rest streams on
    ([b""], None),                                    # an empty body
    ([b"01234567890123456789"], "20"),                # past the limit by its Content-Length
])
def test_a_handed_over_request_gets_every_byte_of_its_body(chunks, length):
    async def endpoint(body, request, idempotency_key):  # never reached: each case is handed over
        raise AssertionError("the endpoint ran")

    fast = FastSubmit(_inner_echo(), routes={"/x": SubmitRoute(endpoint, _Body, max_body=12)})
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    headers = [(b"content-type", b"application/json"), (b"authorization", b"Bearer t")]
    if length is not None:
        headers.append((b"content-length", length.encode()))
    sent = _asgi(fast, messages, headers)
    assert sent[0]["status"] == 299 and sent[1]["body"] == b"".join(chunks)
    assert fast.counts == {"handed_over": 1}


def test_other_routes_and_methods_pass_through_untouched():
    async def endpoint(body, request, idempotency_key):
        raise AssertionError("the endpoint ran")

    inner = _inner_echo()
    fast = FastSubmit(inner, routes={"/x": SubmitRoute(endpoint, _Body, max_body=12)})
    sent = _asgi(fast, [{"type": "http.request", "body": b"abc", "more_body": False}], [])
    assert sent[1]["body"] == b"abc" and fast.counts == {"handed_over": 1}  # no JSON content type
    import asyncio

    seen = []

    async def other(scope, receive, send):
        seen.append(scope.get("path", scope["type"]))
    asyncio.run(FastSubmit(other, routes={})({"type": "http", "method": "POST", "path": "/y", "headers": []},
                                             None, None))
    asyncio.run(FastSubmit(other, routes={"/y": None})({"type": "lifespan"}, None, None))
    assert seen == ["/y", "lifespan"]


@pytest.mark.parametrize("length", ["9" * 5000, "9" * 30, "-1", " 5"])
def test_an_odd_content_length_gets_the_routed_answer_never_a_500(pair, length):
    body = json.dumps({"spec": spec(name="odd")}).encode()
    resp = _both(pair, "/v1/jobs", content=body,
                 headers={**AUTH, "Content-Type": "application/json", "Content-Length": length})
    assert resp.status_code in (201, 413), resp.text

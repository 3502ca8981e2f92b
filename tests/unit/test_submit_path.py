"""The submission's hot path: plain INSERTs, the audit row in the job's transaction, the cached
cluster list and cached tokens answered on the event loop."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from trainyard.errors import ConflictError
from trainyard.store import clusters as clusters_repo
from trainyard.store import jobs as jobs_repo
from trainyard.store import state as st
from trainyard.store import teams as teams_repo
from trainyard.store.models import AuditEventRow, JobEventRow, JobRow

from test_api import server, spec  # noqa: F401  (fixture)


def test_insert_job_writes_the_row_and_its_event_and_redraws_a_taken_id(server, monkeypatch):  # noqa: F811
    _, ctx, _ = server
    with ctx.db.session() as s:
        first = jobs_repo.insert_job(s, spec={"name": "a"}, name="a", project="p", priority=2, message="queued")
    draws = iter([first.id, first.id, "a-fresh"])  # taken twice, then free
    monkeypatch.setattr(jobs_repo, "new_job_id", lambda name: next(draws))
    with ctx.db.session() as s:
        again = jobs_repo.insert_job(s, spec={"name": "a"}, name="a", project="p", priority=0)
    assert again.id == "a-fresh"
    with ctx.db.session() as s:
        row = jobs_repo.get_job(s, first.id)
        assert (row.phase, row.message, row.priority, row.version) == (st.PENDING, "queued", 2, 1)
        events = s.scalars(select(JobEventRow).where(JobEventRow.job_id == first.id)).all()
        assert [(e.from_phase, e.to_phase) for e in events] == [(None, st.PENDING)]
        jobs_repo.transition(s, row, st.CANCELLED, reason="test")  # optimistic locking sees version 1
    monkeypatch.setattr(jobs_repo, "new_job_id", lambda name: first.id)
    with pytest.raises(ConflictError) as info, ctx.db.session() as s:
        jobs_repo.insert_job(s, spec={}, name="a", project="p", priority=0)
    assert info.value.field == "id"
    with ctx.db.session() as s:
        assert len(s.scalars(select(JobRow.id)).all()) == 2


def test_a_submission_has_one_audit_row_written_with_it_and_corrected_if_the_answer_fails(server, monkeypatch):  # noqa: F811
    client, ctx, _ = server
    job = client.post("/v1/jobs", json={"spec": spec(name="ok", project="new-proj")}).json()
    with ctx.db.session() as s:
        rows = s.scalars(select(AuditEventRow).where(AuditEventRow.action == "POST /v1/jobs")).all()
        assert [(r.object_id, r.status_code, r.outcome, r.project) for r in rows] == [(job["id"], 201, "ok", "new-proj")]
        assert teams_repo.find_project(s, "new-proj") is not None  # an admin's submission created it

    import trainyard.api.routes.jobs as jobs_routes

    def failing(_model, _data):
        raise RuntimeError("the answer could not be built")

    monkeypatch.setattr(jobs_routes, "validated", failing)  # after the commit: the job exists, the answer fails
    client_500 = type(client)(client.app, raise_server_exceptions=False, headers=dict(client.headers))
    assert client_500.post("/v1/jobs", json={"spec": spec(name="late")}).status_code == 500
    with ctx.db.session() as s:
        late = s.scalars(select(JobRow).where(JobRow.name == "late")).one()
        rows = s.scalars(select(AuditEventRow).where(AuditEventRow.object_id == late.id)).all()
        assert [(r.status_code, r.outcome) for r in rows] == [(500, "error")]


def test_the_capacity_check_reuses_the_cluster_list_until_clusters_change(server):  # noqa: F811
    client, ctx, _ = server
    rows = ctx.registry.cached_rows()
    assert ctx.registry.cached_rows() is rows  # within max_age_s: no read
    with ctx.db.session() as s:  # behind the server's back: seen after max_age_s
        clusters_repo.add_cluster(s, name="behind", dashboard_url="http://10.0.0.9:8265")
    assert [r.name for r in ctx.registry.cached_rows()] == [r.name for r in rows]
    assert "behind" in [r.name for r in ctx.registry.cached_rows(max_age_s=0)]
    resp = client.post("/v1/clusters", json={"name": "added", "address": "http://10.0.0.8:8265", "check": False})
    assert resp.status_code == 201, resp.text
    assert "added" in [r.name for r in ctx.registry.cached_rows()]  # through the API: at once
    assert client.delete("/v1/clusters/added").status_code == 204
    assert "added" not in [r.name for r in ctx.registry.cached_rows()]
    resp = client.post("/v1/jobs", json={"spec": spec(resources={"workers": 1, "cluster": "added"})})
    assert resp.status_code == 422 and "'added' is not registered" in resp.text


def test_a_cached_token_is_answered_without_the_store_until_its_use_is_due(server, monkeypatch):  # noqa: F811
    client, ctx, _ = server
    assert client.get("/v1/me").status_code == 200  # looked up and its use recorded
    reads: list[str] = []
    real = teams_repo.find_token_by_hash
    monkeypatch.setattr(teams_repo, "find_token_by_hash", lambda s, digest: reads.append(digest) or real(s, digest))
    assert client.get("/v1/me").json()["user"] == "admin" and reads == []
    ctx.auth.forget()  # a change through the server: the next request reads the store again
    assert client.get("/v1/me").json()["user"] == "admin" and len(reads) == 1
    revoked = client.post("/v1/tokens", json={"name": "short"}).json()
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {revoked['token']}"}).status_code == 200
    assert client.delete(f"/v1/tokens/{revoked['id']}").status_code in (200, 204)
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {revoked['token']}"}).status_code == 401


def test_principal_of_answers_401_where_no_router_dependency_found_a_caller():
    from starlette.requests import Request

    from trainyard.api.auth import principal_of
    from trainyard.errors import AuthError

    request = Request({"type": "http", "method": "POST", "path": "/v1/jobs", "headers": [], "state": {}})
    with pytest.raises(AuthError) as info:
        principal_of(request)
    assert info.value.status == 401


def test_a_twin_that_recorded_the_key_first_is_answered_with_its_answer_and_nothing_is_created(server, monkeypatch):  # noqa: F811
    client, ctx, _ = server
    body = {"spec": spec(name="twin")}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "twin-1"})
    assert first.status_code == 201
    from trainyard.api.idempotency import Idempotency

    real = Idempotency.replay
    calls = []

    def late(self, c):  # the first look misses, as if the twin had not committed yet
        calls.append(1)
        return None if len(calls) == 1 else real(self, c)

    monkeypatch.setattr(Idempotency, "replay", late)
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "twin-1"})
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true" and len(calls) == 2
    with ctx.db.session() as s:
        assert len(s.scalars(select(JobRow.id).where(JobRow.name == "twin")).all()) == 1

"""The store on a real PostgreSQL 15 (the production backend): migrations, JSON, time zones,
optimistic locking. Skipped where PostgreSQL or psycopg is not installed."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest
from sqlalchemy.orm.exc import StaleDataError

from trainyard.local.processes import free_port
from trainyard.store import Database, clusters, jobs, state as st
from trainyard.store.db import HEAD_REVISION

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg")
    if not shutil.which("pg_createcluster"):
        pytest.skip("PostgreSQL server tools (pg_createcluster) are not installed")
    port = free_port()
    name = f"trainyard-test-{port}"
    data = tempfile.mkdtemp(prefix="typg-", dir="/tmp")
    if _is_root():  # initdb refuses to run as root; pg_createcluster runs it as 'postgres'
        shutil.chown(data, "postgres")
    try:
        subprocess.run(["pg_createcluster", "15", name, "-p", str(port), "-d", f"{data}/data", "--",
                        "--auth-local=trust", "--auth-host=trust"], check=True, capture_output=True)
        subprocess.run(["pg_ctlcluster", "15", name, "start"], check=True, capture_output=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"cannot start a PostgreSQL cluster here: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql&port={port}"
    finally:
        subprocess.run(["pg_dropcluster", "--stop", "15", name], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def test_store_on_postgres(pg_url):
    db = Database(pg_url)
    try:
        db.upgrade()
        assert db.current_revision() == HEAD_REVISION
        db.upgrade()
        with db.session() as s:
            clusters.add_cluster(s, name="local", dashboard_url="http://127.0.0.1:8265")
            clusters.record_resources(s, "local", {"nodes": [{"id": "n", "total": {"CPU": 2.0}, "free": {"CPU": 2.0}}]})
            job_id = jobs.create_job(s, spec={"resources": {"workers": 2}}, name="pg", project="p", priority=1).id
        with db.session() as s:
            job = jobs.get_job(s, job_id)
            jobs.transition(s, job, st.DISPATCHING, reason="x", attempt=1, cluster="local",
                            submission_id=jobs.submission_id_for(job_id, 1))
            jobs.transition(s, job, st.RUNNING, reason="y")
            jobs.transition(s, job, st.SUCCEEDED, reason="z", result={"metrics": {"acc": 0.5}})
        with db.session() as s:
            job = jobs.get_job(s, job_id)
            assert job.result == {"metrics": {"acc": 0.5}} and job.created_at.tzinfo is not None
            assert [e.to_phase for e in jobs.list_events(s, job_id)] == ["PENDING", "DISPATCHING", "RUNNING",
                                                                        "SUCCEEDED"]
            assert clusters.get_cluster(s, "local").last_resources["nodes"][0]["total"] == {"CPU": 2.0}
        # optimistic locking holds on PostgreSQL too
        with db.session() as s:
            other = jobs.create_job(s, spec={}, name="b", project="p", priority=0).id
        s1, s2 = db._sessions(), db._sessions()
        try:
            a, b = jobs.get_job(s1, other), jobs.get_job(s2, other)
            jobs.transition(s1, a, st.CANCELLED, reason="user")
            s1.commit()
            with pytest.raises(StaleDataError):
                jobs.transition(s2, b, st.DISPATCHING, reason="stale", attempt=1)
                s2.commit()
        finally:
            s1.close()
            s2.rollback()
            s2.close()
    finally:
        db.dispose()


def test_the_submission_inserts_on_postgres(pg_url, monkeypatch):
    """insert_job's INSERT .. ON CONFLICT DO NOTHING and its rowcount, audit rows' ids, and
    ensure_project_exists, on the production backend."""
    from trainyard.errors import ConflictError
    from trainyard.store import teams

    db = Database(pg_url)
    try:
        db.upgrade()
        with db.session() as s:
            first = jobs.insert_job(s, spec={"name": "ins"}, name="ins", project="p", priority=0, message="queued")
            teams.ensure_project_exists(s, "ins-proj")
            teams.ensure_project_exists(s, "ins-proj")
            event = teams.record_audit(s, actor="admin", action="POST /v1/jobs", object_type="job",
                                       object_id=first.id, project="p", status_code=201, outcome="ok")
            teams.correct_audit(s, event, status_code=500, outcome="error")
        draws = iter([first.id, "ins-fresh"])
        monkeypatch.setattr(jobs, "new_job_id", lambda name: next(draws))
        with db.session() as s:
            assert jobs.insert_job(s, spec={}, name="ins", project="p", priority=0).id == "ins-fresh"
        monkeypatch.setattr(jobs, "new_job_id", lambda name: first.id)
        with pytest.raises(ConflictError), db.session() as s:
            jobs.insert_job(s, spec={}, name="ins", project="p", priority=0)
        with db.session() as s:
            assert jobs.get_job(s, first.id).message == "queued"
            assert [e.to_phase for e in jobs.list_events(s, "ins-fresh")] == ["PENDING"]
            assert teams.find_project(s, "ins-proj") is not None
            assert teams.list_audit(s, object_id=first.id)[0][0].status_code == 500
    finally:
        db.dispose()


def test_a_group_commit_batch_on_postgres(pg_url):
    """The committer's multi-row INSERTs (store.db.InsertBatch) on the production backend:
    jobs, their first events and audit rows of a batch in one statement per table, each audit
    row's id back to its own write, and a batch whose INSERT fails written again one by one."""
    import asyncio

    from trainyard.controller.group_commit import GroupCommitter
    from trainyard.store import teams

    db = Database(pg_url)
    committer = GroupCommitter(db)
    try:
        db.upgrade()
        with db.session() as s:
            jobs.create_job(s, spec={}, name="gc", project="p", priority=0, job_id="gc-taken")
        draws = iter(["gc-taken"])
        real = jobs.new_job_id

        def submission(i):
            def work(s):
                name = f"gc{i}"
                row = jobs.insert_job(s, spec={"i": i}, name=name, project="p", priority=0, message="queued")
                audit = teams.record_audit(s, actor="u", action="POST /v1/jobs", object_type="job",
                                           object_id=row.id, project="p", status_code=201, outcome="ok")
                return row.id, audit
            return work

        async def batch():
            return await asyncio.gather(*(committer.run_async(submission(i)) for i in range(20)))

        first = asyncio.run(batch())
        jobs.new_job_id = lambda name, **kw: (next(draws, None) if name == "gc3" else None) or real(name, **kw)
        try:
            second = asyncio.run(batch())  # gc3's first draw is taken: its batch is written again alone
        finally:
            jobs.new_job_id = real
        with db.session() as s:
            for job_id, audit_id in first + second:
                assert teams.list_audit(s, object_id=job_id)[0][0].id == int(audit_id)
                assert [e.to_phase for e in jobs.list_events(s, job_id)] == ["PENDING"]
            assert len({job_id for job_id, _ in first + second}) == 40
            assert jobs.get_job(s, "gc-taken").name == "gc"
    finally:
        committer.close()
        db.dispose()

"""The SQL store: migrations, repository functions, events, optimistic locking."""
import pytest
from sqlalchemy import inspect
from sqlalchemy.orm.exc import StaleDataError

from trainyard.errors import ConflictError, NotFoundError
from trainyard.store import Database, clusters, jobs, state as st
from trainyard.store.db import HEAD_REVISION, MIGRATIONS_DIR


@pytest.fixture()
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'ty.db'}")
    database.upgrade()
    yield database
    database.dispose()


def test_upgrade_creates_tables_and_is_idempotent(db):
    assert db.current_revision() == HEAD_REVISION
    names = set(inspect(db.engine).get_table_names())
    assert {"jobs", "job_events", "clusters", "alembic_version"} <= names
    db.upgrade()  # no-op
    assert db.current_revision() == HEAD_REVISION


def test_head_revision_matches_the_newest_migration():
    revisions = sorted(p.name.split("_")[0] for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert revisions[-1] == HEAD_REVISION


def test_migration_matches_the_models(db):
    from trainyard.store.models import Base

    insp = inspect(db.engine)
    for table in Base.metadata.sorted_tables:
        cols = {c["name"] for c in insp.get_columns(table.name)}
        assert cols == {c.name for c in table.columns}, table.name


def test_create_transition_and_events(db):
    with db.session() as s:
        job = jobs.create_job(s, spec={"name": "a"}, name="a", project="p", priority=3)
        job_id = job.id
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        jobs.transition(s, job, st.DISPATCHING, reason="admitted", attempt=1, cluster="local",
                        submission_id=jobs.submission_id_for(job_id, 1))
        jobs.transition(s, job, st.SUBMITTED, reason="accepted")
        jobs.transition(s, job, st.RUNNING, reason="driver started")
        jobs.transition(s, job, st.SUCCEEDED, reason="done", result={"metrics": {"acc": 0.9}})
    with db.session() as s:
        job = jobs.get_job(s, job_id)
        assert job.phase == st.SUCCEEDED and job.started_at and job.ended_at and job.attempt == 1
        assert job.result == {"metrics": {"acc": 0.9}}
        assert job.submission_id == f"trainyard-{job_id}-1"
        events = [(e.from_phase, e.to_phase) for e in jobs.list_events(s, job_id)]
    assert events == [(None, "PENDING"), ("PENDING", "DISPATCHING"), ("DISPATCHING", "SUBMITTED"),
                      ("SUBMITTED", "RUNNING"), ("RUNNING", "SUCCEEDED")]


def test_illegal_transition_writes_nothing(db):
    with db.session() as s:
        job_id = jobs.create_job(s, spec={}, name="a", project="p", priority=0).id
    with pytest.raises(ConflictError):
        with db.session() as s:
            jobs.transition(s, jobs.get_job(s, job_id), st.SUCCEEDED, reason="nope")
    with db.session() as s:
        assert jobs.get_job(s, job_id).phase == st.PENDING
        assert len(jobs.list_events(s, job_id)) == 1


def test_list_filters_and_queues(db):
    with db.session() as s:
        a = jobs.create_job(s, spec={}, name="a", project="p1", priority=0)
        b = jobs.create_job(s, spec={}, name="b", project="p2", priority=0)
        jobs.transition(s, b, st.DISPATCHING, reason="x", attempt=1, cluster="c", submission_id="s")
    with db.session() as s:
        assert [j.id for j in jobs.list_jobs(s, project="p1")] == [a.id]
        assert [j.id for j in jobs.list_jobs(s, phases=st.phases_for_public("PENDING"))] == [b.id, a.id]
        assert [j.id for j in jobs.pending_jobs(s)] == [a.id]
        assert [j.id for j in jobs.active_jobs(s)] == [b.id]


def test_not_found_suggests_close_ids(db):
    with db.session() as s:
        job_id = jobs.create_job(s, spec={}, name="mnist", project="p", priority=0, job_id="mnist-abc123").id
    with db.session() as s, pytest.raises(NotFoundError, match="did you mean 'mnist-abc123'"):
        jobs.get_job(s, "mnist-abc124")
    assert job_id


def test_concurrent_writers_cannot_undo_each_other(db):
    with db.session() as s:
        job_id = jobs.create_job(s, spec={}, name="a", project="p", priority=0).id
    s1, s2 = db._sessions(), db._sessions()
    try:
        j1, j2 = jobs.get_job(s1, job_id), jobs.get_job(s2, job_id)
        jobs.transition(s1, j1, st.CANCELLED, reason="user")
        s1.commit()
        with pytest.raises(StaleDataError):
            jobs.transition(s2, j2, st.DISPATCHING, reason="controller (stale view)", attempt=1)
            s2.commit()
    finally:
        s1.close()
        s2.rollback()
        s2.close()
    with db.session() as s:
        assert jobs.get_job(s, job_id).phase == st.CANCELLED


def test_clusters_repository(db):
    with db.session() as s:
        clusters.add_cluster(s, name="local", dashboard_url="http://127.0.0.1:8265/", token_file="/x")
    with db.session() as s, pytest.raises(ConflictError):
        clusters.add_cluster(s, name="local", dashboard_url="http://x")
    with db.session() as s:
        clusters.record_resources(s, "local", {"nodes": [{"id": "n", "total": {"CPU": 2}, "free": {"CPU": 2}}]})
        row = clusters.upsert_cluster(s, name="local", dashboard_url="http://127.0.0.1:9999", token_file="/x")
        assert row.last_resources is None  # another address: forget the old cluster's nodes
        assert row.dashboard_url == "http://127.0.0.1:9999"
    with db.session() as s:
        clusters.delete_cluster(s, "local")
    with db.session() as s, pytest.raises(NotFoundError):
        clusters.get_cluster(s, "local")

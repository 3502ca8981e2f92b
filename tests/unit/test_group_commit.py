"""Group commit: concurrent writes share a transaction; a bad write fails alone."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from trainyard.controller.group_commit import GroupCommitter
from trainyard.errors import ConflictError
from trainyard.store import Database
from trainyard.store import jobs as jobs_repo
from trainyard.store.models import JobRow


@pytest.fixture()
def db(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'gc.db'}")
    db.upgrade()
    yield db
    db.dispose()


def _create(job_id):
    def work(s):
        jobs_repo.create_job(s, spec={"name": job_id}, name=job_id, project="p", priority=0, job_id=job_id)
        return job_id
    return work


def test_concurrent_writes_share_commits_and_each_gets_its_own_result(db):
    committer = GroupCommitter(db)
    gate = threading.Barrier(16)
    results: dict[int, str] = {}

    def client(i):
        gate.wait()
        for k in range(10):
            results[i * 10 + k] = committer.run(_create(f"j-{i}-{k}"))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i * 10 + k: f"j-{i}-{k}" for i in range(16) for k in range(10)}
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(JobRow)).scalar() == 160
    assert committer.writes == 160 and committer.commits < 160


def test_a_failing_write_fails_alone_and_commits_nothing_of_its_own(db):
    committer = GroupCommitter(db)
    committer.run(_create("taken"))
    slots = [_create("a"), _create("taken"), _create("b")]  # a duplicate key in the middle
    with committer._cond:  # queue them as one batch, as concurrent callers would
        committer._leading = True
    out: dict[str, object] = {}

    def call(name, work):
        try:
            out[name] = committer.run(work)
        except Exception as exc:  # noqa: BLE001
            out[name] = exc

    threads = [threading.Thread(target=call, args=(n, w)) for n, w in zip("xyz", slots)]
    for t in threads:
        t.start()
    while len(committer._queue) < 3:
        time.sleep(0.001)
    with committer._cond:  # hand the lead to the first of them
        committer._queue[0].lead = True
        committer._cond.notify_all()
    for t in threads:
        t.join()
    # a taken id is a conflict the caller can act on, never a raw database error
    assert out["x"] == "a" and out["z"] == "b" and isinstance(out["y"], ConflictError), out["y"]
    with db.session() as s:
        assert sorted(s.scalars(select(JobRow.id))) == ["a", "b", "taken"]


def test_awaited_writes_share_commits_with_waiting_threads_and_a_bad_one_fails_alone(db):
    import asyncio

    committer = GroupCommitter(db)

    def bad(s):
        raise ConflictError("refused", field="x")

    async def main():
        threads = [asyncio.to_thread(committer.run, _create(f"t-{i}")) for i in range(8)]
        awaited = [committer.run_async(_create(f"a-{i}")) for i in range(40)]
        return await asyncio.gather(*threads, *awaited, committer.run_async(bad), return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        committer.close()
    assert results[:48] == [f"t-{i}" for i in range(8)] + [f"a-{i}" for i in range(40)]
    assert isinstance(results[48], ConflictError)
    with db.session() as s:
        ids = set(s.scalars(select(JobRow.id)).all())
    # every answered write is committed: each result came back after its batch's commit
    assert ids == {f"t-{i}" for i in range(8)} | {f"a-{i}" for i in range(40)}
    assert committer.writes == 48  # (how many commits depends on how the batches fell)


def test_a_batch_writes_its_rows_as_one_insert_per_table_and_each_caller_gets_its_audit_id(db):
    """The committer's InsertBatch: jobs, their first events and audit rows of many writes go
    as one multi-row INSERT per table, and each audit row's id comes back to its own write."""
    import asyncio

    from sqlalchemy import event

    from trainyard.store import teams
    from trainyard.store.models import AuditEventRow, JobEventRow

    committer = GroupCommitter(db)
    inserts: list[tuple[str, bool]] = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append((statement.split()[2], executemany or statement.count("(?") > 2))

    def submission(i):
        def work(s):
            row = jobs_repo.insert_job(s, spec={"i": i}, name=f"b-{i}", project="p", priority=0, message="queued")
            audit = teams.record_audit(s, actor="u", action="POST /v1/jobs", object_type="job", object_id=row.id,
                                       project="p", status_code=201, outcome="ok", source_ip=None)
            return row.id, audit
        return work

    async def main():
        return await asyncio.gather(*(committer.run_async(submission(i)) for i in range(30)))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        results = asyncio.run(main())
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
        committer.close()
    with db.session() as s:
        audit = {row.id: row.object_id for row in s.scalars(select(AuditEventRow))}
        events = {row.job_id: row.to_phase for row in s.scalars(select(JobEventRow))}
        assert s.execute(select(func.count()).select_from(JobRow)).scalar() == 30
    for job_id, audit_id in results:
        assert audit[int(audit_id)] == job_id  # the id of this write's own audit row
        assert events[job_id] == "PENDING"
    assert len(audit) == 30
    # one statement per table and batch: far fewer INSERTs than rows (3 per write)
    assert committer.commits < 30 and len(inserts) == 3 * committer.commits, inserts


def test_a_batch_whose_insert_fails_is_written_again_one_write_at_a_time(db, monkeypatch):
    """A row of the batch's multi-row INSERT is refused (a job id taken, against all odds): the
    whole batch rolls back, and each write runs again alone, where a taken id is drawn again."""
    committer = GroupCommitter(db)
    committer.run(_create("x-taken"))
    draws = iter(["x-taken"])  # the second write's first draw; every other draw is fresh
    real = jobs_repo.new_job_id

    def draw(name, **kw):
        if name == "x1":
            return next(draws, None) or real(name, **kw)
        return real(name, **kw)

    monkeypatch.setattr(jobs_repo, "new_job_id", draw)

    def submission(i):
        def work(s):
            return jobs_repo.insert_job(s, spec={}, name=f"x{i}", project="p", priority=0).id
        return work

    import asyncio

    async def main():
        return await asyncio.gather(*(committer.run_async(submission(i)) for i in range(3)))

    try:
        ids = asyncio.run(main())
    finally:
        committer.close()
    assert ids[1] != "x-taken" and ids[1].startswith("x1-")
    with db.session() as s:
        assert sorted(s.scalars(select(JobRow.id))) == sorted(["x-taken", *ids])
        assert s.execute(select(func.count()).select_from(JobRow).where(JobRow.name == "x1")).scalar() == 1

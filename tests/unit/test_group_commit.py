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

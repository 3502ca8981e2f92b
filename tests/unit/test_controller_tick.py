"""The incremental controller tick: the queue held in memory, only what changed read, reasons
written in one batch, no work when nothing changed. Real SQLite store and API; the Ray
dashboard is the fake of test_api.py."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from test_api import TOKEN, FakeRay, spec  # noqa: E402  (tests/unit is on sys.path under pytest)
from trainyard.api.app import create_app
from trainyard.config import Settings
from trainyard.store import Database
from trainyard.store import jobs as jobs_repo


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(token_file),
                        mlflow_uri="http://mlflow.example:5000", ray_dashboard_url="http://ray.example:8265",
                        ray_token_file=str(tmp_path / "ray.token"), storage=f"file://{tmp_path / 'storage'}",
                        extra={"packages_dir": str(tmp_path / "packages")})
    fakes: dict[str, FakeRay] = {}

    def factory(name, url, token):
        return fakes.setdefault(name, FakeRay(name, url, token))

    app = create_app(settings, client_factory=factory, run_controller=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        ctx = app.state.ctx
        ctx.controller.refresh_clusters()
        yield client, ctx, fakes


def submit(client, **over):
    resp = client.post("/v1/jobs", json={"spec": spec(**over)})
    assert resp.status_code == 201, resp.text
    return resp.json()


def count_statements(db):
    seen = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *a: seen.append(statement))
    return seen


def test_waiting_reasons_are_structured_written_once_and_an_idle_tick_reads_nothing(server):
    client, ctx, fakes = server
    big = submit(client, resources={"workers": 2}, project="a")  # the whole 2-CPU cluster
    ctrl = ctx.controller
    ctrl.tick()
    queued = [submit(client, name=f"q{i}", project="a" if i < 2 else "b") for i in range(3)]
    ctrl.tick()
    assert [s["metadata"]["trainyard_job_id"] for s in fakes["local"].submissions] == [big["id"]]
    assert ctrl.dispatcher.notes_written == 3
    # fair share across projects: project a holds the cluster, so b's job goes first
    got = client.get(f"/v1/jobs/{queued[2]['id']}").json()
    assert got["message"].startswith("waiting: first in line on cluster 'local'")
    assert got["pending"]["reason"]["code"] == "capacity" and got["pending"]["position_in_queue"] == 1
    assert got["result"] is None and got["metrics"] is None
    second = client.get(f"/v1/jobs/{queued[0]['id']}").json()["pending"]
    assert second["position_in_project"] == 1 and second["position_in_queue"] == 2
    assert second["reason"]["blocking_job"] == queued[2]["id"]
    listed = {j["id"]: j for j in client.get("/v1/jobs").json()["jobs"]}
    assert listed[queued[1]["id"]]["pending"]["position_in_project"] == 2
    assert listed[big["id"]]["pending"] is None

    ctrl.tick()  # the dispatch above committed: the mirror looks once more, finds its own write
    plans, scans, notes = ctrl.dispatcher.plans, ctrl.queue.scans, ctrl.dispatcher.notes_written
    statements = count_statements(ctx.db)
    for _ in range(3):
        ctrl.tick()
    assert (ctrl.dispatcher.plans, ctrl.queue.scans, ctrl.dispatcher.notes_written) == (plans, scans, notes)
    # what is left per idle tick: reconciling the running job and reading the clusters table;
    # the queue is not read (the only jobs query is reconcile's, over the active phases)
    assert statements and all(q.startswith("SELECT") for q in statements)
    from trainyard.store import state as st

    active_phases = f"jobs.phase IN ({', '.join('?' * len(st.ACTIVE))})"
    assert all("FROM jobs" not in q or active_phases in q for q in statements)


def test_a_new_submission_is_the_only_row_read_and_the_only_note_written(server):
    client, ctx, fakes = server
    submit(client, resources={"workers": 2})
    for i in range(4):
        submit(client, name=f"q{i}")
    ctrl = ctx.controller
    ctrl.tick()
    ctrl.tick()
    read, offered, notes = ctrl.queue.rows_read, ctrl.queue.rows_offered, ctrl.dispatcher.notes_written
    late = submit(client, name="late")
    ctrl.tick()
    # the new row comes from the group committer's offer (as committed): nothing is read back
    assert ctrl.queue.rows_read == read and ctrl.queue.rows_offered == offered + 1
    assert ctrl.dispatcher.notes_written == notes + 1
    assert client.get(f"/v1/jobs/{late['id']}").json()["pending"]["position_in_queue"] == 5


def test_cancel_leaves_the_queue_and_dispatch_clears_the_pending_record(server):
    client, ctx, fakes = server
    first = submit(client, resources={"workers": 2})
    second = submit(client, name="second")
    third = submit(client, name="third")
    ctrl = ctx.controller
    ctrl.tick()
    assert client.post(f"/v1/jobs/{second['id']}/cancel").json()["state"] == "CANCELLED"
    ctrl.tick()
    assert second["id"] not in ctrl.queue.pending
    ray = fakes["local"]
    ray.set(ray.submissions[0]["submission_id"], "SUCCEEDED")
    ctrl.tick()
    got = client.get(f"/v1/jobs/{third['id']}").json()
    assert [s["metadata"]["trainyard_job_id"] for s in ray.submissions] == [first["id"], third["id"]]
    assert got["phase"] == "SUBMITTED" and got["pending"] is None and got["result"] is None
    with ctx.db.session() as s:
        assert jobs_repo.get_job(s, third["id"]).result is None


def test_a_write_from_another_process_is_found_by_the_periodic_resync(server, tmp_path):
    client, ctx, fakes = server
    submit(client, resources={"workers": 2})
    ctrl = ctx.controller
    ctrl.tick()
    ctrl.tick()
    other = Database(ctx.db.url)  # another engine: no hook of ours sees its commits
    with other.session() as s:
        jobs_repo.create_job(s, spec=spec(name="elsewhere"), name="elsewhere", project="default", priority=0,
                             job_id="elsewhere-000001")
    other.dispose()
    ctrl.tick()
    assert "elsewhere-000001" not in ctrl.queue.pending
    ctrl.queue.resync_interval_s = 0.0
    ctrl.tick()
    assert "elsewhere-000001" in ctrl.queue.pending
    assert client.get("/v1/jobs/elsewhere-000001").json()["message"].startswith("waiting:")


def test_the_controllers_own_notes_do_not_wake_the_mirror(server):
    client, ctx, fakes = server
    submit(client, resources={"workers": 2})
    ctrl = ctx.controller
    ctrl.tick()
    submit(client, name="waits")
    ctrl.tick()  # plans, writes one note
    assert ctrl.dispatcher.notes_written == 1
    scans = ctrl.queue.scans
    ctrl.tick()
    assert ctrl.queue.scans == scans  # the note's commit was quiet



def test_the_mirror_scans_only_the_rows_a_write_named_and_everything_otherwise(tmp_path):
    from sqlalchemy import delete, update

    from trainyard.controller.queue import QueueMirror
    from trainyard.store import state as st
    from trainyard.store.models import JobRow

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.upgrade()
    mirror = QueueMirror(db, resync_interval_s=1e9)
    scans: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cur, sql, *a: scans.append(sql) if sql.startswith("SELECT jobs.id, jobs.version") else None)

    def create(job_id):
        with db.session() as s:
            jobs_repo.create_job(s, spec=spec(name=job_id), name=job_id, project="default", priority=0, job_id=job_id)

    def step(write) -> str:
        """Apply a write, sync, and check the mirror against a fresh read of everything."""
        write()
        scans.clear()
        mirror.sync()
        how = "targeted" if scans and all("jobs.id IN" in q for q in scans) else "everything"
        fresh = QueueMirror(db)
        fresh.sync()
        assert {i: q.version for i, q in mirror.pending.items()} == {i: q.version for i, q in fresh.pending.items()}
        assert {i: (a.version, a.phase) for i, a in mirror.active.items()} == \
            {i: (a.version, a.phase) for i, a in fresh.active.items()}
        return how

    def sql(statement):
        with db.session() as s:
            s.execute(statement)

    assert step(lambda: [create(f"job-{i}") for i in range(4)]) == "everything"  # the first sync
    assert step(lambda: create("job-new")) == "targeted" and "job-new" in mirror.pending

    def dispatch():
        with db.session() as s:
            jobs_repo.transition(s, jobs_repo.find_job(s, "job-0"), st.DISPATCHING, reason="t", cluster="c",
                                 attempt=1, submission_id="s-0")
    assert step(dispatch) == "targeted" and "job-0" in mirror.active
    assert step(lambda: sql(update(JobRow).where(JobRow.id.in_(["job-1", "job-2"]))
                            .values(phase=st.CANCELLED, version=JobRow.version + 1))) == "targeted"
    assert step(lambda: sql(update(JobRow).where(JobRow.id == "job-3", JobRow.phase == st.PENDING)
                            .values(version=JobRow.version + 1))) == "targeted"
    assert step(lambda: sql(delete(JobRow).where(JobRow.id == "job-0"))) == "targeted"
    assert "job-0" not in mirror.active and "job-1" not in mirror.pending
    # a write whose rows cannot be told (here: by phase) scans everything
    assert step(lambda: sql(update(JobRow).where(JobRow.phase == st.PENDING)
                            .values(version=JobRow.version + 1))) == "everything"
    assert step(mirror.mark_dirty) == "everything"
    scans.clear()
    assert mirror.sync() is False and scans == []  # nothing written: nothing read
    db.dispose()


def test_an_offered_row_that_changed_since_is_read_from_the_store(server):
    """The mirror takes a new job's row from the committer's offer only while the store still
    has it at the version and phase it was inserted with; a job changed meanwhile is read."""
    client, ctx, fakes = server
    submit(client, resources={"workers": 2})
    ctrl = ctx.controller
    ctrl.tick()
    ctrl.tick()
    read, offered = ctrl.queue.rows_read, ctrl.queue.rows_offered
    kept = submit(client, name="kept", priority=3)
    changed = submit(client, name="changed", priority=1)
    with ctx.db.session() as s:  # a write the offer does not know (its version moves)
        jobs_repo.update_job(s, jobs_repo.get_job(s, changed["id"]), priority=7)
    ctrl.tick()
    assert ctrl.queue.rows_offered == offered + 1 and ctrl.queue.rows_read == read + 1
    assert ctrl.queue.pending[kept["id"]].job.priority == 3
    assert ctrl.queue.pending[changed["id"]].job.priority == 7
    # what an offer holds is what a read would have given
    fresh = type(ctrl.queue)(ctx.db)
    fresh.sync()
    for job_id in (kept["id"], changed["id"]):
        assert fresh.pending[job_id].job == ctrl.queue.pending[job_id].job
        assert fresh.pending[job_id].version == ctrl.queue.pending[job_id].version


def test_notes_are_written_in_short_chunks_through_the_group_committer(server, monkeypatch):
    """A tick after a burst notes every new job: in chunks that join the submissions' commits,
    not one long transaction holding the store's write lock (dispatch.NOTES_PER_COMMIT)."""
    from trainyard.controller import dispatch

    client, ctx, _ = server
    submit(client, resources={"workers": 2})  # holds the cluster: the rest wait
    queued = [submit(client, name=f"q{i}") for i in range(5)]
    monkeypatch.setattr(dispatch, "NOTES_PER_COMMIT", 2)
    chunks: list[int] = []
    real = ctx.controller.dispatcher.commit
    ctx.controller.dispatcher.commit = lambda work: chunks.append(1) or real(work)
    writes = ctx.commits.writes
    ctx.controller.tick()
    assert len(chunks) == 3 and ctx.commits.writes - writes == 3  # 2 + 2 + 1, each a committer write
    assert ctx.controller.dispatcher.notes_written == 5
    for job in queued:
        assert client.get(f"/v1/jobs/{job['id']}").json()["pending"]["reason"]["code"] in ("capacity", "behind_job")

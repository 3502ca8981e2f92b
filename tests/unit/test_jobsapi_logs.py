"""Following job logs: the log reader (pure part), its registry, `since` parsing, and the
streaming route over a fake Ray that tails like Ray's websocket (no Ray)."""
from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from test_api import TOKEN, FakeRay, spec
from trainyard.api.app import create_app
from trainyard.api.routes.jobs import parse_since
from trainyard.config import Settings
from trainyard.controller.logtail import MAX_LINE_CHARS, LogTail, LogTails
from trainyard.api.follows import FollowGate
from trainyard.errors import SpecError, TooManyError

PROGRESS = 'TRAINYARD_PROGRESS {"step": %d, "total_steps": 9, "epoch": 0, "metrics": {}}\n'


# ----------------------------------------------------------------------------- the reader


def test_feed_keeps_whole_lines_counts_bytes_and_reads_progress():
    clock = iter(range(100)).__next__
    tail = LogTail(clock=lambda: float(clock()))
    tail.feed("one\ntw")
    assert [ln.text for ln in tail.lines] == ["one"] and tail.offset == 6
    tail.feed("o\r\n" + PROGRESS % 3 + "x")
    assert [ln.text for ln in tail.lines][:2] == ["one", "two"] and tail.progress["step"] == 3
    assert [ln.seq for ln in tail.lines] == [0, 1, 2] and tail.offset == 6 + 3 + len(PROGRESS % 3) + 1
    tail.finish()
    assert tail.lines[-1].text == "x" and tail.done
    lines, newest = tail.snapshot(tail=2)
    assert [ln.text for ln in lines] == [(PROGRESS % 3).strip(), "x"] and newest == 3
    assert tail.snapshot(tail=0)[0] == []
    assert [ln.text for ln in tail.snapshot(since=tail.lines[-1].at)[0]] == ["x"]


def test_the_buffer_is_bounded_and_a_line_without_end_is_cut():
    tail = LogTail(max_lines=3)
    tail.feed("".join(f"l{i}\n" for i in range(10)))
    assert [ln.text for ln in tail.lines] == ["l7", "l8", "l9"] and tail.next_seq == 10
    fresh, ended = tail.after(5, timeout_s=0)
    assert [ln.seq for ln in fresh] == [7, 8, 9] and not ended  # 6 dropped out of the buffer
    tail.feed("y" * (MAX_LINE_CHARS * 2 + 5))
    assert len(tail.lines[-1].text) == MAX_LINE_CHARS and tail.lines[-2].text == "y" * MAX_LINE_CHARS


def test_a_reader_thread_follows_until_the_log_ends_and_reports_errors():
    go = threading.Event()

    def opener(stop):
        yield "a\n"
        go.wait(5)
        yield PROGRESS % 1

    tail = LogTail(opener).start()
    tail.wait_settled(quiet_s=0.05, timeout_s=5)
    assert tail.settled and [ln.text for ln in tail.lines] == ["a"] and not tail.done
    go.set()
    fresh, ended = tail.after(0, timeout_s=5)
    while not ended:
        more, ended = tail.after(fresh[-1].seq if fresh else 0, timeout_s=5)
        fresh += more
    assert tail.progress == {"step": 1, "total_steps": 9, "epoch": 0, "metrics": {}} and tail.error is None

    def broken(stop):
        yield "b\n"
        raise RuntimeError("cluster went away")

    bad = LogTail(broken).start()
    bad.wait_settled(timeout_s=5)
    assert bad.done and "went away" in bad.error and [ln.text for ln in bad.lines] == ["b"]


def test_registry_is_bounded_closes_idle_readers_and_retries_failed_ones():
    opened = []

    def open_for(cluster, sid):
        def opener(stop):
            opened.append(sid)
            if sid == "bad":
                raise RuntimeError("no such job")
            stop.wait(10)
            return
            yield

        return opener

    tails = LogTails(open_for, max_tails=2, idle_s=60)
    a = tails.get("c", "a")
    assert tails.get("c", "a") is a
    tails.get("c", "b")
    tails.get("c", "d")
    assert len(tails) == 2 and a._stop.is_set()  # least recently used, closed
    bad = tails.get("c", "bad")
    bad.wait_settled(timeout_s=5)
    assert bad.error and tails.get("c", "bad") is not bad  # a failed reader is tried again
    tails.idle_s = 0
    time.sleep(0.01)
    tails.get("c", "e")
    assert len(tails) == 1
    tails.close()


@pytest.mark.parametrize("text, expected", [("300", 1000.0 - 300), ("0", 1000.0), ("1.5", 998.5),
                                            ("1970-01-01T00:10:00Z", 600.0),
                                            ("1970-01-01T01:10:00+01:00", 600.0)])
def test_since_takes_rfc3339_or_seconds(text, expected):
    assert parse_since(text, now=1000.0) == expected


@pytest.mark.parametrize("text", ["yesterday", "-5", "1e9", "2026-12-05T14:00:00", "99999999999", "5m", ""])
def test_bad_since_is_refused_naming_the_field(text):
    with pytest.raises(SpecError) as err:
        parse_since(text, now=1000.0)
    assert err.value.field == "since" and err.value.fix


# ----------------------------------------------------------------------------- the route


class TailingRay(FakeRay):
    """FakeRay plus Ray's log tail: the log from its start, then what is appended, until the
    job's status is terminal. Counts full downloads, which a follower must not make."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.full_reads = 0
        self.tails_opened = 0

    def logs(self, submission_id):
        self.full_reads += 1
        return super().logs(submission_id)

    def tail_logs(self, submission_id, *, stop=None, poll_s=1.0):
        self.tails_opened += 1
        sent = 0
        while stop is None or not stop.is_set():
            job = self.jobs[submission_id]
            text, status = job["logs"], job["status"]
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            elif status in ("SUCCEEDED", "FAILED", "STOPPED"):
                return
            else:
                time.sleep(0.01)


@contextlib.contextmanager
def _tailing_app(tmp_path, monkeypatch, **settings_kw):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", admin_token_file=str(tmp_path / "admin.token"),
                        ray_dashboard_url="http://ray.example:8265", storage=f"file://{tmp_path / 'storage'}",
                        extra={"packages_dir": str(tmp_path / "packages")}, **settings_kw)
    fakes: dict[str, TailingRay] = {}

    def factory(name, url, token):
        return fakes.setdefault(name, TailingRay(name, url, token))

    app = create_app(settings, client_factory=factory, run_controller=False)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        app.state.ctx.controller.refresh_clusters()
        yield client, app.state.ctx, fakes


@pytest.fixture()
def tailing(tmp_path, monkeypatch):
    with _tailing_app(tmp_path, monkeypatch) as parts:
        yield parts


def _events(resp) -> list[tuple[str, str]]:
    out = []
    for block in resp.text.split("\n\n"):
        kind, data = "line", None
        for field in block.split("\n"):
            if field.startswith("event: "):
                kind = field[7:]
            elif field.startswith("data: "):
                data = field[6:]
        if data is not None:
            out.append((kind, data))
    return out


def test_progress_reads_each_byte_once(tailing):
    client, ctx, fakes = tailing
    job = client.post("/v1/jobs", json={"spec": spec()}).json()
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[0]["submission_id"]
    ray.set(sid, "RUNNING", logs=PROGRESS % 1)
    ctx.controller.tick()
    reads_by_controller = ray.full_reads
    assert client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] == 1
    ray.set(sid, "RUNNING", logs=PROGRESS % 1 + PROGRESS % 2)
    deadline = time.monotonic() + 5
    while client.get(f"/v1/jobs/{job['id']}").json()["progress"]["step"] != 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    follower = ctx.jobs.tails.get("local", sid)
    assert follower.offset == len(ray.jobs[sid]["logs"])  # read once, in order
    assert ray.tails_opened == 1 and ray.full_reads == reads_by_controller  # no download per poll


def test_follow_streams_redacted_lines_until_the_job_ends(tailing):
    client, ctx, fakes = tailing
    job = client.post("/v1/jobs", json={"spec": spec(env={"API_KEY": "sekrit-value-123"})}).json()
    ray = fakes["local"]
    result = {}

    def follow():
        with client.stream("GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true", "tail": 2}) as resp:
            result["type"] = resp.headers["content-type"]
            resp.read()
            result["events"] = _events(resp)

    ctx.controller.tick()
    sid = ray.submissions[0]["submission_id"]
    ray.set(sid, "RUNNING", logs="old 1\nold 2\nold 3\nkey sekrit-value-123\n")
    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(0.5)
    ray.set(sid, "RUNNING", logs=ray.jobs[sid]["logs"] + "new 1\n")
    time.sleep(0.2)
    ray.set(sid, "SUCCEEDED", logs=ray.jobs[sid]["logs"] + "new 2\n")
    deadline = time.monotonic() + 10
    while "events" not in result and time.monotonic() < deadline:
        ctx.controller.tick()  # the stream ends once the store says the job ended
        time.sleep(0.1)
    reader.join(5)
    assert result["type"].startswith("text/event-stream")
    lines = [d for k, d in result["events"] if k == "line"]
    assert lines == ["old 3", "key ***", "new 1", "new 2"]
    assert result["events"][-1] == ("end", json.dumps({"state": "SUCCEEDED", "phase": "SUCCEEDED"}))


def test_tail_and_since_without_follow_and_bad_combinations(tailing):
    client, ctx, fakes = tailing
    job = client.post("/v1/jobs", json={"spec": spec()}).json()
    # nothing dispatched yet: an empty answer, not an error
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 5}).text == ""
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[0]["submission_id"]
    ray.set(sid, "SUCCEEDED", logs="a\nb\nc\n")
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"tail": 2}).text == "b\nc\n"
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"since": "60"}).text == "a\nb\nc\n"
    future = "2999-01-01T00:00:00Z"
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"since": future}).text == ""
    for params, field in (({"tail": -1}, "tail"), ({"tail": 10_001}, "tail"), ({"since": "soon"}, "since"),
                          ({"follow": "maybe"}, "follow"), ({"offset": 3, "tail": 1}, "offset")):
        resp = client.get(f"/v1/jobs/{job['id']}/logs", params=params)
        assert resp.status_code == 422 and field in resp.text, (params, resp.text)
    missing = client.get("/v1/jobs/nope-0000/logs", params={"follow": "true"})
    assert missing.status_code == 404


# ----------------------------------------------------------------------------- the bound on follows


def test_follow_gate_counts_per_user_and_in_all_and_releases_once():
    gate = FollowGate(per_user=2, total=3)
    a1, a2 = gate.enter("ann", job_id="j-1"), gate.enter("ann", job_id="j-1")
    with pytest.raises(TooManyError) as err:
        gate.enter("ann", job_id="j-1")
    assert err.value.status == 429 and "ann already follows 2" in str(err.value) and "at most 2" in str(err.value)
    assert "trainyard jobs logs j-1 --tail 200" in err.value.fix
    b1 = gate.enter("bob", job_id="j-2")
    with pytest.raises(TooManyError, match="already streams 3 followed logs"):
        gate.enter("cy", job_id="j-3")
    a1()
    a1()  # a second release gives nothing back twice
    assert gate.open_for("ann") == 1 and gate.open_total() == 2
    gate.enter("cy", job_id="j-3")()
    a2(), b1()
    assert gate.open_total() == 0 and gate.open_for("ann") == 0


def test_a_follow_past_the_limit_gets_429_and_the_place_comes_back(tmp_path, monkeypatch):
    with _tailing_app(tmp_path, monkeypatch, log_follows_per_user=1, log_follows_total=5) as (client, ctx, fakes):
        assert (ctx.follows.per_user, ctx.follows.total) == (1, 5)  # from the settings
        job = client.post("/v1/jobs", json={"spec": spec()}).json()
        ctx.controller.tick()
        ray = fakes["local"]
        sid = ray.submissions[0]["submission_id"]
        ray.set(sid, "RUNNING", logs="one\n")
        url, result = f"/v1/jobs/{job['id']}/logs", {}

        def follow():
            with client.stream("GET", url, params={"follow": "true"}) as resp:
                result["status"] = resp.status_code
                resp.read()

        reader = threading.Thread(target=follow)
        reader.start()
        deadline = time.monotonic() + 10
        while ctx.follows.open_for("admin") == 0:
            assert time.monotonic() < deadline, "the first follow never opened"
            time.sleep(0.02)
        extra = client.get(url, params={"follow": "true"})
        body = extra.json()
        assert extra.status_code == 429 and body["error"] == "too_many_requests", body
        assert "at most 1 at once per user" in body["message"] and "--tail" in body["fix"]
        assert client.get(url, params={"tail": 1}).text == "one\n"  # reading without following still works
        ray.set(sid, "SUCCEEDED", logs="one\ntwo\n")
        while reader.is_alive() and time.monotonic() < deadline:
            ctx.controller.tick()  # the stream ends once the store says the job ended
            reader.join(0.1)
        assert result["status"] == 200 and ctx.follows.open_total() == 0  # the place came back
        again = client.get(url, params={"follow": "true"})
        assert again.status_code == 200 and again.text.rstrip().endswith('"phase": "SUCCEEDED"}')
        assert ctx.follows.open_total() == 0


def test_a_client_that_goes_away_gives_its_place_back(tmp_path, monkeypatch):
    with _tailing_app(tmp_path, monkeypatch, log_follows_per_user=1) as (client, ctx, fakes):
        job = client.post("/v1/jobs", json={"spec": spec()}).json()
        ctx.controller.tick()
        sid = fakes["local"].submissions[0]["submission_id"]
        fakes["local"].set(sid, "RUNNING", logs="one\n")
        with client.stream("GET", f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}) as resp:
            assert resp.status_code == 200 and ctx.follows.open_for("admin") == 1
            next(resp.iter_lines())  # the stream is open; then the client leaves mid-stream
        deadline = time.monotonic() + 10
        while ctx.follows.open_total():
            assert time.monotonic() < deadline, "a disconnected follow kept its place"
            time.sleep(0.05)


# ----------------------------------------------------------------------------- SDK and CLI


def test_sdk_stream_logs_follows_and_reports_the_end(tailing):
    from trainyard.sdk import Client

    client, ctx, fakes = tailing
    sdk = Client(url="http://testserver", token=TOKEN)
    sdk._http = client
    job = sdk.submit_job(spec())
    ctx.controller.tick()
    ray = fakes["local"]
    sid = ray.submissions[0]["submission_id"]
    ray.set(sid, "FAILED", logs="first\nsecond\nlast\n")
    ctx.controller.tick()
    assert list(sdk.stream_logs(job.id, tail=2)) == ["second", "last"] and sdk.last_stream_state == "FAILED"
    assert list(sdk.stream_logs(job.id, follow=False, tail=1)) == ["last"]
    with pytest.raises(SpecError):
        list(sdk.stream_logs(job.id, since="whenever"))


class _LogClient:
    def __init__(self, interrupt=False):
        self.calls, self.interrupt = [], interrupt

    def stream_logs(self, job_id, **kw):
        self.calls.append((job_id, kw))
        yield "hello"
        if self.interrupt:
            raise KeyboardInterrupt
        yield "bye"


def test_cli_logs_follow_tail_since_and_ctrl_c(monkeypatch, capsys, trainyard_home):
    from trainyard.cli import main as cli

    fake = _LogClient()
    monkeypatch.setattr(cli, "_client", lambda args: fake)
    assert cli.main(["jobs", "logs", "j-1", "-f", "--tail", "5", "--since", "10m"]) == 0
    assert capsys.readouterr().out == "hello\nbye\n"
    assert fake.calls[-1] == ("j-1", {"follow": True, "tail": 5, "since": "600"})
    assert cli.main(["jobs", "logs", "j-1", "--since", "2026-12-05T14:00:00Z"]) == 0
    assert fake.calls[-1] == ("j-1", {"follow": False, "tail": None, "since": "2026-12-05T14:00:00Z"})
    for argv, flag in ((["--since", "soon"], "--since"), (["--tail", "-1"], "--tail"), (["--tail", "10001"], "--tail")):
        assert cli.main(["jobs", "logs", "j-1", *argv]) == 2
        assert flag in capsys.readouterr().err
    monkeypatch.setattr(cli, "_client", lambda args: _LogClient(interrupt=True))
    assert cli.main(["jobs", "logs", "j-1", "-f"]) == 130
    captured = capsys.readouterr()
    assert captured.out == "hello\n" and "Traceback" not in captured.err

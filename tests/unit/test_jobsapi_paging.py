"""Jobs list: cursors (encode/decode, every bad form), filters, totals and paging over the
REST API with a fake Ray client (no Ray)."""
from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from test_api import server, spec, submit  # noqa: F401  (the fixture)
from trainyard.errors import SpecError
from trainyard.store import jobs as jobs_repo
from trainyard.store.paging import MAX_CURSOR_LEN, Cursor, decode_cursor, encode_cursor


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


# ----------------------------------------------------------------------------- cursors (pure)


def test_cursor_round_trips_to_the_microsecond():
    at = datetime(2026, 12, 5, 14, 3, 7, 123456, tzinfo=timezone.utc)
    text = encode_cursor(at, "mnist-01abc")
    assert decode_cursor(text) == Cursor(created_at=at, id="mnist-01abc")
    assert "=" not in text and len(text) < MAX_CURSOR_LEN
    # a naive time is taken as UTC; another zone is normalised
    assert decode_cursor(encode_cursor(at.replace(tzinfo=None), "a")).created_at == at
    plus2 = at.astimezone(timezone(timedelta(hours=2)))
    assert decode_cursor(encode_cursor(plus2, "a")).created_at == at


@pytest.mark.parametrize("text", [
    "", "!!!", "bm90IGpzb24", _b64([1, 2]), _b64({"v": 1, "t": "2026-01-01T00:00:00+00:00"}),
    _b64({"v": 2, "t": "2026-01-01T00:00:00+00:00", "i": "a"}),
    _b64({"v": 1, "t": "2026-01-01T00:00:00", "i": "a"}),  # no zone
    _b64({"v": 1, "t": "yesterday", "i": "a"}), _b64({"v": 1, "t": 5, "i": "a"}),
    _b64({"v": 1, "t": "2026-01-01T00:00:00+00:00", "i": "../etc"}),
    _b64({"v": 1, "t": "2026-01-01T00:00:00+00:00", "i": "a", "x": 1}),
    "a" * (MAX_CURSOR_LEN + 1), base64.urlsafe_b64encode(b"\xff\xfe").decode(),
])
def test_bad_cursors_are_refused_naming_the_field(text):
    with pytest.raises(SpecError) as err:
        decode_cursor(text)
    assert err.value.field == "cursor" and err.value.fix


# ----------------------------------------------------------------------------- the route


def _set(ctx, job_id, **fields):
    with ctx.db.session() as s:
        row = jobs_repo.get_job(s, job_id)
        for key, value in fields.items():
            setattr(row, key, value)


def test_total_filters_and_cursor_paging(server):
    client, ctx, _ = server
    ids = [submit(client, name=f"j{i}", project="vision" if i % 3 == 0 else "default")["id"] for i in range(7)]
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i, job_id in enumerate(ids):  # two share a time: the id breaks the tie
        _set(ctx, job_id, created_at=base + timedelta(seconds=min(i, 5)), owner="ann" if i < 2 else "admin")
    _set(ctx, ids[6], phase="RUNNING", cluster="local")

    first = client.get("/v1/jobs", params={"limit": 3}).json()
    assert first["total"] == 7 and first["count"] == 3 and first["next_cursor"]
    seen = [j["id"] for j in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/jobs", params={"limit": 3, "cursor": cursor}).json()
        assert page["total"] == 7
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
    newest_first = sorted(ids, key=lambda i: (min(ids.index(i), 5), i), reverse=True)
    assert seen == newest_first

    assert client.get("/v1/jobs", params={"project": "vision"}).json()["total"] == 3
    mine = client.get("/v1/jobs", params={"user": "ann"}).json()
    assert mine["total"] == 2 and {j["owner"] for j in mine["jobs"]} == {"ann"}
    # repeated and comma-separated states; public state RUNNING, and the cluster filter
    assert client.get("/v1/jobs", params=[("state", "running")]).json()["total"] == 1
    assert client.get("/v1/jobs", params=[("state", "PENDING"), ("state", "RUNNING")]).json()["total"] == 7
    assert client.get("/v1/jobs", params={"state": "pending,succeeded"}).json()["total"] == 6
    assert client.get("/v1/jobs", params={"cluster": "local"}).json()["total"] == 1
    last = client.get("/v1/jobs", params={"limit": 7}).json()
    assert last["count"] == 7 and last["next_cursor"] is None
    # a cursor past the end: an empty last page
    end = client.get("/v1/jobs", params={"cursor": encode_cursor(base - timedelta(days=1), "a")}).json()
    assert end == {**end, "jobs": [], "count": 0, "total": 7, "next_cursor": None}


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"limit": "ten"}, "limit"),
    ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "x" * 300}, "cursor"),
    ({"state": "DONE"}, "state"), ({"state": ",".join(["PENDING"] * 17)}, "state"), ({"state": "P" * 201}, "state"),
    ({"user": "Bob!"}, "user"), ({"project": "a/b"}, "project"), ({"cluster": "x" * 64}, "cluster"),
    ({"kind": "model"}, "kind"), ({"offset": -1}, "offset"),
])
def test_bad_list_parameters_are_422_naming_the_field(server, params, field):
    client, _, _ = server
    resp = client.get("/v1/jobs", params=params)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert field in (body.get("field") or "") or any(field in (i.get("field") or "") for i in body["issues"])


def test_cursor_and_offset_together_are_refused(server):
    client, _, _ = server
    for i in range(2):
        submit(client, name=f"j{i}")
    cursor = client.get("/v1/jobs", params={"limit": 1}).json()["next_cursor"]
    resp = client.get("/v1/jobs", params={"cursor": cursor, "offset": 1})
    assert resp.status_code == 422 and resp.json()["field"] == "offset"


# ----------------------------------------------------------------------------- SDK and CLI


@pytest.fixture()
def sdk(server):  # noqa: F811
    from test_api import TOKEN
    from trainyard.sdk import Client

    client, ctx, fakes = server
    sdk = Client(url="http://testserver", token=TOKEN)
    sdk._http = client
    return sdk, ctx


def test_sdk_pages_iterates_and_splits_big_limits(sdk, monkeypatch):
    import trainyard.sdk as sdk_mod

    client, ctx = sdk
    ids = {client.submit_job(spec(name=f"s{i}")).id for i in range(5)}
    page = client.list_jobs(limit=2)
    assert len(page) == 2 and page.total == 5 and page.next_cursor
    assert [j.id for j in client.list_jobs(limit=2, cursor=page.next_cursor)] != [j.id for j in page]
    assert {j.id for j in client.iter_jobs(page_size=2)} == ids and len(list(client.iter_jobs(page_size=2))) == 5
    assert client.list_jobs(state=["pending", "running"]).total == 5 and client.list_jobs(state="FAILED").total == 0
    # a limit above the server's page is fetched in pages
    monkeypatch.setattr(sdk_mod, "JOB_PAGE_MAX", 2)
    every = client.list_jobs(limit=4)
    assert len(every) == 4 and every.total == 5 and every.next_cursor
    for bad in (0, -1, True, "5"):
        with pytest.raises(SpecError):
            client.list_jobs(limit=bad)
    with pytest.raises(SpecError):
        next(client.iter_jobs(limit=3))


class _ListClient:
    def __init__(self, jobs):
        self.jobs, self.calls = jobs, []

    def list_jobs(self, **filters):
        from trainyard.sdk import JobPage

        self.calls.append(("list_jobs", filters))
        limit = filters.get("limit", 50)
        return JobPage(self.jobs[:limit], total=len(self.jobs), next_cursor="c" if limit < len(self.jobs) else None)

    def iter_jobs(self, **filters):
        self.calls.append(("iter_jobs", filters))
        return iter(self.jobs)


def _run_cli(argv, fake, monkeypatch, capsys):
    from trainyard.cli import main as cli

    monkeypatch.setattr(cli, "_client", lambda args: fake)
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_jobs_list_flags_and_n_of_total(monkeypatch, capsys, trainyard_home):
    from api_views import job_item

    jobs = [job_item(f"j-{i}", name="j") for i in range(3)]
    fake = _ListClient(jobs)
    code, out, _ = _run_cli(["jobs", "list", "--state", "pending,running", "--state", "failed", "--project",
                             "vision", "--user", "ann", "--limit", "2"], fake, monkeypatch, capsys)
    assert code == 0 and "2 of 3" in out and "--all for more" in out
    assert fake.calls[-1] == ("list_jobs", {"state": ["pending", "running", "failed"], "project": "vision",
                                            "user": "ann", "limit": 2})
    code, out, _ = _run_cli(["jobs", "list", "--all"], fake, monkeypatch, capsys)
    assert code == 0 and "3 of 3" in out and fake.calls[-1] == ("iter_jobs", {})
    for argv, flag in ((["--limit", "0"], "--limit"), (["--limit", "2", "--all"], "--limit"),
                       (["--user", "Ann!"], "--user")):
        code, out, err = _run_cli(["jobs", "list", *argv], fake, monkeypatch, capsys)
        assert code == 2 and flag in err and "Traceback" not in err

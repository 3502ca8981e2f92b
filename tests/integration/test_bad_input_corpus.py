"""The bad-input corpus against one real server (`python -m trainyard.api`, no Ray needed).

Every case in tests/corpus/bad_specs goes through
  - the CLI: `trainyard jobs submit` / `sweeps submit` in a subprocess: exit 2, the field
    named on stderr, no traceback;
  - REST: the spec as YAML text and as a JSON mapping (the two forms `spec` accepts): a 4xx
    whose JSON body names the field;
and leaves `jobs list`, `sweeps list` and the storage roots as they were. A last test shows
that the same server accepts a good spec on both paths, so the refusals are the cases' own.

The server has one registered cluster that it cannot reach (it is never dispatched to:
nothing is accepted) whose maximum size, 2 nodes of 4 CPUs, the capacity cases exceed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from trainyard.local.processes import free_port, start_process, stop_process

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))
from corpus import Case, body_names_field, load_cases  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "corpus-admin-token-" + os.urandom(4).hex()
S3_ROOT = "s3://corpus-ckpt/team"


class CorpusServer:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home"
        self.storage = root / "storage"
        self.extra = root / "extra"
        for folder in (self.home, self.storage, self.extra):
            folder.mkdir(parents=True, exist_ok=True)
        (self.storage / "kept.txt").write_text("a file the corpus must not touch\n")
        (self.home / "admin.token").write_text(TOKEN + "\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "TRAINYARD_HOME": str(self.home),
            "TRAINYARD_ADMIN_TOKEN_FILE": str(self.home / "admin.token"),
            "TRAINYARD_DB_URL": f"sqlite:///{root / 'corpus.db'}",
            "TRAINYARD_MLFLOW_URI": "http://127.0.0.1:1",  # never contacted: nothing runs
            "TRAINYARD_STORAGE": f"file://{self.storage}",
            "TRAINYARD_STORAGE_ROOTS": f"file://{self.extra},{S3_ROOT}",
            "TRAINYARD_POLL_INTERVAL_S": "5",
        }
        self.pid: int | None = None
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_"))}
        proc = start_process("server", [sys.executable, "-m", "trainyard.api", "--host", "127.0.0.1",
                                        "--port", str(self.port), "--log-level", "warning"],
                             url=self.url, health_url=f"{self.url}/healthz", log_file=self.root / "server.log",
                             env={**env, **self.env}, timeout=60)
        self.pid = proc.pid
        resp = self.http.post("/v1/clusters", json={
            "name": "corpus", "address": "http://127.0.0.1:9", "check": False,
            "max_resources": {"nodes": [{"CPU": 4}, {"CPU": 4}]}})
        assert resp.status_code == 201, resp.text

    def stop(self) -> None:
        self.http.close()
        if self.pid:
            stop_process(self.pid)
            self.pid = None

    def state(self) -> tuple:
        """What no refused submission may change: the jobs, the sweeps, the storage roots' files."""
        jobs = self.http.get("/v1/jobs", params={"limit": 500}).json()["jobs"]  # a page is at most 500
        sweeps = self.http.get("/v1/sweeps", params={"limit": 1000}).json()["sweeps"]
        files = sorted(str(p.relative_to(self.root)) for base in (self.storage, self.extra) for p in base.rglob("*"))
        strays = [p for p in (Path("/tmp/not-a-trainyard-root"), Path(f"{self.storage}-evil")) if p.exists()]
        return [j["id"] for j in jobs], [s["id"] for s in sweeps], files, strays

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINYARD_", "RAY_"))}
        env.update({"TRAINYARD_TOKEN": TOKEN, "TRAINYARD_HOME": str(self.root / "client-home"),
                    "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "COLUMNS": "400"})
        return subprocess.run([sys.executable, "-m", "trainyard.cli.main", "--url", self.url, *args],
                              capture_output=True, text=True, env=env, timeout=240)


@pytest.fixture(scope="module")
def corpus_server(test_root):
    srv = CorpusServer(test_root / "corpus-server")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def cases(corpus_server) -> list[Case]:
    return load_cases(storage=str(corpus_server.storage))


@pytest.fixture(scope="module")
def baseline(corpus_server):
    return corpus_server.state()


@pytest.fixture(scope="module")
def cli_results(corpus_server, cases, baseline, test_root):
    """Every case through the CLI at once (a few in parallel: each is a Python start-up)."""
    folder = test_root / "corpus-files"
    folder.mkdir(exist_ok=True)

    def run(case: Case):
        path = folder / case.file
        path.write_bytes(case.data)
        return case.id, corpus_server.cli("sweeps" if case.kind == "sweep" else "jobs", "submit", str(path))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(pool.map(run, cases))
    assert corpus_server.state() == baseline, "a CLI submission changed the jobs, sweeps or storage"
    return results


CASE_IDS = [c.id for c in load_cases()]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_corpus_case_is_refused_everywhere(case_id, corpus_server, cases, baseline, cli_results):
    case = next(c for c in cases if c.id == case_id)
    proc = cli_results[case_id]
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}: {out[-2000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert case.field in out, out[-2000:]
    if case.match:
        assert case.match in out, out[-2000:]

    path = "/v1/sweeps" if case.kind == "sweep" else "/v1/jobs"
    headers = {"content-type": "application/json"}
    for channel in case.rest:
        if channel == "yaml":
            resp = corpus_server.http.post(path, json={"spec": case.text()})
            expected_field = case.field
        else:
            resp = corpus_server.http.post(path, content=case.json_body(), headers=headers)
            expected_field = case.json_field
        assert 400 <= resp.status_code < 500, f"{channel}: {resp.status_code} {resp.text[:500]}"
        body = resp.json()  # every error body is JSON
        if expected_field is not None:
            assert body_names_field(body, expected_field), f"{channel}: {resp.text[:800]}"
            if case.status is not None:
                assert resp.status_code == case.status, f"{channel}: {resp.status_code} {resp.text[:300]}"
        assert corpus_server.state() == baseline, f"{channel}: the refused case changed something"


def test_the_same_server_accepts_a_good_spec(corpus_server, cli_results, tmp_path):
    """The control: a valid job goes through REST and the CLI, so the refusals above are the cases' own."""
    good = "name: corpus-good\nworkload: cnn\nresources: {workers: 2}\ntraining: {max_steps: 1}\n" \
           f"checkpoint: {{storage: 'file://{corpus_server.extra}/ok'}}\n"
    resp = corpus_server.http.post("/v1/jobs", json={"spec": good})
    assert resp.status_code == 201, resp.text
    spec_file = tmp_path / "good.yaml"
    spec_file.write_text(good)
    proc = corpus_server.cli("jobs", "submit", str(spec_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(corpus_server.state()[0]) == 2

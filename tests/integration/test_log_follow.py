"""Following a running job's log on a real token-auth Ray head: every line once, in order, as it
is written, and the follow ends with the job; the whole log is read at most once (the catch-up
after the end), never once a poll. The progress check reads only the log's end."""
from __future__ import annotations

import time

import pytest

from trainyard.clusters.ray_client import RayClusterClient
from trainyard.errors import ClusterError

pytestmark = pytest.mark.integration

LINES = 12
SCRIPT = ("import time\n"
          f"for i in range({LINES}):\n"
          "    print(f'line {i}', flush=True)\n"
          "    time.sleep(0.4)\n")


class CountingClient(RayClusterClient):
    full_reads = 0

    def logs(self, submission_id):
        self.full_reads += 1
        return super().logs(submission_id)


def _submit(client) -> str:
    sid = f"follow-{time.time_ns()}"
    client.submit(submission_id=sid, entrypoint=f"python -c \"{SCRIPT}\"")
    return sid


def test_a_running_jobs_log_arrives_live_once_and_the_follow_ends_with_the_job(ray_head):
    client = CountingClient("local", ray_head.dashboard_url, ray_head.token)
    sid = _submit(client)
    seen: list[tuple[float, str]] = []
    text = ""
    for chunk in client.tail_logs(sid):
        text += chunk
        seen.extend((time.monotonic(), ln) for ln in chunk.splitlines() if ln.startswith("line "))
    lines = [ln for ln in text.splitlines() if ln.startswith("line ")]
    assert lines == [f"line {i}" for i in range(LINES)], text[-2000:]
    ended = client.status(sid)["status"]
    assert ended == "SUCCEEDED"
    # live: the first line came well before the last (the job prints for about 5 s)
    assert seen[-1][0] - seen[0][0] > 2.0, seen
    assert client.full_reads <= 1, client.full_reads


def test_the_progress_check_reads_the_logs_end(ray_head):
    client = RayClusterClient("local", ray_head.dashboard_url, ray_head.token)
    sid = _submit(client)
    deadline = time.monotonic() + 120
    while client.status(sid)["status"] not in ("SUCCEEDED", "FAILED"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    end = client.log_lines(sid, lines=2)
    assert end.splitlines() == [f"line {LINES - 2}", f"line {LINES - 1}"], end
    with pytest.raises(ClusterError):
        client.log_lines("no-such-job", lines=2)

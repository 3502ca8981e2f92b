"""The stall check's read of a job's last step: the log's end first, the whole log only when it must."""
from __future__ import annotations


class _Client:
    def __init__(self, end: str | Exception, whole: str):
        self.end, self.whole, self.full_reads = end, whole, 0

    def log_lines(self, submission_id, *, lines, node_id=None):
        if isinstance(self.end, Exception):
            raise self.end
        return self.end

    def logs(self, submission_id):
        self.full_reads += 1
        return self.whole


def _progress(step: int) -> str:
    from trainyard.protocol import PROGRESS, format_line

    return format_line(PROGRESS, {"step": step})


def test_the_last_step_comes_from_the_logs_end_without_a_full_read():
    from trainyard.controller.reconcile import _last_progress

    client = _Client(end=f"noise\n{_progress(7)}\nmore noise\n", whole=_progress(3))
    assert _last_progress(client, "s", node_id="n")["step"] == 7 and client.full_reads == 0


def test_an_end_without_a_progress_line_or_an_unreadable_end_falls_back_to_the_whole_log():
    from trainyard.controller.reconcile import _last_progress
    from trainyard.errors import ClusterError

    quiet = _Client(end="only noise\n", whole=f"{_progress(5)}\nonly noise\n")
    assert _last_progress(quiet, "s", node_id=None)["step"] == 5 and quiet.full_reads == 1
    refused = _Client(end=ClusterError("no state API"), whole=_progress(9))
    assert _last_progress(refused, "s", node_id=None)["step"] == 9 and refused.full_reads == 1

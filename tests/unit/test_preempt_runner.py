"""The runner's stop request, without Ray: the driver's SIGTERM handler and the workers' flag."""
import os
import signal
import threading
import time

import pytest

from trainyard.runner import preempt


def test_sigterm_in_the_driver_becomes_a_request_and_the_old_handler_comes_back(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(preempt, "request_stop", asked.append)
    monkeypatch.setattr(preempt, "_clear", lambda token: asked.append(f"clear {token}"))
    before = signal.getsignal(signal.SIGTERM)
    with preempt.DriverStop("job-1-abc") as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._on_signal
        os.kill(os.getpid(), signal.SIGTERM)  # the process lives on: the job is asked to stop
        assert stop.requested.wait(5)
        deadline = time.monotonic() + 5
        while not asked and time.monotonic() < deadline:
            time.sleep(0.05)
    assert asked == ["job-1-abc", "clear job-1-abc"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_outside_the_main_thread_the_driver_leaves_sigterm_alone(monkeypatch):
    monkeypatch.setattr(preempt, "_clear", lambda token: None)
    seen = []

    def run():
        with preempt.DriverStop("t") as stop:
            seen.append(stop._installed)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [False]


def test_a_worker_sees_the_request_and_agrees_alone(monkeypatch):
    flags = {"t1": False}
    monkeypatch.setattr(preempt, "stop_requested", lambda token: flags[token])
    watch = preempt.StopWatch("t1", poll_s=0.01)
    try:
        assert watch.agreed() is False  # no process group: its own flag decides
        flags["t1"] = True
        assert watch.seen.wait(5)
        assert watch.agreed() is True
    finally:
        watch.close()


def test_tokens_differ_per_run_so_a_resumed_attempt_never_sees_an_old_request():
    a, b = preempt.new_token("job-1"), preempt.new_token("job-1")
    assert a != b and a.startswith("job-1-")


@pytest.mark.parametrize("payload", [{"step": 4, "checkpoint": "file:///x"}])
def test_the_preempted_line_round_trips(payload):
    from trainyard.protocol import PREEMPTED, format_line, parse_line

    assert parse_line("(pid=1) " + format_line(PREEMPTED, payload)) == (PREEMPTED, payload)


def test_a_preempted_run_prints_one_preempted_line_and_exits_75(monkeypatch, capsys):
    import json

    from trainyard.errors import EXIT_PREEMPTED
    from trainyard.protocol import PREEMPTED, parse_line
    from trainyard.runner import __main__ as entry
    from trainyard.runner import job as job_module

    stopped = {"preempted": True, "step": 4, "total_steps": 10, "checkpoint": "file:///s/checkpoint_1",
               "mlflow_run_id": "r", "mlflow_experiment_id": "1"}
    monkeypatch.setattr(job_module, "run_job", lambda spec, job_id, storage=None: dict(stopped))
    monkeypatch.setenv("TRAINYARD_SPEC", json.dumps({"name": "p", "workload": "cnn"}))
    assert entry.main(["job", "--job-id", "p-1"]) == EXIT_PREEMPTED == 75
    lines = [parse_line(line) for line in capsys.readouterr().out.splitlines() if line.startswith("TRAINYARD_")]
    assert lines == [(PREEMPTED, {k: v for k, v in stopped.items() if k != "preempted"})]


def test_the_agreement_interval_is_what_fits_in_a_quarter_second_bounded():
    assert preempt.propose_interval(steps=10, seconds=0.1) == 25  # 10 ms steps
    assert preempt.propose_interval(steps=1, seconds=2.0) == 1  # slow steps: every step
    assert preempt.propose_interval(steps=100, seconds=0.01) == preempt.MAX_INTERVAL
    assert preempt.propose_interval(steps=0, seconds=0.0) == 1


def test_ranks_agree_every_step_first_then_at_the_agreed_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(preempt.time, "monotonic", lambda: clock[0])
    watch = preempt.StopWatch(None)  # no token: no polling thread; no process group: alone
    asked = []
    for step in range(1, 70):
        clock[0] += 0.01  # 10 ms a step
        if watch.due(step):
            asked.append(step)
            assert watch.agreed_reason(step=step) == preempt.NO_STOP
    first = preempt.AGREE_EVERY_STEP_FIRST
    assert asked[:first + 1] == list(range(1, first + 2))  # the first ones, each step
    # then every 25 steps (0.25 s of 10 ms steps): a request waits at most that long
    assert asked[first + 1:] == [first + 26, first + 51]
    watch.notice = type("N", (), {"seen": threading.Event()})()
    watch.notice.seen.set()
    assert not watch.due(first + 70)  # a rank that saw a request still waits for the agreed step
    assert watch.due(first + 76) and watch.agreed_reason(step=first + 76) == preempt.NODE_NOTICE

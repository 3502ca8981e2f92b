"""A worker's own SIGTERM (its node is leaving): checkpoint at the next step, then give the signal
back to Ray. The signal path without Ray: handler, agreement, grace, hand-back."""
import os
import signal
import threading
import time

import pytest

from trainyard.runner import preempt


@pytest.fixture
def restore_sigterm():
    before = signal.getsignal(signal.SIGTERM)
    yield before
    signal.signal(signal.SIGTERM, before)


def _wait(event: threading.Event | None = None, predicate=None, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (event is not None and event.is_set()) or (predicate is not None and predicate()):
            return True
        time.sleep(0.01)
    return False


def test_sigterm_to_the_worker_becomes_a_node_notice_and_is_handed_back_once(restore_sigterm):
    previous_calls = []
    previous = lambda signum, frame: previous_calls.append(signum)  # noqa: E731 (Ray's handler here)
    signal.signal(signal.SIGTERM, previous)
    notice = preempt.WorkerNotice(grace_s=60)
    assert notice.install()
    notice.active = True  # a training loop runs (worker_notice() sets it)
    os.kill(os.getpid(), signal.SIGTERM)  # the process lives on: it is asked to checkpoint and leave
    assert _wait(notice.seen)
    assert previous_calls == []
    watch = preempt.StopWatch(None, notice=notice)
    try:
        assert watch.agreed_reason() == preempt.NODE_NOTICE and watch.agreed()
        watch.leave_if_noticed()  # after the checkpoint: the signal goes to the old handler
        assert _wait(predicate=lambda: previous_calls == [signal.SIGTERM])
        watch.leave_if_noticed()  # once only
    finally:
        watch.close()
    time.sleep(0.1)
    assert previous_calls == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_second_sigterm_does_not_wait_for_the_step(restore_sigterm):
    previous_calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: previous_calls.append(signum))
    notice = preempt.WorkerNotice(grace_s=60)
    assert notice.install()
    notice.active = True  # a training loop runs (worker_notice() sets it)
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(notice.seen)
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(predicate=lambda: previous_calls == [signal.SIGTERM])


def test_no_step_boundary_within_the_grace_period_leaves_without_a_checkpoint(restore_sigterm):
    previous_calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: previous_calls.append(time.monotonic()))
    notice = preempt.WorkerNotice(grace_s=0.2)
    assert notice.install()
    notice.active = True  # a training loop runs (worker_notice() sets it)
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(notice.seen)
    assert _wait(predicate=lambda: previous_calls, timeout=5)
    assert previous_calls[0] - notice.received_at >= 0.2


def test_outside_the_training_loop_sigterm_is_rays_at_once(restore_sigterm):
    # before the loop (the group being built) and after it (Ray Train ending the group)
    previous_calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: previous_calls.append(signum))
    notice = preempt.WorkerNotice(grace_s=60)
    assert notice.install() and not notice.active
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(predicate=lambda: previous_calls == [signal.SIGTERM])
    assert not notice.seen.is_set()


def test_a_notice_pending_when_the_loop_ends_is_handed_on_then(restore_sigterm):
    previous_calls = []
    signal.signal(signal.SIGTERM, lambda signum, frame: previous_calls.append(signum))
    notice = preempt.WorkerNotice(grace_s=60)
    assert notice.install()
    notice.active = True
    os.kill(os.getpid(), signal.SIGTERM)
    assert _wait(notice.seen)
    preempt.StopWatch(None, notice=notice).close()  # the loop's finally
    assert _wait(predicate=lambda: previous_calls == [signal.SIGTERM])
    assert not notice.active


def test_the_driver_stop_outranks_a_node_notice(monkeypatch):
    notice = preempt.WorkerNotice(grace_s=60)
    notice.seen.set()
    flags = {"t": False}
    monkeypatch.setattr(preempt, "stop_requested", lambda token: flags[token])
    watch = preempt.StopWatch("t", poll_s=0.01, notice=notice)
    try:
        assert watch.agreed_reason() == preempt.NODE_NOTICE
        flags["t"] = True
        assert watch.seen.wait(5)
        assert watch.agreed_reason() == preempt.DRIVER_STOP
    finally:
        watch.close()


def test_off_the_main_thread_the_handler_is_not_installed_and_outside_ray_there_is_no_notice(restore_sigterm):
    import sys

    seen = []
    ray_before = sys.modules.get("ray")
    # Another test in this process may have left Ray running; what matters is that asking
    # for a notice never starts Ray itself.
    was_up = ray_before is not None and ray_before.is_initialized()

    def run():
        seen.append(preempt.WorkerNotice().install())
        seen.append(preempt.worker_notice(timeout_s=1))  # no worker actor to ask

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert seen == [False, None]
    assert signal.getsignal(signal.SIGTERM) == restore_sigterm
    ray = sys.modules.get("ray")
    if not was_up:
        assert ray is None or not ray.is_initialized()  # asking found no actor, and started no Ray


@pytest.mark.parametrize("raw, expected", [("", 20.0), ("5", 5.0), ("-1", 20.0), ("soon", 20.0)])
def test_the_grace_period_comes_from_the_environment(monkeypatch, raw, expected):
    monkeypatch.setenv(preempt.GRACE_ENV, raw)
    assert preempt.WorkerNotice().grace_s == expected

"""The controller loop's pacing: after a tick that took long (a long queue), the loop waits so
that ticks take at most `controller_max_share` of the time, and never less than the poll interval."""
from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from trainyard.config import Settings
from trainyard.controller.loop import Controller, pause_after


@pytest.mark.parametrize("took", [0.0, 0.001, 0.1, 0.25, 0.3, 2.0, 30.0])
@pytest.mark.parametrize("share", [0.05, 0.25, 0.5, 1.0])
def test_ticks_take_at_most_their_share_and_the_poll_interval_is_a_floor(took, share):
    wait = pause_after(took, poll_interval_s=1.0, max_share=share)
    assert wait >= 1.0
    if took:
        assert took / (took + wait) <= share + 1e-9


def test_a_cheap_tick_waits_the_poll_interval_and_a_long_one_three_times_itself():
    assert pause_after(0.01, poll_interval_s=1.0, max_share=0.25) == 1.0
    assert pause_after(0.6, poll_interval_s=1.0, max_share=0.25) == pytest.approx(1.8)
    assert pause_after(5.0, poll_interval_s=1.0, max_share=1.0) == 1.0  # 1: no pacing


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, "half"])
def test_a_share_outside_0_to_1_is_refused_by_name(bad):
    with pytest.raises(ValidationError, match="controller_max_share"):
        Settings(controller_max_share=bad)


def _loop_after_one_tick(tmp_path, tick) -> tuple[Controller, int]:
    """The real loop (start/stop) around `tick`, stopped once it chose its first pause."""
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", poll_interval_s=0.05)
    controller = Controller.__new__(Controller)  # the loop only: no store, no clusters
    controller.settings, controller.last_error, controller.last_wait_s = settings, None, None
    controller.last_tick_cpu_s = 0.0
    ticks: list[float] = []

    def counted():
        ticks.append(time.monotonic())
        tick()

    controller.tick = counted

    async def run():
        await controller.start()
        deadline = time.monotonic() + 30
        while (not ticks or controller.last_wait_s is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await controller.stop()

    asyncio.run(run())
    return controller, len(ticks)


def test_the_running_loop_waits_after_a_tick_that_used_the_cpu(tmp_path):
    """A tick that computes for 0.3 s of its thread's CPU: the pause the loop chose, shown in
    the status snapshot, is at least 3x that (the default share, 0.25)."""
    def busy():
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass

    controller, ticks = _loop_after_one_tick(tmp_path, busy)
    assert controller.last_wait_s is not None and controller.last_wait_s >= 0.9
    assert ticks == 1  # the next tick was still waiting when the loop stopped


def test_a_tick_that_waits_on_io_is_not_paced(tmp_path):
    """Waiting (on Ray's dashboard, the store's lock) leaves the CPU to the API: after a tick
    that slept 0.3 s the loop waits its poll interval only, so dispatch is not delayed."""
    controller, _ = _loop_after_one_tick(tmp_path, lambda: time.sleep(0.3))
    assert controller.last_wait_s == pytest.approx(0.05, abs=0.04)


def test_the_server_refuses_a_bad_share_with_its_name_and_no_traceback(tmp_path):
    """`python -m trainyard.api` with an out-of-range setting: one line naming the variable, the
    value and the fix, exit code 2, nothing started."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    platform_dir = Path(__file__).resolve().parents[2] / "platform"
    env = dict(os.environ, TRAINYARD_HOME=str(tmp_path / "home"), TRAINYARD_CONTROLLER_MAX_SHARE="2",
               PYTHONPATH=str(platform_dir))
    proc = subprocess.run([sys.executable, "-m", "trainyard.api", "--port", "1"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "TRAINYARD_CONTROLLER_MAX_SHARE" in proc.stderr and "'2'" in proc.stderr and "unset it" in proc.stderr
    assert not (tmp_path / "home" / "trainyard.db").exists()

"""The controller loop's pacing: after a tick that took long (a long queue), the loop waits so
that ticks take at most `controller_max_share` of the time, and never less than the poll interval."""
from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from trainyard.config import Settings
from trainyard.controller.loop import Controller, pause_after
from trainyard.controller.pacing import Pacer


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


def _loop_after_one_tick(tmp_path, tick, holder: list | None = None) -> tuple[Controller, int]:
    """The real loop (start/stop) around `tick`, stopped once it chose its first pause."""
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'ty.db'}", poll_interval_s=0.05)
    controller = Controller.__new__(Controller)  # the loop only: no store, no clusters
    controller.settings, controller.last_error, controller.last_wait_s = settings, None, None
    controller.last_tick_cpu_s = 0.0
    controller.pacer = Pacer(settings.controller_max_share)
    if holder is not None:
        holder.append(controller)
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


def test_a_tick_that_rests_within_itself_waits_that_much_less_after(tmp_path):
    """The tick's loops call pacer.step(): it rests as it computes, keeping to the share there
    too, and the loop's pause after it counts those rests (ticks still take <= share overall)."""
    def busy_paced(controller):
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            controller.pacer.step()

    holder: list[Controller] = []
    controller, ticks = _loop_after_one_tick(tmp_path, lambda: busy_paced(holder[0]), holder=holder)
    rested = controller.pacer.slept_s
    assert rested >= 0.6  # about 3x the CPU, in rests of ~3 ms
    assert controller.last_wait_s == pytest.approx(max(0.05, 0.9 - rested), abs=0.15)
    assert ticks == 1


class _Clock:
    def __init__(self):
        self.now = 0.0
        self.rests: list[float] = []

    def sleep(self, s):
        self.rests.append(s)


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5])
def test_the_pacer_keeps_a_computing_thread_to_its_share_at_every_grain(share):
    clock = _Clock()
    pacer = Pacer(share, grain_s=0.001, clock=lambda: clock.now, sleep=clock.sleep)
    with pacer.pacing():
        for _ in range(1000):
            clock.now += 0.0003  # 0.3 ms of CPU between two steps
            pacer.step()
    cpu = 0.3
    assert sum(clock.rests) == pytest.approx(cpu * (1 / share - 1), rel=0.05)
    assert pacer.slept_s == pytest.approx(sum(clock.rests))
    assert max(clock.rests) <= 0.0012 * (1 / share - 1) + 1e-9  # small rests, not one long one


def test_the_pacer_rests_only_inside_pacing_in_its_own_thread_and_never_at_share_1():
    import threading

    clock = _Clock()
    pacer = Pacer(0.25, grain_s=0.001, clock=lambda: clock.now, sleep=clock.sleep)
    clock.now = 5.0
    pacer.step()  # not pacing: a tick run by a test, a sync outside the loop
    with pacer.pacing():
        clock.now += 1.0
        other = threading.Thread(target=pacer.step)
        other.start()
        other.join()
    assert clock.rests == []  # another thread's step is not the tick's
    with pacer.pacing():
        clock.now += 1.0  # a long store read between two steps: the rest is capped
        pacer.step()
    assert clock.rests == [pytest.approx(0.02 * 3)]
    unpaced = Pacer(1.0, clock=lambda: clock.now, sleep=clock.sleep)
    with unpaced.pacing():
        clock.now += 1.0
        unpaced.step()
    assert len(clock.rests) == 1


def test_pause_after_counts_the_rests_taken_within_the_tick():
    assert pause_after(0.3, poll_interval_s=0.05, max_share=0.25, slept_s=0.5) == pytest.approx(0.4)
    assert pause_after(0.3, poll_interval_s=0.05, max_share=0.25, slept_s=0.9) == 0.05  # the floor
    for took, slept in [(0.1, 0.0), (0.3, 0.2), (1.0, 2.9)]:
        wait = pause_after(took, poll_interval_s=0.0, max_share=0.25, slept_s=slept)
        assert took / (took + slept + wait) <= 0.25 + 1e-9


def test_the_plan_is_the_same_paced_or_not_and_pace_is_called_every_256_jobs():
    from trainyard.scheduler import ClusterView, QueuedJob, plan_tick

    jobs = [QueuedJob(id=f"j{i}", project=f"p{i % 3}", priority=i % 2, seq=float(i), workers=1,
                      per_worker={"CPU": 1.0}) for i in range(600)]
    cluster = ClusterView(name="c", healthy=True, nodes_free=[{"CPU": 4.0}], nodes_total=[{"CPU": 8.0}])
    calls: list[int] = []
    paced = plan_tick(jobs, clusters=[cluster], now=0.0, pace=lambda: calls.append(1))
    plain = plan_tick(jobs, clusters=[cluster], now=0.0)
    assert len(calls) == 3  # jobs 0, 256, 512
    assert paced == plain


def test_the_server_process_freezes_its_startup_heap_and_runs_full_collections_rarely(tmp_path):
    """python -m trainyard.api's main, up to uvicorn's run (in a process of its own: main sets
    the umask, the import path and the collector): the GIL's switch interval, the frozen
    start-up heap and the collector's thresholds are in place when it serves."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from trainyard.api import __main__ as server_main

    probe = ("import gc, json, sys, uvicorn\n"
             "uvicorn.Server.run = lambda self: print(json.dumps([gc.get_threshold(), gc.get_freeze_count(), "
             "sys.getswitchinterval()]))\n"
             "from trainyard.api.__main__ import main\n"
             "main(['--port', '1', '--log-level', 'warning'])\n")
    platform_dir = Path(__file__).resolve().parents[2] / "platform"
    env = dict(os.environ, TRAINYARD_HOME=str(tmp_path / "home"), PYTHONPATH=str(platform_dir))
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    thresholds, frozen, switch = json.loads(proc.stdout.strip().splitlines()[-1])
    assert tuple(thresholds) == server_main.GC_THRESHOLDS and thresholds[2] >= 100
    assert frozen > 10_000 and switch == server_main.SWITCH_INTERVAL_S


def _busy_pacer(clock, counter, share=0.25, busy_share=0.05):
    return Pacer(share, busy_share=busy_share, activity=lambda: counter[0], grain_s=0.001,
                 clock=lambda: clock.now, sleep=clock.sleep)


def test_while_requests_come_in_the_pacer_rests_at_the_busy_share():
    clock, counter = _Clock(), [0]
    pacer = _busy_pacer(clock, counter)
    with pacer.pacing():
        clock.now += 0.002
        pacer.step()  # no request since the pacer was made: the idle share
        counter[0] += 3  # requests arrive during that rest
        clock.now += 0.002
        pacer.step()
        clock.now += 0.002
        pacer.step()  # none since the last rest: idle again
    assert clock.rests == [pytest.approx(0.002 * 3), pytest.approx(0.002 * 19), pytest.approx(0.002 * 3)]
    assert pacer.busy_rests == 1


def test_the_loop_pauses_at_the_share_that_held_when_its_tick_ended():
    clock, counter = _Clock(), [0]
    pacer = _busy_pacer(clock, counter)
    with pacer.pacing():
        clock.now += 0.0005  # too short to rest
    assert pacer.tick_share == 0.25
    assert not pacer.busy()
    counter[0] += 1
    assert pacer.busy() and pacer.busy()  # busy() only looks; the next rest or stretch end takes it
    with pacer.pacing():
        clock.now += 0.0005
    assert pacer.tick_share == 0.05 and not pacer.busy()
    took = 0.3
    assert took / (took + pause_after(took, poll_interval_s=0.0, max_share=pacer.tick_share)) <= 0.05 + 1e-9


def test_the_busy_share_never_exceeds_the_share_and_is_refused_outside_0_to_1_by_name():
    assert Pacer(0.02, busy_share=0.05, activity=lambda: 0).busy_share == 0.02
    assert Pacer(0.25).busy_share == 0.25 and not Pacer(0.25).busy()  # no gauge: never busy
    off = Pacer(1.0, busy_share=0.05, activity=lambda: 7)  # share 1: no pacing at all, busy or not
    with off.pacing():
        pass
    assert off.busy_share == 1.0 and off.tick_share == 1.0
    for bad in (0, -0.1, 1.5, "half"):
        with pytest.raises(ValidationError, match="controller_busy_share"):
            Settings(controller_busy_share=bad)


def test_the_server_counts_every_request_for_its_controller(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from test_api import TOKEN, unit_settings
    from trainyard.api.app import create_app

    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    app = create_app(unit_settings(tmp_path), run_controller=False)
    with TestClient(app) as client:
        pacer = app.state.ctx.controller.pacer
        assert pacer.busy_share == Settings().controller_busy_share
        before = pacer.activity()
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/v1/jobs").status_code == 401  # refused requests count too: they cost CPU
        assert client.post("/v1/jobs", content=b"{", headers={"Authorization": f"Bearer {TOKEN}",
                                                               "Content-Type": "application/json"}).status_code == 422
        assert pacer.activity() - before == 4
        assert pacer.busy()


@pytest.mark.parametrize("busy", [False, True])
def test_the_tick_holds_collections_off_only_while_the_api_is_idle(busy):
    import gc

    from trainyard.controller.dispatch import Dispatcher

    dispatcher = Dispatcher.__new__(Dispatcher)  # dispatch() only: its plan is replaced
    dispatcher.busy = lambda: busy
    seen: list[bool] = []
    dispatcher._dispatch = lambda: seen.append(gc.isenabled())
    assert gc.isenabled()
    dispatcher.dispatch()
    assert seen == [busy] and gc.isenabled()

"""The Trainer's meters: loss means per report and per progress window, step timing after a warm-up."""
from __future__ import annotations

from trainyard.runner.meters import Meters
from trainyard.runner.session import RayTrainSession, Session


def test_means_per_report_and_per_window_restart_after_each_take():
    meters = Meters(start_step=0, warmup=1)
    meters.step_done(1, {"loss": 1.0})
    meters.step_done(2, {"loss": 3.0, "aux": 1.0})
    assert meters.take_window() == {"loss": 2.0, "aux": 0.5}
    meters.step_done(3, {"loss": 5.0})
    assert meters.take_window() == {"loss": 5.0}
    assert meters.take_means() == {"loss": 3.0, "aux": 1.0 / 3}
    assert meters.take_means() == {}  # nothing since the last report


def test_timing_starts_after_the_warmup_steps_of_this_start():
    meters = Meters(start_step=10, warmup=2)  # a run resumed at step 10
    for step in (11, 12):
        meters.step_done(step, {"loss": 1.0})
    assert "train_steps_per_s" not in meters.timing()  # only the warm-up so far
    for step in (13, 14, 15):
        meters.step_done(step, {"loss": 1.0})
    timing = meters.timing()
    assert timing["train_steps_per_s"] > 0 and timing["train_step_time_median_s"] >= 0
    assert timing["trainyard_first_step_unix"] > 0


def test_both_sessions_have_the_members_the_trainer_uses():
    for name in ("device", "get_checkpoint", "report"):
        assert callable(getattr(RayTrainSession, name))

    class Fake:
        rank, world_size, local_world_size = 0, 1, 1

        def device(self):
            return "cpu"

        def get_checkpoint(self):
            return None

        def report(self, metrics, checkpoint=None):
            return None

    assert isinstance(Fake(), Session)

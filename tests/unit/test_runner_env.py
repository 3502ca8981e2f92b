"""The runner's driver-side Ray Train defaults: set when absent, an operator's value wins."""
from __future__ import annotations

from trainyard.runner import train


def test_controller_poll_default_is_set(monkeypatch):
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", raising=False)
    train.controller_env_defaults()
    import os

    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == train.CONTROLLER_POLL_S
    assert float(train.CONTROLLER_POLL_S) < 2.0  # faster than Ray Train's own default


def test_operator_setting_wins(monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1.5")
    train.controller_env_defaults()
    import os

    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "1.5"


def test_an_elastic_job_gives_up_on_a_stale_group_size_sooner(monkeypatch):
    import os

    from trainyard.runner import launch

    monkeypatch.delenv(launch.GROUP_START_TIMEOUT_ENV, raising=False)
    train.controller_env_defaults()
    assert launch.GROUP_START_TIMEOUT_ENV not in os.environ  # a fixed job keeps Ray's 60 s
    train.controller_env_defaults(elastic=True)
    assert os.environ[launch.GROUP_START_TIMEOUT_ENV] == launch.ELASTIC_GROUP_START_TIMEOUT_S
    monkeypatch.setenv(launch.GROUP_START_TIMEOUT_ENV, "45")
    train.controller_env_defaults(elastic=True)
    assert os.environ[launch.GROUP_START_TIMEOUT_ENV] == "45"

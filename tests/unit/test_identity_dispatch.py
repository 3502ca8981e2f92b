"""One identity end to end, the server's half: the job row's owner and project reach the driver
(TRAINYARD_USER, TRAINYARD_PROJECT) and the Ray job's metadata; the runner's checkpoint
storage sits under the project's prefix."""
from __future__ import annotations

import pytest

from test_controller_tick import server, submit  # noqa: F401  (fixture)
from trainyard.config import Settings
from trainyard.controller.runtime import runtime_env_for
from trainyard.errors import SpecError
from trainyard.store import jobs as jobs_repo


def test_the_driver_gets_owner_and_project_and_the_spec_cannot_override_them():
    spec = {"name": "x", "project": "vision", "env": {"TRAINYARD_USER": "mallory", "TRAINYARD_PROJECT": "nlp",
                                                      "MODE": "fast"}}
    env = runtime_env_for("j-1", spec, Settings(storage="file:///srv/ty"), owner="alice", project="vision")["env_vars"]
    assert (env["TRAINYARD_USER"], env["TRAINYARD_PROJECT"], env["MODE"]) == ("alice", "vision", "fast")


def test_dispatch_passes_the_job_rows_owner_and_project(server):  # noqa: F811
    client, ctx, fakes = server
    job = submit(client, project="vision")
    with ctx.db.session() as s:  # whose job it is: written by the submit route from the caller
        jobs_repo.find_job(s, job["id"]).owner = "alice"
    ctx.controller.tick()
    sub = fakes["local"].submissions[0]
    assert sub["metadata"]["trainyard_user"] == "alice" and sub["metadata"]["trainyard_project"] == "vision"
    env = sub["runtime_env"]["env_vars"]
    assert env["TRAINYARD_USER"] == "alice" and env["TRAINYARD_PROJECT"] == "vision"


def test_checkpoints_live_under_the_project_prefix(tmp_path):
    from trainyard.runner.storage import resolve_storage

    target = resolve_storage(f"file://{tmp_path}", project="vision")
    assert target.path == str(tmp_path / "vision") and (tmp_path / "vision").is_dir()
    assert target.job_uri("j-1") == f"file://{tmp_path}/vision/j-1"
    s3 = resolve_storage("s3://ckpt-bucket/team/", project="nlp-1", endpoint_url="http://127.0.0.1:1")
    assert (s3.uri, s3.path) == ("s3://ckpt-bucket/team/nlp-1", "ckpt-bucket/team/nlp-1")
    for bad in ("../other", "/abs", "Vision", ""):
        with pytest.raises(SpecError) as exc:
            resolve_storage(f"file://{tmp_path}", project=bad)
        assert exc.value.field == "project"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vision"]


def test_runs_take_the_servers_word_for_user_and_project(monkeypatch):
    from types import SimpleNamespace

    from trainyard.tracking import experiment_for, identity_tags

    spec = SimpleNamespace(project="vision")
    monkeypatch.delenv("TRAINYARD_USER", raising=False)
    monkeypatch.delenv("TRAINYARD_PROJECT", raising=False)
    assert identity_tags(spec) == {"trainyard.user": "unknown", "trainyard.project": "vision"}
    monkeypatch.setenv("TRAINYARD_USER", "alice")
    monkeypatch.setenv("TRAINYARD_PROJECT", "vision")
    assert identity_tags(spec) == {"trainyard.user": "alice", "trainyard.project": "vision"}
    assert experiment_for("vision", "baseline") == "vision/baseline"
    assert experiment_for("vision", "x" * 249) == "vision/" + "x" * 249
    with pytest.raises(SpecError, match="at most 249") as exc:
        experiment_for("vision", "x" * 250)
    assert exc.value.field == "tracking.experiment"

"""Resuming at another world size, the pure parts: accumulation steps, the loop's position,
which generators each rank starts from, when the universal form is needed and its cache."""
from __future__ import annotations

import pytest

from trainyard.runner import universal
from trainyard.runner.elastic import (Layout, gas_at_world, resume_micro, rng_plan, rng_seed, rng_source,
                                      saved_layout)
from trainyard.runner.universal import ensure_universal, needs_universal, universal_dir
from trainyard.specs import parse_job_spec


def test_a_fixed_job_keeps_its_accumulation():
    spec = parse_job_spec({"name": "e", "workload": "cnn", "resources": {"workers": 2},
                           "deepspeed": {"gradient_accumulation_steps": 3}})
    assert gas_at_world(spec, 2) == 3


def test_the_same_layout_resumes_at_the_saved_micro_step_untouched():
    layout = Layout(world=2, gas=2, per_epoch=5, batch_size=8)
    assert resume_micro(micro=7, step=3, saved=layout, now=layout) == (7, {})
    # a checkpoint from before layouts were recorded, same world: as before
    assert resume_micro(micro=7, step=3, saved=None, now=layout, saved_world=2) == (7, {})


def test_keep_batch_goes_on_at_the_same_step_and_the_next_unseen_sample():
    # 64 samples, micro-batch 8: 2 workers x 1 accumulation or 1 worker x 2 -> 16 per step
    two = Layout(world=2, gas=1, per_epoch=4, batch_size=8)
    one = Layout(world=1, gas=2, per_epoch=8, batch_size=8)
    micro, record = resume_micro(micro=6, step=6, saved=two, now=one)
    assert micro == 12 and one.where(micro) == two.where(6) == (1, 32)
    assert record["data_exact"] is True and record["skipped_samples"] == 0
    assert (record["resized_from_world"], record["world_size"]) == (2, 1)
    assert record["global_batch"] == record["global_batch_from"] == 16
    back, record = resume_micro(micro=12, step=6, saved=one, now=two)
    assert back == 6 and record["data_exact"] is True


def test_an_epoch_of_another_length_is_recorded_as_inexact():
    # 64 samples, micro-batch 8: 3 workers take 2 batches of their 22 each (48 an epoch),
    # 1 worker takes 8 (64 an epoch)
    three = Layout(world=3, gas=1, per_epoch=2, batch_size=8)
    one = Layout(world=1, gas=3, per_epoch=8, batch_size=8)
    micro, record = resume_micro(micro=3, step=3, saved=three, now=one)
    # 3 steps of 24: epoch 0 (48) and 24 into epoch 1 at 3 workers; 9 micro-batches of 8 at 1
    # worker: 8 into epoch 1. Recorded, with the 16 samples seen again
    assert micro == 9 and three.where(3) == (1, 24) and one.where(9) == (1, 8)
    assert record["data_exact"] is False and record["skipped_samples"] == -16


def test_scale_batch_changes_the_global_batch_and_says_so():
    saved = Layout(world=4, gas=1, per_epoch=2, batch_size=8)
    now = Layout(world=2, gas=1, per_epoch=4, batch_size=8)
    micro, record = resume_micro(micro=1, step=1, saved=saved, now=now)
    assert micro == 1 and (record["global_batch_from"], record["global_batch"]) == (32, 16)
    assert record["data_exact"] is False and record["skipped_samples"] == -16  # 16 samples seen again


def test_an_old_checkpoint_of_another_world_is_resumed_by_steps_with_an_unknown_position():
    micro, record = resume_micro(micro=4, step=4, saved=None, now=Layout(world=1, gas=2, per_epoch=8, batch_size=8),
                                 saved_world=2)
    assert micro == 8 and record["data_exact"] is None and record["resized_from_world"] == 2


def test_saved_layout_reads_the_state_or_none():
    state = {"world_size": 2, "gas": 1, "per_epoch": 4, "batch_size": 8, "micro_step": 3}
    assert saved_layout(state) == Layout(world=2, gas=1, per_epoch=4, batch_size=8)
    assert saved_layout({"world_size": 2, "micro_step": 3}) is None


def test_each_rank_restores_its_own_generators_or_is_seeded():
    assert rng_source(rank=1, saved_ranks=[0, 1]) == "restored"
    assert rng_source(rank=1, saved_ranks=[0]) == "seeded"
    assert rng_plan(world=1, saved_ranks=[0, 1]) == {"restored": [0], "seeded": []}
    assert rng_plan(world=3, saved_ranks=[0, 1]) == {"restored": [0, 1], "seeded": [2]}
    assert rng_plan(world=2, saved_ranks=[]) == {"restored": [], "seeded": [0, 1]}


def test_fresh_seeds_are_deterministic_and_differ_by_rank_and_step():
    assert rng_seed(seed=7, step=4, rank=1) == rng_seed(seed=7, step=4, rank=1)
    seeds = {rng_seed(seed=7, step=s, rank=r) for s in range(4) for r in range(4)}
    assert len(seeds) == 16 and all(0 <= s < 2 ** 32 for s in seeds)


def test_only_a_sharded_checkpoint_of_another_world_needs_the_universal_form():
    assert needs_universal(saved_world=2, world=1, zero_stage=1)
    assert needs_universal(saved_world=1, world=4, zero_stage=3)
    assert not needs_universal(saved_world=2, world=2, zero_stage=3)
    assert not needs_universal(saved_world=2, world=1, zero_stage=0)  # stage 0 holds full states


def test_a_node_converts_a_checkpoint_once(tmp_path, monkeypatch):
    calls = []

    def convert(tag_dir, output):
        calls.append(tag_dir)
        (tmp_path / "out").mkdir(exist_ok=True)
        import os

        os.makedirs(output)

    monkeypatch.setattr(universal, "_convert", convert)
    first = ensure_universal("/ckpt/a/model/ckpt", key="s3://b/run/checkpoint_1/model", root=str(tmp_path))
    again = ensure_universal("/other/download/model/ckpt", key="s3://b/run/checkpoint_1/model", root=str(tmp_path))
    other = ensure_universal("/ckpt/b/model/ckpt", key="s3://b/run/checkpoint_2/model", root=str(tmp_path))
    assert first == again != other and len(calls) == 2
    assert first == universal_dir("s3://b/run/checkpoint_1/model", root=str(tmp_path))


def test_a_conversion_that_died_is_redone(tmp_path, monkeypatch):
    def boom(tag_dir, output):
        import os

        os.makedirs(output)
        raise RuntimeError("killed")

    monkeypatch.setattr(universal, "_convert", boom)
    with pytest.raises(RuntimeError):
        ensure_universal("/c/model/ckpt", key="k", root=str(tmp_path))
    calls = []
    monkeypatch.setattr(universal, "_convert", lambda tag_dir, output: calls.append(output))
    ensure_universal("/c/model/ckpt", key="k", root=str(tmp_path))
    assert len(calls) == 1


def test_the_announce_line_names_every_change():
    from trainyard.runner.trainer import _resize_line

    line = _resize_line({"world_size": 1, "resized_from_world": 2, "elastic_batch": "keep", "global_batch_from": 16,
                         "global_batch": 16, "gas_from": 1, "gas": 2, "universal": ["model"],
                         "rng": {"restored": [0], "seeded": []}, "data_exact": True, "skipped_samples": 0})
    assert "resumed on 1 workers from a checkpoint of 2" in line and "accumulation 1 -> 2" in line
    assert "restored on ranks [0]" in line and "on ranks none" in line and "next unseen sample" in line
    line = _resize_line({"world_size": 2, "resized_from_world": 4, "global_batch": 16, "gas": 1,
                         "rng": {"restored": [0, 1], "seeded": []}, "data_exact": False, "skipped_samples": -16})
    assert "(-16 samples)" in line and "universal form for no module" in line


def test_the_node_cache_drops_conversions_unused_for_long_but_not_a_locked_or_fresh_one(tmp_path, monkeypatch):
    import fcntl
    import os
    import time

    monkeypatch.setattr(universal, "_convert", lambda tag_dir, output: os.makedirs(output))
    root = str(tmp_path)
    old, busy, fresh = (ensure_universal(f"/c/{k}/model/ckpt", key=k, root=root) for k in ("old", "busy", "fresh"))
    day_ago = time.time() - 2 * 24 * 3600
    for folder in (old, busy):
        os.utime(os.path.join(folder, universal._DONE), (day_ago, day_ago))
    with open(busy + ".lock", "a") as held:  # another rank converting or reading it now
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = universal.prune(root=root, older_than_s=24 * 3600)
    assert removed == [old] and not os.path.exists(old) and os.path.isdir(busy) and os.path.isdir(fresh)
    assert universal.prune(root=root, older_than_s=24 * 3600) == [busy]
    # a conversion of a key again after its removal converts anew, and each use keeps it fresh
    again = ensure_universal("/c/old/model/ckpt", key="old", root=root)
    assert again == old and os.path.exists(os.path.join(again, universal._DONE))
    monkeypatch.setenv(universal.KEEP_ENV, "3600")
    os.utime(os.path.join(fresh, universal._DONE), (day_ago, day_ago))
    ensure_universal("/c/other/model/ckpt", key="other", root=root)  # prunes on the way out
    assert not os.path.exists(fresh) and os.path.isdir(old)


def test_the_test_step_delay_ends_once_its_until_file_exists(tmp_path):
    from trainyard.runner.trainer import step_delay_for_test

    until = tmp_path / "regrown"
    assert step_delay_for_test(None, None) == 0.0 and step_delay_for_test("", str(until)) == 0.0
    assert step_delay_for_test("1.5", None) == 1.5
    assert step_delay_for_test("1.5", str(until)) == 1.5  # not there yet: still slowed
    until.touch()
    assert step_delay_for_test("1.5", str(until)) == 0.0

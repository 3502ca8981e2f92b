"""Elastic worker counts in the spec: `resources.workers: {min, max}` and how the global batch is kept."""
from __future__ import annotations

import pytest

from trainyard.specs.models import JobSpec, SweepSpec, gas_for_world

BASE = {"name": "elastic", "workload": "cnn"}


def _issues(workers, **extra):
    return [(i.field, i.message) for i in JobSpec.issues_for({**BASE, "resources": {"workers": workers}, **extra})]


def test_a_plain_number_is_a_fixed_job():
    spec = JobSpec.model_validate({**BASE, "resources": {"workers": 3}})
    assert (spec.resources.min_workers, spec.resources.max_workers, spec.resources.elastic) == (3, 3, False)
    assert spec.resources.total()["CPU"] == 3.0


def test_a_range_is_elastic_and_holds_at_most_max():
    spec = JobSpec.model_validate({**BASE, "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 2}})
    assert (spec.resources.min_workers, spec.resources.max_workers, spec.resources.elastic) == (1, 2, True)
    assert spec.resources.total() == {"CPU": 4.0}
    assert spec.model_dump()["resources"]["workers"] == {"min": 1, "max": 2}  # round-trips as written


@pytest.mark.parametrize("workers, field, words", [
    ("2", "resources.workers", "must be an integer"),
    (True, "resources.workers", "must be an integer"),
    (0, "resources.workers", "must be >= 1"),
    ({"min": 0, "max": 2}, "resources.workers.min", "must be >= 1"),
    ({"min": 1}, "resources.workers.max", "is required"),
    ({"min": 1, "max": 2, "mx": 3}, "resources.workers.mx", "unknown key"),
    ({"min": "1", "max": 2}, "resources.workers.min", "must be an integer"),
    ({"min": 3, "max": 2}, "resources.workers", "min (3) is above max (2)"),
])
def test_bad_worker_counts_name_the_field(workers, field, words):
    issues = _issues(workers)
    assert len(issues) == 1, issues  # one branch of the union answers, never both
    assert issues[0][0] == field and words in issues[0][1]


def test_keep_batch_refuses_a_range_that_cannot_split_the_batch():
    (field, message), = _issues({"min": 1, "max": 4})
    assert field == "resources.workers"
    assert "3 worker(s) cannot" in message and "multiple of 3" in message and "elastic_batch: scale" in message
    # the fix it names works, and so does the other one
    assert not _issues({"min": 1, "max": 4}, deepspeed={"gradient_accumulation_steps": 3})
    assert not _issues({"min": 1, "max": 4}, training={"elastic_batch": "scale"})


@pytest.mark.parametrize("gas, workers, expected", [
    (1, {"min": 1, "max": 2}, {1: 2, 2: 1}),
    (3, {"min": 1, "max": 4}, {1: 12, 2: 6, 3: 4, 4: 3}),
    (2, 2, {2: 2}),
])
def test_gas_keeps_the_global_batch(gas, workers, expected):
    spec = JobSpec.model_validate({**BASE, "resources": {"workers": workers},
                                   "deepspeed": {"gradient_accumulation_steps": gas}})
    for world, want in expected.items():
        assert gas_for_world(spec, world) == want
        assert gas_for_world(spec, world) * world == gas * spec.resources.max_workers


def test_scale_batch_keeps_the_accumulation():
    spec = JobSpec.model_validate({**BASE, "resources": {"workers": {"min": 1, "max": 4}},
                                   "training": {"elastic_batch": "scale"}})
    assert [gas_for_world(spec, w) for w in (1, 2, 3, 4)] == [1, 1, 1, 1]


def test_sweeps_refuse_elastic_trials():
    issues = SweepSpec.issues_for({**BASE, "resources": {"workers": {"min": 1, "max": 2}}})
    assert [i.field for i in issues] == ["resources.workers"]
    assert "write one number" in issues[0].message


def test_the_json_schema_offers_both_shapes():
    schema = JobSpec.model_json_schema()
    workers = schema["$defs"]["Resources"]["properties"]["workers"]
    kinds = {item.get("type") or item.get("$ref") for item in workers.get("oneOf") or workers.get("anyOf")}
    assert "integer" in kinds and any("WorkerRange" in str(k) for k in kinds)

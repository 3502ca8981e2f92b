"""The pieces under the spec parser: the closed YAML reader, storage confinement, gang packing
in time independent of the worker count, and the one-way layering of specs and sweeps."""
from __future__ import annotations

import ast
import random
import typing
from pathlib import Path

import pytest

from trainyard.errors import SpecError, SpecTooLargeError
from trainyard.scheduler import policy
from trainyard.specs import limits, load_yaml, models
from trainyard.specs.storage import confine_storage
from trainyard.sweeps import space

REPO = Path(__file__).resolve().parents[2]
ROOTS = ["file:///srv/ty/storage", "file:///data/shared/", "s3://ckpt-bucket/team"]


# ---------------------------------------------------------------------------- YAML


def test_yaml_reads_numbers_as_json_does_and_dates_as_text():
    data = load_yaml("a: 1e-7\nb: 2\nc: .5\nd: 2024-01-01\ne: '3'\n")
    assert data == {"a": 1e-7, "b": 2, "c": 0.5, "d": "2024-01-01", "e": "3"}


def test_duplicate_key_names_the_key_and_both_lines():
    with pytest.raises(SpecError) as info:
        load_yaml("name: a\ntraining: {lr: 0.1}\nx: 1\ntraining: {epochs: 2}\n")
    assert info.value.field == "training"
    assert "duplicate key 'training' (first at line 2) at line 4" in str(info.value)


def test_aliases_are_refused_before_anything_expands():
    laughs = "a: &a [x, x]\nb: &b [*a, *a]\n"
    with pytest.raises(SpecError, match="aliases"):
        load_yaml(laughs)


@pytest.mark.parametrize("text", ["a: " + "[" * 20000 + "]" * 20000, "a: " + "{b: " * 5000 + "1" + "}" * 5000])
def test_deep_nesting_is_a_413_not_a_recursion_error(text):
    with pytest.raises(SpecTooLargeError) as info:
        load_yaml(text)
    assert info.value.status == 413 and info.value.field == "a"


def test_a_deep_mapping_sent_as_json_is_walked_without_recursion():
    deep: dict = {}
    node = deep
    for _ in range(20000):
        node["k"] = {}
        node = node["k"]
    with pytest.raises(SpecTooLargeError):
        limits.check_document({"name": "x", "hyperparameters": deep})


def test_document_size_is_capped_before_it_is_read():
    with pytest.raises(SpecTooLargeError) as info:
        load_yaml("description: '" + "x" * (limits.MAX_SPEC_BYTES + 1) + "'\n")
    assert str(limits.MAX_SPEC_BYTES) in str(info.value)


# ---------------------------------------------------------------------------- models


def _int_fields(model) -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        args = typing.get_args(info.annotation) or (info.annotation,)
        if int in args:
            out.add(name)
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, models._Model):
                out |= _int_fields(arg)
    return out


def test_sweep_values_become_integers_for_every_integer_field():
    """quniform yields floats; apply_params must turn them into ints for each strict int field."""
    ints = _int_fields(models.JobSpec) | {"zero_stage"}
    assert ints <= space.INTEGER_FIELDS, ints - space.INTEGER_FIELDS


def test_errors_never_echo_env_values():
    from trainyard.specs import parse_job_spec

    with pytest.raises(SpecError) as info:
        parse_job_spec({"name": "a", "workload": "cnn", "env": {"TOKEN": "s3cr3t" * 3000}})
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in str(info.value.to_dict())


# ---------------------------------------------------------------------------- storage


@pytest.mark.parametrize("url, normalised", [
    ("file:///srv/ty/storage", "file:///srv/ty/storage"),
    ("file:///srv/ty/storage/./a//b/", "file:///srv/ty/storage/a/b"),
    ("file:///data/shared/x", "file:///data/shared/x"),
    ("s3://ckpt-bucket/team/run-1/", "s3://ckpt-bucket/team/run-1"),
])
def test_storage_under_a_root_is_accepted_normalised(url, normalised):
    assert confine_storage(url, roots=ROOTS) == normalised


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "file://../../../tmp/x", "file:///srv/ty/storage/../../etc",
    "file:///srv/ty/storage-evil/x", "file:///srv/ty", "s3://ckpt-bucket/../../x", "s3://ckpt-bucket/other",
    "s3://other-bucket/team", "hdfs://x/y", "file:///srv/ty/storage/a\nb",
])
def test_storage_outside_the_roots_is_refused_naming_them(url):
    with pytest.raises(SpecError) as info:
        confine_storage(url, roots=ROOTS)
    assert info.value.field == "checkpoint.storage"
    assert "file:///srv/ty/storage" in str(info.value)


def test_any_bucket_when_the_server_names_no_s3_root():
    assert confine_storage("s3://own-bucket/x/.//y/", roots=["file:///srv/ty"]) == "s3://own-bucket/x/y"


def test_settings_roots_always_hold_the_default_storage(monkeypatch, tmp_path):
    from trainyard.config import Settings

    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path))
    monkeypatch.delenv("TRAINYARD_STORAGE", raising=False)
    monkeypatch.setenv("TRAINYARD_STORAGE_ROOTS", "file:///data/a, s3://b-bucket/x")
    assert Settings.from_env().allowed_storage_roots() == [f"file://{tmp_path / 'storage'}", "file:///data/a",
                                                            "s3://b-bucket/x"]


# ---------------------------------------------------------------------------- packing


def _pack_one_by_one(bundle, count, nodes):
    left = [dict(n) for n in nodes]
    for _ in range(count):
        for node in left:
            if policy._fits_bundle(node, bundle):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                break
        else:
            return None
    return left


def test_packing_places_what_first_fit_one_by_one_places():
    rng = random.Random(7)
    for _ in range(300):
        nodes = [{"CPU": float(rng.choice([1, 2, 4, 8])), "GPU": float(rng.choice([0, 1, 2]))}
                 for _ in range(rng.randint(1, 5))]
        bundle = {"CPU": rng.choice([0.25, 0.5, 1.0, 3.0]), **({"GPU": 1.0} if rng.random() < 0.3 else {})}
        count = rng.randint(0, 40)
        got, want = policy.pack(bundle, count, nodes), _pack_one_by_one(bundle, count, nodes)
        assert (got is None) == (want is None), (bundle, count, nodes)
        if got is not None:
            for g, w in zip(got, want):
                assert g == pytest.approx(w, abs=1e-9)


def test_packing_cost_does_not_grow_with_the_worker_count(monkeypatch):
    calls = []
    real = policy._fits_bundle
    monkeypatch.setattr(policy, "_fits_bundle", lambda node, bundle: calls.append(1) or real(node, bundle))
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    assert policy.pack({"CPU": 1e-7}, 10**9, nodes) is None  # 4e7 would fit: refused
    assert policy.pack({"CPU": 1e-4}, 40_000, nodes) is not None
    assert len(calls) <= 8


# ---------------------------------------------------------------------------- layers


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_sweep_checks_import_nothing_from_specs():
    """parsing -> sweeps.validate, never the reverse (the old import cycle)."""
    found = _imports(REPO / "platform" / "trainyard" / "sweeps" / "validate.py")
    assert not any(name.startswith("trainyard.specs") for name in found), found


def test_spec_models_import_no_parsing_and_no_yaml():
    found = _imports(REPO / "platform" / "trainyard" / "specs" / "models.py")
    assert not {"yaml", "trainyard.specs.parsing", "trainyard.sweeps.validate"} & found, found

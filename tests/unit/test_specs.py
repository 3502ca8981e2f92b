"""Job specs: what is accepted, and how what is not gets explained."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainyard.errors import SpecError
from trainyard.specs import JobSpec, json_schemas, parse_job_spec

REPO = Path(__file__).resolve().parents[2]
MIN = "name: demo\nworkload: cnn\n"


def _err(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_job_spec(text)
    return info.value


def test_example_spec_parses_with_defaults():
    spec = parse_job_spec(REPO / "examples" / "cnn.yaml")
    assert spec.workload == "cnn"
    assert spec.resources.workers == 2
    assert spec.resources.total() == {"CPU": 2.0}
    assert spec.model_name() == "cnn-digits"


def test_minimal_spec_gets_defaults():
    spec = parse_job_spec(MIN)
    assert spec.deepspeed.zero_stage == "auto"
    assert spec.project == "default" and spec.priority == 0
    assert spec.failure.max_failures == 0


def test_malformed_yaml_names_the_line():
    err = _err("name: [demo\nworkload: cnn\n")
    assert "malformed YAML" in str(err) and "line" in str(err)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string"])
def test_non_mapping_is_rejected(text):
    assert "spec" in str(_err(text))


def test_unknown_key_suggests_the_right_one():
    err = _err(MIN + "ressources: {workers: 2}\n")
    assert err.issues[0].field == "ressources"
    assert "did you mean 'resources'" in str(err)


def test_unknown_nested_key_suggests_the_right_one():
    err = _err(MIN + "deepspeed: {zero_stag: 2}\n")
    assert err.issues[0].field == "deepspeed.zero_stag"
    assert "did you mean 'zero_stage'" in str(err)


def test_unknown_workload_lists_known_and_suggests():
    err = _err("name: demo\nworkload: cnnn\n")
    text = str(err)
    assert err.issues[0].field == "workload"
    assert "did you mean 'cnn'" in text and "Known:" in text


def test_workers_below_one():
    err = _err(MIN + "resources: {workers: 0}\n")
    assert str(err.issues[0]) == "resources.workers: must be >= 1, got 0"


@pytest.mark.parametrize("stage", [4, -1, "'two'", "true"])
def test_zero_stage_out_of_range(stage):
    err = _err(MIN + f"deepspeed: {{zero_stage: {stage}}}\n")
    assert err.issues[0].field == "deepspeed.zero_stage"
    assert "0, 1, 2, 3 or 'auto'" in str(err)


@pytest.mark.parametrize("stage,expected", [(0, 0), (3, 3), ("auto", "auto")])
def test_zero_stage_accepted(stage, expected):
    assert parse_job_spec(MIN + f"deepspeed: {{zero_stage: {stage}}}\n").deepspeed.zero_stage == expected


def test_quoted_zero_stage_is_not_read_as_a_number():
    err = _err(MIN + "deepspeed: {zero_stage: '2'}\n")
    assert err.issues[0].field == "deepspeed.zero_stage" and "write 2 without quotes" in str(err)


def test_storage_scheme_is_checked():
    err = _err(MIN + "checkpoint: {storage: 'hdfs://x/y'}\n")
    assert err.issues[0].field == "checkpoint.storage"
    assert "file:// or s3://" in str(err)


def test_cpu_offload_without_gpu_is_explained():
    err = _err(MIN + "deepspeed: {offload: cpu}\n")
    assert err.issues[0].field == "deepspeed.offload"
    assert "GPU" in str(err)


def test_all_problems_reported_at_once():
    err = _err(MIN + "resources: {workers: 0}\ntraining: {batch_size: 0}\n")
    fields = {issue.field for issue in err.issues}
    assert {"resources.workers", "training.batch_size"} <= fields


def test_error_body_has_field_value_fix():
    body = _err(MIN + "resources: {workers: 0}\n").to_dict()
    assert body["field"] == "resources.workers" and body["value"] == 0
    assert body["issues"][0]["message"].startswith("must be >= 1")


def test_bad_name_is_rejected():
    err = _err("name: Bad_Name\nworkload: cnn\n")
    assert err.issues[0].field == "name"


def test_spec_round_trips_through_json():
    spec = parse_job_spec(REPO / "examples" / "cnn.yaml")
    again = JobSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec


def test_checked_in_schema_is_current():
    path = REPO / "platform" / "trainyard" / "schemas" / "specs.json"
    current = json.loads(json.dumps(json_schemas(), sort_keys=True))
    assert path.exists(), "run `make schemas`"
    assert json.loads(path.read_text()) == current, "the spec models changed: run `make schemas`"


def test_parsing_specs_imports_no_torch():
    code = ("import sys; from trainyard.specs import parse_job_spec; "
            f"parse_job_spec(open({str(REPO / 'examples' / 'cnn.yaml')!r}).read()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_stdlib_platform_module_is_not_shadowed():
    import platform

    assert hasattr(platform, "system") and not (REPO / "platform" / "__init__.py").exists()


def test_warmup_longer_than_the_run_is_refused():
    err = _err(MIN + "training: {max_steps: 10, warmup_steps: 50}\n")
    assert err.issues[0].field == "training.warmup_steps"
    assert "<= training.max_steps (10), got 50" in str(err)


def test_lr_schedule_name_is_checked():
    err = _err(MIN + "training: {lr_schedule: cosin}\n")
    assert err.issues[0].field == "training.lr_schedule"


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]),
])
def test_lr_schedule_warms_up_then_decays_towards_zero(schedule, expected):
    spec = parse_job_spec(MIN + f"training: {{lr: 1.0, max_steps: 6, warmup_steps: 2, lr_schedule: {schedule}}}\n")
    assert [round(spec.training.lr_at(step, 6), 3) for step in range(6)] == expected


def test_default_lr_is_constant():
    spec = parse_job_spec(MIN + "training: {lr: 0.01}\n")
    assert {spec.training.lr_at(step, 100) for step in range(100)} == {0.01}

"""The user-written example family (examples/custom_workload): resolvable as module:attribute
from its folder, trainable with the default supervised step and its own loss_fn."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from trainyard.errors import SpecError  # noqa: E402
from trainyard.specs import parse_job_spec  # noqa: E402
from trainyard.workload import StepContext, resolve_workload, supervised_step  # noqa: E402

from trainyard.testing import engines_for  # noqa: E402

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "custom_workload"


@pytest.fixture
def on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FOLDER))
    yield
    sys.modules.pop("diabetes", None)


def test_job_spec_parses_and_points_at_the_folder():
    spec = parse_job_spec(FOLDER / "job.yaml")
    assert spec.workload == "diabetes:WORKLOAD" and spec.working_dir == "."


def test_diabetes_trains_evaluates_and_predicts(on_path):
    wl = resolve_workload("diabetes:WORKLOAD")
    assert wl.name == "diabetes" and wl.metric == "r2"
    torch.manual_seed(0)
    h = dict(wl.default_hparams)
    models = wl.build_models(h)
    train, test = wl.build_datasets(h, {})
    engines = engines_for(models, lr=3e-3)
    ctx = StepContext(hparams=h, loss_fn=wl.loss_fn)
    x, y = train.tensors
    losses = [supervised_step(engines, (x, y), ctx)["loss"] for _ in range(60)]
    assert losses[-1] < losses[0]
    assert wl.evaluate(models, test, ctx)["r2"] > 0.2
    out = wl.predictor(models, {"inputs": [[0.0] * 10, [0.01] * 10]}, h)
    assert len(out["predictions"]) == 2
    with pytest.raises(SpecError) as exc:
        wl.predictor(models, {"inputs": [[1, 2, 3]]}, h)
    assert exc.value.field == "inputs"


def test_the_authors_helpers_check_a_family_and_write_its_metadata(on_path, tmp_path):
    import json

    from trainyard.families import parse_meta
    from trainyard.testing import check_workload, write_meta

    wl = resolve_workload("diabetes:WORKLOAD")
    metrics = check_workload(wl, hparams={"hidden": 8}, steps=2, payload={"inputs": [[0.0] * 10]})
    assert "r2" in metrics
    table = json.loads(write_meta([wl], tmp_path).read_text())
    assert parse_meta(table["diabetes"]) == wl.meta()
    broken = dataclasses.replace(wl, evaluate=lambda models, dataset, ctx: {"mse": 1.0})
    with pytest.raises(AssertionError, match="must report 'r2'"):
        check_workload(broken, hparams={"hidden": 8}, steps=1)

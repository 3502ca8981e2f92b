"""A model of a user's workload carries that workload's code (MLflow code_paths); built-ins carry none."""
from __future__ import annotations

from pathlib import Path

from trainyard.tracking.model import workload_code_paths

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_workload"


def test_a_top_level_module_carries_its_file(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert workload_code_paths("diabetes:WORKLOAD") == [str(EXAMPLE / "diabetes.py")]


def test_a_module_in_a_package_carries_the_whole_top_level_package(tmp_path, monkeypatch):
    pkg = tmp_path / "acme_models"
    (pkg / "vision").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "vision" / "__init__.py").write_text("")
    (pkg / "vision" / "family.py").write_text("WORKLOAD = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert workload_code_paths("acme_models.vision.family:WORKLOAD") == [str(pkg)]


def test_built_in_and_unimportable_workloads_carry_nothing():
    assert workload_code_paths("cnn") == []
    assert workload_code_paths("workloads.cnn.workload:WORKLOAD") == []
    assert workload_code_paths("trainyard.workload:Workload") == []
    assert workload_code_paths("no_such_module_here:WORKLOAD") == []

"""The pure helpers of examples/demo.py (the demo itself runs under `make demo`), and the
demo's sweep spec, which must stay valid and small."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("trainyard_demo", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_durations_read_at_a_glance(demo):
    assert demo.fmt_duration(4.6) == "5 s"
    assert demo.fmt_duration(65) == "1:05"
    assert demo.fmt_duration(760) == "12:40"
    assert demo.fmt_duration(-1) == "0 s"


def test_digits_are_picked_with_distinct_labels_then_in_order(demo):
    assert demo.pick_digits([7, 7, 3, 1, 3, 2], n=3) == [0, 2, 3]
    assert demo.pick_digits([4, 4, 4], n=2) == [0, 1]  # too few labels: the first ones fill up
    assert demo.pick_digits([1], n=5) == [0]


def test_pixels_go_back_to_the_0_16_rows_the_endpoint_takes(demo):
    import numpy as np

    image = (np.arange(64, dtype=np.float32) % 17 / 16.0).reshape(1, 8, 8)
    pixels = demo.to_pixels(image)
    assert len(pixels) == 8 and all(len(row) == 8 for row in pixels)
    assert pixels[0][:3] == [0, 1, 2] and max(max(r) for r in pixels) == 16
    assert all(isinstance(v, int) for row in pixels for v in row)


def test_prediction_row_takes_the_predicted_class_probability(demo):
    answer = {"classes": [3], "probabilities": [[0.0, 0.01, 0.04, 0.95, 0, 0, 0, 0, 0, 0]]}
    assert demo.prediction_row(12, 3, answer) == (12, 3, 3, 0.95)


def test_promotion_events_of_one_candidate_and_their_verdict(demo):
    history = {"events": [
        {"kind": "compared", "candidate": "2"}, {"kind": "promoted", "candidate": "2"},
        {"kind": "compared", "candidate": "4"}, {"kind": "canary_started", "candidate": "4"},
    ]}
    events = demo.promotion_events(history, "4")
    assert [e["kind"] for e in events] == ["compared", "canary_started"]
    assert demo.verdict(events) is None
    assert demo.verdict(demo.promotion_events(history, 2))["kind"] == "promoted"


def test_the_demo_sweep_is_valid_small_and_promotes(demo):
    from trainyard.specs import load_yaml, parse_sweep_spec

    spec = parse_sweep_spec(load_yaml(demo.SWEEP_SPEC.read_text()), source=str(demo.SWEEP_SPEC))
    assert spec.workload == "cnn" and spec.resources.workers == 1
    assert spec.sweep.num_trials <= 4 and spec.sweep.max_concurrent_trials == 2
    assert spec.sweep.scheduler == "asha"
    assert spec.promote is not None
    assert spec.tracking.model_name == "cnn-digits"

"""The runner's step plan: how many steps a run has, and a warm-up longer than that refused
before training starts (an epochs-based run's length is only known at run time)."""
from __future__ import annotations

import pickle

import pytest

from trainyard.errors import EXIT_USAGE, SpecError
from trainyard.runner.train import plan_steps, spec_error_in
from trainyard.specs import TrainingSpec


def test_epochs_and_max_steps_give_the_run_length():
    assert plan_steps(TrainingSpec(epochs=3), steps_per_epoch=4) == (12, 12)
    assert plan_steps(TrainingSpec(epochs=3), steps_per_epoch=4, gas=2) == (12, 6)
    assert plan_steps(TrainingSpec(max_steps=5, epochs=99), steps_per_epoch=4, gas=2) == (10, 5)
    assert plan_steps(TrainingSpec(epochs=1), steps_per_epoch=1, gas=4) == (1, 1)  # at least one step


def test_a_warmup_as_long_as_the_run_is_fine():
    training = TrainingSpec(epochs=2, warmup_steps=8, lr_schedule="cosine")
    assert plan_steps(training, steps_per_epoch=4) == (8, 8)


def test_a_warmup_longer_than_an_epochs_based_run_is_refused_with_the_numbers_and_the_fix():
    # the spec alone cannot tell: 128 examples, batch 32, 1 worker -> 4 steps/epoch x 2 epochs
    training = TrainingSpec(epochs=2, batch_size=32, warmup_steps=50)
    with pytest.raises(SpecError) as info:
        plan_steps(training, steps_per_epoch=4, examples=128, workers=1)
    err = info.value
    assert err.field == "training.warmup_steps" and err.value == 50
    assert err.exit_code == EXIT_USAGE
    text = str(err)
    assert text.startswith("training.warmup_steps: must be <= the run's 8 optimizer steps")
    assert "got 50" in text
    assert "training.epochs 2 x 4 batches per epoch (128 training examples over 1 worker(s) at " \
           "training.batch_size 32)" in text
    assert "set training.warmup_steps to at most 8" in text


def test_gradient_accumulation_shortens_the_run_and_says_so():
    with pytest.raises(SpecError, match=r"run's 4 optimizer steps .* / deepspeed.gradient_accumulation_steps 2"):
        plan_steps(TrainingSpec(epochs=2, warmup_steps=5), steps_per_epoch=4, gas=2, examples=256, workers=2)


def test_a_worker_spec_error_is_found_inside_rays_wrapping():
    """Ray Train hands a worker's exception back in WorkerGroupError.worker_failures (rank ->
    exception, pickled); run_job re-raises it so the job ends as a spec error (exit 2)."""
    original = SpecError("must be <= the run's 8 optimizer steps, got 50", field="training.warmup_steps",
                         value=50, fix="set training.warmup_steps to at most 8")
    shipped = pickle.loads(pickle.dumps(original))  # what crosses from the worker
    assert str(shipped) == str(original) and shipped.field == "training.warmup_steps"

    class WorkerGroupError(RuntimeError):
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    group = WorkerGroupError({1: RuntimeError("gloo: connection reset"), 0: shipped})
    assert spec_error_in(group) is shipped
    try:
        try:
            raise group
        except WorkerGroupError as exc:
            raise RuntimeError("fit failed") from exc
    except RuntimeError as outer:
        assert spec_error_in(outer) is shipped
    assert spec_error_in(WorkerGroupError({0: RuntimeError("oom")})) is None
    assert spec_error_in(None) is None


def test_the_random_generators_round_trip_through_a_saved_state(tmp_path):
    """What a checkpoint saves per rank brings torch, NumPy and Python back to the same draws."""
    import random

    import numpy as np
    import torch

    from trainyard.runner.train import _rng_state, _set_rng_state

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    torch.save(_rng_state(), tmp_path / "rng.pt")
    first = (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=False))
    assert (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()) == first


def test_batches_leave_the_global_generator_alone():
    """An epoch's batches (TensorDataset slices or a DataLoader over other datasets) take no draw
    from torch's global generator, which dropout and noise use: a run resumed mid-epoch draws
    the same as the uninterrupted run."""
    import torch
    from torch.utils.data import Dataset, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    from trainyard.runner.train import _Batches

    class Items(Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return torch.tensor([float(i)])

    for ds in (TensorDataset(torch.arange(20.0).unsqueeze(1)), Items()):
        batches = _Batches(ds, DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=3), 4)
        torch.manual_seed(0)
        before = torch.get_rng_state()
        full = [b[0].flatten().tolist() if isinstance(b, (tuple, list)) else b.flatten().tolist()
                for b in batches.epoch(1)]
        assert torch.equal(torch.get_rng_state(), before), type(ds).__name__
        tail = [b[0].flatten().tolist() if isinstance(b, (tuple, list)) else b.flatten().tolist()
                for b in batches.epoch(1, start=2)]
        assert tail == full[2:]  # the same order from batch 2 on

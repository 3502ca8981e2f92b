"""The runner's torch optimizer on CPU: the multi-tensor (foreach) kernels, with the same numbers
as torch's default per-parameter loop."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from trainyard.runner.engines import _make_optimizer  # noqa: E402
from trainyard.specs.models import TrainingSpec  # noqa: E402


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Dropout(0.1), torch.nn.Linear(4 * 8 * 8, 10))


def _train(model, optimizer, steps: int = 25):
    torch.manual_seed(1)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_cpu_optimizer_uses_foreach_with_the_default_loops_numbers(name):
    training = TrainingSpec(optimizer=name, lr=0.003, weight_decay=0.01)
    ours_model = _model()
    default_model = copy.deepcopy(ours_model)
    ours = _make_optimizer(training, ours_model.parameters(), on_gpu=False)
    assert all(group["foreach"] is True for group in ours.param_groups)
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": 0.9} if name == "sgd" else {}
    default = cls(default_model.parameters(), lr=0.003, weight_decay=0.01, **extra)  # torch's CPU default: the loop
    for got, want in zip(_train(ours_model, ours), _train(default_model, default)):
        assert torch.equal(got, want)

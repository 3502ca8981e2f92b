"""The FLOP count of one step against the analytic count of a known model."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trainyard.costs.flops import count_step_flops  # noqa: E402

B, IN, HID, OUT = 8, 32, 64, 16


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))


def test_mlp_step_matches_the_analytic_count():
    # forward: 2*B*in*out per Linear. Backward: the weight gradient of each Linear (the same
    # again) and the input gradient of every Linear but the first (its input needs none).
    forward = 2 * B * IN * HID + 2 * B * HID * OUT
    backward = 2 * B * IN * HID + 2 * (2 * B * HID * OUT)
    assert count_step_flops(mlp(), torch.randn(B, IN)) == forward + backward
    # with an input that needs its gradient, backward is exactly twice forward
    x = torch.randn(B, IN, requires_grad=True)
    assert count_step_flops(mlp(), x) == 3 * forward


def test_counting_leaves_the_gradients_as_they_were():
    model = mlp()
    assert all(p.grad is None for p in model.parameters())
    count_step_flops(model, torch.randn(B, IN))
    assert all(p.grad is None for p in model.parameters())
    model(torch.randn(B, IN)).sum().backward()
    before = [p.grad.clone() for p in model.parameters()]
    count_step_flops(model, torch.randn(B, IN))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before))


def test_a_custom_step_and_keyword_batches():
    model = mlp()

    def step(m, batch):
        loss = torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])
        loss.backward()

    batch = {"x": torch.randn(B, IN), "y": torch.randn(B, OUT)}
    assert count_step_flops(model, batch, step_fn=step) == count_step_flops(mlp(), batch["x"])

    class Keyword(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x):
            return self.net(x)

    assert count_step_flops(Keyword(), {"x": batch["x"]}) == count_step_flops(mlp(), batch["x"])


def test_a_model_without_a_tensor_output_asks_for_a_step_fn():
    class Words(torch.nn.Module):
        def forward(self, x):
            return "no tensor"

    with pytest.raises(TypeError, match="step_fn"):
        count_step_flops(Words(), torch.randn(2))


def test_a_model_on_the_meta_device_is_counted_without_memory():
    # how a runner can count a model too large to run twice: build it on "meta"
    with torch.device("meta"):
        model, x = mlp(), torch.randn(B, IN)
    forward = 2 * B * IN * HID + 2 * B * HID * OUT
    assert count_step_flops(model, x) == forward + 2 * B * IN * HID + 2 * (2 * B * HID * OUT)

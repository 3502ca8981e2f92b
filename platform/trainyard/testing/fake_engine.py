"""A plain-torch stand-in for a DeepSpeed engine, for unit tests of workloads' train steps.

It offers what a train_step may use: calling it (forward), backward(loss), step(), and
`.module`. Pure logic: no DeepSpeed, no distributed backend. torch is imported only when
an engine is made.
"""
from __future__ import annotations

__all__ = ["FakeEngine", "engines_for"]


class FakeEngine:
    def __init__(self, module, *, lr: float = 1e-3, optimizer: str = "adam"):
        import torch

        self.module = module
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[optimizer]
        self.optimizer = cls(module.parameters(), lr=lr)
        self.steps = 0
        self.backwards = 0

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    forward = __call__

    def backward(self, loss):
        self.backwards += 1
        loss.backward()

    def step(self):
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += 1

    def parameters(self):
        return self.module.parameters()

    def train(self, mode: bool = True):
        self.module.train(mode)
        return self

    def eval(self):
        return self.train(False)


def engines_for(models, *, lr: float = 1e-3) -> dict[str, FakeEngine]:
    """One FakeEngine per module, as the runner makes one DeepSpeed engine per module."""
    return {name: FakeEngine(module, lr=lr) for name, module in models.items()}

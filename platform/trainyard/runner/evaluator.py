"""The workload's evaluation on the engines' modules, logged to the run."""
from __future__ import annotations

__all__ = ["Evaluator"]


class Evaluator:
    """Calls workload.evaluate on the eval set with the engines in eval mode (train mode after)."""

    def __init__(self, workload, engines, dataset, ctx, tracker):
        self.workload, self.engines, self.dataset, self.ctx, self.tracker = workload, engines, dataset, ctx, tracker
        self._modules = engines.modules()

    def __call__(self, step: int, epoch: int) -> dict[str, float]:
        self.ctx.step, self.ctx.epoch = step, epoch
        self.engines.eval()
        try:
            metrics = {k: float(v) for k, v in self.workload.evaluate(self._modules, self.dataset, self.ctx).items()}
        finally:
            self.engines.train()
        self.tracker.log_metrics(metrics, step=step)
        return metrics

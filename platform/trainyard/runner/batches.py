"""A rank's batches, epoch by epoch, resumable mid-epoch, and the run's length in steps."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Batches", "StepPlan", "plan_steps"]


class Batches:
    """The rank's batches for one epoch, from a DistributedSampler's index order.

    TensorDatasets are sliced with one index tensor per batch (no per-item collate).
    Other datasets go through a DataLoader over the same indices.
    """

    def __init__(self, dataset, sampler, batch_size: int):
        from torch.utils.data import TensorDataset

        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = batch_size
        self.tensors = dataset.tensors if isinstance(dataset, TensorDataset) else None
        n = len(sampler)
        self.steps_per_epoch = max(1, n // batch_size)

    def epoch(self, epoch: int, *, start: int = 0):
        import torch

        self.sampler.set_epoch(epoch)
        indices = list(self.sampler)
        bs = self.batch_size
        if self.tensors is not None:
            order = torch.as_tensor(indices, dtype=torch.long)
            for b in range(start, self.steps_per_epoch):
                idx = order[b * bs:(b + 1) * bs]
                yield tuple(t[idx] for t in self.tensors)
            return
        from torch.utils.data import DataLoader

        chosen = indices[start * bs:self.steps_per_epoch * bs]
        # a loader draws its base seed from its generator: a private one leaves the global
        # generator (dropout, noise) to the model, so a run resumed mid-epoch draws as the
        # uninterrupted run did (seeded as the sampler seeds its order: seed + epoch)
        generator = torch.Generator().manual_seed(int(getattr(self.sampler, "seed", 0)) + epoch)
        yield from DataLoader(self.dataset, batch_size=bs, sampler=chosen, drop_last=False, generator=generator)


@dataclass(frozen=True)
class StepPlan:
    """A run's length: micro-steps in all, optimizer steps, micro-steps per epoch and per step."""

    total_micro: int
    total_steps: int
    per_epoch: int
    gas: int


def plan_steps(training, *, steps_per_epoch: int, gas: int = 1, examples: int | None = None,
               workers: int = 1) -> tuple[int, int]:
    """(micro-steps, optimizer steps) of a run: training.max_steps, else training.epochs passes
    of `steps_per_epoch` micro-batches per worker (what the dataset's size, the batch size and
    the number of workers give), in optimizer steps of `gas` micro-steps.

    Raises SpecError when training.warmup_steps is longer than the run. The spec checks that
    against max_steps; an epochs-based run's length is only known here, at run time.
    """
    from trainyard.errors import SpecError

    total_micro = (training.max_steps * gas if training.max_steps
                   else training.epochs * steps_per_epoch)
    total_steps = max(1, total_micro // gas)
    if training.warmup_steps > total_steps:
        if training.max_steps:
            how = f"training.max_steps {training.max_steps}"
        else:
            how = f"training.epochs {training.epochs} x {steps_per_epoch} batches per epoch"
            if examples is not None:
                how += (f" ({examples} training examples over {workers} worker(s) at "
                        f"training.batch_size {training.batch_size})")
            if gas > 1:
                how += f" / deepspeed.gradient_accumulation_steps {gas}"
        raise SpecError(
            f"must be <= the run's {total_steps} optimizer steps ({how}), got {training.warmup_steps}",
            field="training.warmup_steps", value=training.warmup_steps,
            fix=f"set training.warmup_steps to at most {total_steps}, or train longer "
                "(more training.epochs, or training.max_steps)")
    return total_micro, total_steps

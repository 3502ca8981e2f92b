"""Model FLOPs of one training step, counted by torch on the worker (the MFU numerator).

Runner side only: torch is imported inside the functions, so that importing trainyard.costs
(the server does) never pulls it in. Counted with torch.utils.flop_counter.FlopCounterMode,
which counts matmuls, convolutions and attention (the terms MFU is defined by) and skips
elementwise work; the number is the model's FLOPs, not the hardware's, so recomputation
(activation checkpointing) is counted once more only if the step really reruns it.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["count_step_flops", "counted"]


def _default_step(model: Any, batch: Any) -> None:
    import torch

    if isinstance(batch, dict):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    loss = getattr(out, "loss", None)
    if loss is None:
        tensor = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"the model returned {type(out).__name__}; pass step_fn to say how a step runs")
        # a sum is the cheapest scalar whose backward reaches every parameter the output depends on
        loss = tensor.float().sum()
    loss.backward()


def count_step_flops(model: Any, example_batch: Any, *, step_fn: Callable[[Any, Any], Any] | None = None) -> int:
    """FLOPs of one forward and backward pass of `model` on `example_batch` (one worker's batch).

    `step_fn(model, batch)` runs a step its own way (a DeepSpeed engine's backward, a loss of
    the workload's); by default the model is called on the batch (a dict as keywords, a tuple as
    arguments) and the sum of its output (or its `.loss`) is backpropagated. The gradients the
    count leaves behind are put back as they were, so counting before training changes nothing.
    No optimizer step is taken. A model built under `torch.device("meta")` (with a meta batch)
    is counted the same, without memory or compute. Multiply by the number of data-parallel workers for the global
    figure that trainyard.costs.job_cost takes as `flops_per_step` (times the gradient
    accumulation steps, when one optimizer step runs several micro-batches).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = list(model.parameters()) if hasattr(model, "parameters") else []
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        with FlopCounterMode(display=False) as counter:
            (step_fn or _default_step)(model, example_batch)
        return int(counter.get_total_flops())
    finally:
        with torch.no_grad():
            for p, grad in zip(params, saved):
                p.grad = grad


def counted(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the model FLOPs it ran): a real training step, counted as it runs.

    Unlike count_step_flops, nothing is put back: the step's update is the training's own (the
    runner counts its first step this way, so counting costs one step's dispatch overhead and
    no extra compute). Only matmuls, convolutions and attention are counted, as in MFU."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    return out, int(counter.get_total_flops())

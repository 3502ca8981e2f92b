"""What the workers measured for the cost record: step time, model FLOPs of a step, the device and its peak.

Rank 0 builds one `usage` dict at the end of the loop. It travels on the TRAINYARD_RESULT line
(key "usage") to the controller, which joins it with the ledger's allocations in
trainyard.costs.job_cost, and goes to the job's MLflow run as `cost.*` params and metrics.

Peaks: a GPU is looked up by its torch device name in trainyard.costs.peaks (a device the
table does not know gets no peak, so no MFU: never a guess). A CPU job uses the table's "CPU"
entry, per core held: an upper bound for one modern x86 core (two 512-bit FMA units at 3 GHz),
so its MFU is a lower bound and is flagged `mfu_is_estimate`.
"""
from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["device_info", "usage_record", "COUNT_FLOPS_ENV"]

# "0" turns off counting the first step's FLOPs (MFU is then left out); an escape hatch for
# a model whose step the counter cannot run through
COUNT_FLOPS_ENV = "TRAINYARD_COUNT_FLOPS"


def count_flops_enabled() -> bool:
    return os.environ.get(COUNT_FLOPS_ENV, "1").strip() not in ("0", "false", "no")


def _cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()[:200]
    except OSError:
        pass
    import platform

    return platform.processor() or None


def device_info(*, on_gpu: bool, dtype: str) -> dict[str, Any]:
    """The device a worker trains on and its dense peak FLOP/s (per GPU, or per CPU core)."""
    from trainyard.costs.peaks import PEAKS, accelerator_from_device_name, peak_flops
    from trainyard.errors import SpecError

    if on_gpu:
        import torch

        name = torch.cuda.get_device_name()
        accelerator = accelerator_from_device_name(name)
        peak = None
        if accelerator is not None:
            try:
                peak = peak_flops(accelerator, dtype=dtype)
            except SpecError:  # a dtype the device has no units for (T4 bf16): no MFU
                peak = None
        return {"device_name": name, "accelerator_type": accelerator, "peak_flops_per_device": peak,
                "peak_per": "device", "peak_is_estimate": False, "dtype": dtype}
    cpu = PEAKS["CPU"]
    return {"device_name": _cpu_name(), "accelerator_type": None, "peak_flops_per_device": getattr(cpu, dtype),
            "peak_per": "core", "peak_is_estimate": True, "dtype": dtype}


def usage_record(*, steps: int, step_seconds: float, started_unix: float, flops_per_micro_batch: int | None,
                 gradient_accumulation: int, world_size: int, devices_per_worker: float, device: dict[str, Any],
                 now: float | None = None) -> dict[str, Any]:
    """Rank 0's figures for this worker group: steps run, seconds inside them, model FLOPs of one
    optimizer step on all workers, the device and its peak; MFU and busy fraction over the
    loop (the controller's record uses the ledger's held time instead of the loop's)."""
    now = time.time() if now is None else now
    loop_seconds = max(0.0, now - started_unix)
    flops_per_step = (flops_per_micro_batch * gradient_accumulation * world_size
                      if flops_per_micro_batch else None)
    peak = device.get("peak_flops_per_device")
    mfu = None
    if flops_per_step and peak and steps and step_seconds > 0 and devices_per_worker > 0:
        mfu = flops_per_step * steps / (peak * devices_per_worker * world_size * step_seconds)
        if mfu > 1:  # a wrong peak or FLOP count: refuse rather than show an impossible figure
            mfu = None
    return {**device, "steps": int(steps), "step_seconds": float(step_seconds), "loop_seconds": loop_seconds,
            "started_unix": started_unix, "flops_per_step": flops_per_step, "workers": world_size,
            "devices_per_worker": devices_per_worker, "gradient_accumulation": gradient_accumulation,
            "busy_fraction": (step_seconds / loop_seconds) if loop_seconds > 0 else None, "mfu": mfu}


def mlflow_figures(usage: dict[str, Any]) -> tuple[dict[str, str], dict[str, float]]:
    """(params, metrics) for the run; params never clash with the controller's JobCost params."""
    params = {"cost.device_name": str(usage.get("device_name")), "cost.peak_per": str(usage.get("peak_per")),
              "cost.peak_flops_per_device": str(usage.get("peak_flops_per_device"))}
    # busy fraction and MFU over the workers' own loop, named apart from the controller's record
    # (cost.busy_fraction, cost.mfu: over the time held), which goes to the same run when the job ends
    names = {"steps": "cost.steps", "step_seconds": "cost.step_seconds", "loop_seconds": "cost.loop_seconds",
             "flops_per_step": "cost.flops_per_step", "busy_fraction": "cost.loop_busy_fraction",
             "mfu": "cost.worker_mfu"}
    metrics = {name: float(usage[k]) for k, name in names.items() if usage.get(k) is not None}
    return params, metrics

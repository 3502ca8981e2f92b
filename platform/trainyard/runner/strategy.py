"""Pick a DeepSpeed setting for a job, and build the DeepSpeed config for it.

Pure logic: no torch at import time, no I/O except `detect_hardware` (which a worker
calls once). The planner works from the ZeRO memory formulas of the ZeRO paper
(Rajbhandari et al., 2020), per worker, for Adam-style optimizers:

    mixed precision (bf16/fp16):  params 2 B + grads 2 B + optimizer states 12 B
                                  (fp32 master copy, momentum, variance) = 16 B/param
    fp32:                         params 4 B + grads 4 B + optimizer states 8 B = 16 B/param

    stage 0: nothing sharded
    stage 1: optimizer states sharded over the N workers
    stage 2: + gradients sharded
    stage 3: + parameters sharded

plus activation headroom (a fraction of the worker's memory kept free for activations,
temporary buffers and the framework itself). Lower stages communicate less and run
faster, so `auto` takes the lowest stage that fits.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from trainyard.errors import CapacityError

__all__ = [
    "Hardware",
    "DeepSpeedPlan",
    "bytes_per_worker",
    "plan_deepspeed",
    "build_deepspeed_config",
    "detect_hardware",
    "count_parameters",
    "HEADROOM_FRACTION",
]

# Share of a worker's memory kept free for activations, comms buffers and the runtime.
HEADROOM_FRACTION = 0.3
# Fixed per-worker overhead: CUDA context + allocator slack on GPU, interpreter+torch on CPU.
FIXED_OVERHEAD_BYTES = {"cuda": 1 << 30, "cpu": 512 << 20}
GiB = 1 << 30


@dataclass(frozen=True)
class Hardware:
    """What one worker runs on. `memory_bytes` is the memory one worker may use."""

    device: str  # "cuda" or "cpu"
    memory_bytes: int
    bf16_supported: bool = False
    name: str = ""

    @property
    def on_gpu(self) -> bool:
        return self.device == "cuda"


@dataclass(frozen=True)
class DeepSpeedPlan:
    zero_stage: int
    precision: str  # bf16 | fp16 | fp32
    offload: str  # none | cpu
    backend: str  # nccl | gloo
    device: str
    num_params: int
    world_size: int
    estimated_bytes: int  # model states per worker, without headroom
    budget_bytes: int  # what model states may use per worker
    reason: str
    candidates: dict = field(default_factory=dict)  # stage -> estimated bytes (for the log)

    def as_params(self) -> dict[str, Any]:
        """Flat MLflow params (values are short strings)."""
        return {
            "deepspeed.zero_stage": self.zero_stage,
            "deepspeed.precision": self.precision,
            "deepspeed.offload": self.offload,
            "deepspeed.backend": self.backend,
            "deepspeed.device": self.device,
            "deepspeed.num_params": self.num_params,
            "deepspeed.estimated_gib_per_worker": round(self.estimated_bytes / GiB, 4),
            "deepspeed.budget_gib_per_worker": round(self.budget_bytes / GiB, 3),
            "deepspeed.reason": self.reason[:480],
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bytes_per_worker(num_params: int, *, stage: int, world_size: int, precision: str,
                     offload: str = "none") -> int:
    """Model-state bytes one worker holds on its device (params, grads, optimizer states).

    With `offload: cpu`, optimizer states (and in stage 3 the parameters) live in host
    memory instead, so they do not count against the device.
    """
    n = max(1, int(world_size))
    if precision in ("bf16", "fp16"):
        p_bytes, g_bytes, o_bytes = 2, 2, 12
    else:
        p_bytes, g_bytes, o_bytes = 4, 4, 8
    shard = {0: (1, 1, 1), 1: (1, 1, n), 2: (1, n, n), 3: (n, n, n)}[stage]
    params = p_bytes / shard[0]
    grads = g_bytes / shard[1]
    optim = o_bytes / shard[2]
    if offload == "cpu":
        optim = 0.0
        if stage == 3:
            params = 0.0
    return int(num_params * (params + grads + optim))


def _precision(requested: str, hw: Hardware) -> tuple[str, str]:
    if requested != "auto":
        return requested, f"precision {requested} as requested"
    if not hw.on_gpu:
        return "fp32", "fp32 because workers run on CPU"
    if hw.bf16_supported:
        return "bf16", f"bf16 because {hw.name or 'the GPU'} supports it"
    return "fp16", f"fp16 because {hw.name or 'the GPU'} lacks bf16"


def plan_deepspeed(ds: Any, *, num_params: int, world_size: int, hardware: Hardware) -> DeepSpeedPlan:
    """Choose stage/precision for `ds` (a trainyard.specs.DeepSpeedSpec or a mapping).

    Raises CapacityError when the requested (or every) stage cannot fit.
    """
    get = ds.get if isinstance(ds, dict) else (lambda k, d=None: getattr(ds, k, d))
    requested_stage = get("zero_stage", "auto")
    offload = get("offload", "none") or "none"
    precision, why_precision = _precision(get("precision", "auto") or "auto", hardware)
    if precision in ("bf16", "fp16") and not hardware.on_gpu:
        raise CapacityError(f"{precision} needs GPU workers; these workers run on CPU",
                            field="deepspeed.precision", value=precision,
                            fix="use precision: auto or fp32 on CPU")
    if offload == "cpu" and not hardware.on_gpu:
        raise CapacityError("offload to CPU needs GPU workers", field="deepspeed.offload",
                            value=offload, fix="use offload: none on CPU")
    fixed = FIXED_OVERHEAD_BYTES["cuda" if hardware.on_gpu else "cpu"]
    budget = max(0, int(hardware.memory_bytes * (1 - HEADROOM_FRACTION)) - fixed)
    candidates = {s: bytes_per_worker(num_params, stage=s, world_size=world_size,
                                      precision=precision, offload=offload) for s in range(4)}
    where = (f"{hardware.memory_bytes / GiB:.1f} GiB per worker on {hardware.device}"
             f" ({budget / GiB:.1f} GiB after {int(HEADROOM_FRACTION * 100)}% activation headroom)")
    size = f"{num_params / 1e6:.2f}M params x {world_size} workers"

    if requested_stage == "auto":
        fits = [s for s in range(4) if candidates[s] <= budget]
        if not fits:
            fix = ("add workers, use GPUs with more memory, or set deepspeed.offload: cpu"
                   if hardware.on_gpu and offload == "none" else "add workers or use bigger workers")
            raise CapacityError(
                f"the model does not fit even with ZeRO-3: needs {candidates[3] / GiB:.2f} GiB "
                f"per worker for model states, {where}", field="deepspeed.zero_stage",
                value="auto", fix=fix)
        stage = fits[0]
        why_stage = (f"ZeRO-{stage}: lowest stage that fits ({candidates[stage] / GiB:.3f} GiB model "
                     f"states per worker for {size}; {where})")
    else:
        stage = int(requested_stage)
        why_stage = f"ZeRO-{stage} as requested ({candidates[stage] / GiB:.3f} GiB model states per worker for {size})"
        if candidates[stage] > budget:
            better = [s for s in range(4) if candidates[s] <= budget]
            fix = (f"use zero_stage: {better[0]} or auto" if better
                   else "add workers or use bigger workers")
            raise CapacityError(
                f"ZeRO-{stage} needs {candidates[stage] / GiB:.2f} GiB per worker for model states, "
                f"more than the {where}", field="deepspeed.zero_stage", value=stage, fix=fix)
    backend = "nccl" if hardware.on_gpu else "gloo"
    reason = f"{why_stage}; {why_precision}; backend {backend}"
    if offload == "cpu":
        reason += "; optimizer states offloaded to CPU"
    return DeepSpeedPlan(zero_stage=stage, precision=precision, offload=offload, backend=backend,
                         device=hardware.device, num_params=int(num_params),
                         world_size=int(world_size), estimated_bytes=candidates[stage],
                         budget_bytes=budget, reason=reason,
                         candidates={str(k): v for k, v in candidates.items()})


def build_deepspeed_config(plan: DeepSpeedPlan, *, micro_batch_size: int,
                           gradient_accumulation_steps: int = 1,
                           gradient_clipping: float = 0.0,
                           steps_per_print: int = 1 << 30) -> dict[str, Any]:
    """The DeepSpeed config dict for one engine.

    The optimizer is always a torch optimizer handed to `deepspeed.initialize`, never
    DeepSpeed's own: its Adam variants compile C++/CUDA ops at start-up (minutes, and
    impossible on CPU-only images).
    """
    zero: dict[str, Any] = {"stage": plan.zero_stage}
    if plan.zero_stage >= 1:
        zero.update({"overlap_comm": plan.device == "cuda", "contiguous_gradients": True,
                     "reduce_bucket_size": 50_000_000})
    if plan.zero_stage >= 2:
        zero["allgather_bucket_size"] = 50_000_000
    if plan.zero_stage == 3:
        zero.update({"stage3_gather_16bit_weights_on_model_save": True,
                     "stage3_param_persistence_threshold": 100_000})
    if plan.offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if plan.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch_size),
        "gradient_accumulation_steps": int(gradient_accumulation_steps),
        "train_batch_size": int(micro_batch_size) * int(gradient_accumulation_steps) * plan.world_size,
        "zero_optimization": zero,
        "steps_per_print": steps_per_print,
        "wall_clock_breakdown": False,
        # a torch optimizer under ZeRO: DeepSpeed asks for this explicit opt-in
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
    }
    # always explicit: DeepSpeed's default is 1.0, which clips (and, without ZeRO, costs an
    # extra all-reduce of the gradient norm every step) when the spec asked for none
    config["gradient_clipping"] = float(gradient_clipping or 0.0)
    if plan.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif plan.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 12}
    return config


def detect_hardware(*, local_world_size: int = 1, use_gpu: bool | None = None) -> Hardware:
    """Describe the device this worker trains on. Call inside a worker."""
    import torch

    gpu = torch.cuda.is_available() if use_gpu is None else (use_gpu and torch.cuda.is_available())
    if gpu:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return Hardware(device="cuda", memory_bytes=int(props.total_memory),
                        bf16_supported=bool(torch.cuda.is_bf16_supported()), name=props.name)
    total = _host_memory_bytes()
    return Hardware(device="cpu", memory_bytes=total // max(1, local_world_size), name="cpu")


def _host_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:  # pragma: no cover - psutil ships with ray
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def count_parameters(modules) -> int:
    """Trainable parameters over a module or a dict of modules."""
    if isinstance(modules, dict):
        return sum(count_parameters(m) for m in modules.values())
    return sum(p.numel() for p in modules.parameters() if p.requires_grad)

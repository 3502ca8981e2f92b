"""One DeepSpeed engine per module of a workload, with its device, dtype and lr schedule."""
from __future__ import annotations

from typing import Any

__all__ = ["Engines", "worker_env"]


def worker_env(spec) -> dict[str, str]:
    """Environment the workers need before torch/deepspeed are imported."""
    env = {}
    if not spec.resources.gpus_per_worker:
        threads = str(max(1, int(spec.resources.cpus_per_worker)))
        # DeepSpeed would otherwise look for CUDA, then try to build C++ ops
        env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": threads})
    env.update({str(k): str(v) for k, v in (spec.env or {}).items()})
    return env


def _make_optimizer(training, params, *, on_gpu: bool):
    import torch

    kwargs: dict[str, Any] = {"lr": training.lr, "weight_decay": training.weight_decay}
    if not on_gpu:
        # torch picks the per-parameter Python loop on CPU; the multi-tensor (foreach) kernels do
        # the same arithmetic, element for element, with one dispatch per operation per step
        kwargs["foreach"] = True
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=0.9, **kwargs)
    if on_gpu:
        kwargs["fused"] = True
    cls = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    return cls(params, **kwargs)


def _torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _to_device(batch, device, dtype):
    """Move a batch (tensor / tuple / list / dict) to the device; floats to the engines' dtype."""
    import torch

    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point():
            return batch.to(device=device, dtype=dtype, non_blocking=True)
        return batch.to(device=device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device, dtype) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, dtype) for k, v in batch.items()}
    return batch


class Engines:
    """Every module's DeepSpeed engine (`by_name`, what train_step gets), on one device."""

    def __init__(self, by_name: dict, *, device, dtype, training):
        self.by_name, self.device, self.dtype, self.training = by_name, device, dtype, training
        self.scheduled = training.lr_schedule != "constant" or training.warmup_steps > 0

    @classmethod
    def build(cls, models: dict, *, training, ds_config: dict, precision: str, on_gpu: bool,
              session) -> "Engines":
        import deepspeed
        import torch

        if not on_gpu:
            # DeepSpeed's CPU backend compiles a shared-memory all-reduce op at first use
            # (about a minute, and it needs a C++ compiler). Only its inference path uses it:
            # training all-reduces go through torch.distributed (gloo).
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        if on_gpu:
            device = session.device()
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        by_name = {}
        for name, module in models.items():
            optimizer = _make_optimizer(training, module.parameters(), on_gpu=on_gpu)
            engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer,
                                              config=dict(ds_config), dist_init_required=False)
            by_name[name] = engine
        return cls(by_name, device=device, dtype=_torch_dtype(precision), training=training)

    def modules(self) -> dict:
        return {name: engine.module for name, engine in self.by_name.items()}

    def param_groups(self) -> list[dict]:
        # read each time: loading a checkpoint replaces the optimizers' groups
        return [group for engine in self.by_name.values()
                for group in getattr(engine.optimizer, "param_groups", None) or []]

    def train(self) -> None:
        for engine in self.by_name.values():
            engine.train()

    def eval(self) -> None:
        for engine in self.by_name.values():
            engine.eval()

    def to_device(self, batch):
        return _to_device(batch, self.device, self.dtype)

    def set_optimizer_values(self) -> None:
        """The spec's lr and weight decay win over a checkpoint's: a PBT sweep trial resumes
        another trial's weights with its own (perturbed) lr (same values for a plain resume)."""
        for group in self.param_groups():
            group["lr"] = self.training.lr
            group["weight_decay"] = self.training.weight_decay

    def schedule_lr(self, step: int, total_steps: int) -> float | None:
        """Set the scheduled lr for optimizer step `step`; return what the optimizer will step
        with (None when the lr is constant or no optimizer has groups)."""
        if not self.scheduled:
            return None
        groups = self.param_groups()
        lr = self.training.lr_at(step, total_steps)
        for group in groups:
            group["lr"] = lr
        return groups[0]["lr"] if groups else None

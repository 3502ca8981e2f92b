"""Peak dense FLOP/s per accelerator, the denominator of MFU.

Figures are the vendors' datasheet peaks for dense math (no 2:4 sparsity), per device:
- NVIDIA H100 / H200 / A100 / L4 / A10 / T4 / V100 datasheets (nvidia.com, "Tensor Core"
  rows for bf16/fp16, the non-tensor "FP32" row for fp32). NVIDIA prints the sparse figure
  first for Hopper, Ampere and Ada; the dense one is half of it.
- A10G is AWS's variant of the A10 and has no NVIDIA datasheet of its own: the A10's figures
  are used, which makes its MFU a slight underestimate or overestimate, not a measured one.
- H100 without a form factor is the SXM part (what p5 and a3 instances carry), as Ray reports
  "H100" for both.
- Google Cloud TPU system architecture pages (cloud.google.com/tpu/docs), bf16 per chip; Google
  publishes no fp32 peak, so none is recorded.
- CPU: an estimate, not a datasheet: one modern x86 core with two 512-bit FMA units at about
  3 GHz (2 units x 16 fp32 lanes x 2 FLOPs x 3e9 = 192 GFLOP/s fp32); bf16 is taken as the same,
  which is generous for cores without AMX. Its MFU is marked as an estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainyard.errors import SpecError, did_you_mean

__all__ = ["Peak", "PEAKS", "DTYPES", "peak_flops", "resolve_accelerator", "accelerator_from_device_name"]

DTYPES = ("bf16", "fp16", "fp32")
TERA = 1e12


@dataclass(frozen=True)
class Peak:
    name: str
    bf16: float | None  # FLOP/s per device, dense; None: the device has no such math
    fp16: float | None
    fp32: float | None
    per: str = "device"  # "device" or "core" (CPU)
    estimate: bool = False


PEAKS: dict[str, Peak] = {p.name: p for p in [
    Peak("H100-SXM", 989.4 * TERA, 989.4 * TERA, 66.9 * TERA),
    Peak("H100-PCIE", 756.5 * TERA, 756.5 * TERA, 51.2 * TERA),
    Peak("H200", 989.4 * TERA, 989.4 * TERA, 66.9 * TERA),
    Peak("A100-40G", 312 * TERA, 312 * TERA, 19.5 * TERA),
    Peak("A100-80G", 312 * TERA, 312 * TERA, 19.5 * TERA),
    Peak("L4", 121 * TERA, 121 * TERA, 30.3 * TERA),
    Peak("A10G", 125 * TERA, 125 * TERA, 31.2 * TERA),
    Peak("T4", None, 65 * TERA, 8.1 * TERA),
    Peak("V100", None, 125 * TERA, 15.7 * TERA),  # SXM2; the PCIe part is 112 / 14
    Peak("TPU-V4", 275 * TERA, None, None),
    Peak("TPU-V5LITEPOD", 197 * TERA, None, None),
    Peak("TPU-V5P", 459 * TERA, None, None),
    Peak("CPU", 192e9, 192e9, 192e9, per="core", estimate=True),
]}

# Ray's accelerator_type spellings (ray.util.accelerators) and common ones, to the table's names.
_ALIASES = {
    "H100": "H100-SXM",
    "H100-SXM5": "H100-SXM",
    "H100-80G": "H100-SXM",
    "A100": "A100-80G",  # same peak as 40G; the name only says which memory
    "A10": "A10G",
    "V100-SXM2": "V100",
    "TPU-V5E": "TPU-V5LITEPOD",
}


def resolve_accelerator(accelerator_type: str | None) -> str:
    """The table's name for a Ray accelerator type; None (no GPU) is the CPU entry."""
    if accelerator_type is None:
        return "CPU"
    if not isinstance(accelerator_type, str) or not accelerator_type.strip():
        raise SpecError("must be a non-empty string such as 'H100' or 'A10G'",
                        field="accelerator_type", value=accelerator_type)
    key = accelerator_type.strip().upper()
    key = _ALIASES.get(key, key)
    if key not in PEAKS:
        known = sorted(set(PEAKS) | set(_ALIASES))
        raise SpecError(
            f"no peak FLOP/s is recorded for {accelerator_type!r}.{did_you_mean(key, known)}".rstrip(),
            field="accelerator_type", value=accelerator_type,
            fix=f"use one of {', '.join(known)}, or add the device to trainyard.costs.peaks.PEAKS")
    return key


def peak_flops(accelerator_type: str | None, *, dtype: str = "bf16") -> float:
    """Dense peak FLOP/s of one device (one core for the CPU entry) at `dtype`."""
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}{did_you_mean(str(dtype), DTYPES)}",
                        field="dtype", value=dtype, fix=f"use one of {', '.join(DTYPES)}")
    peak = PEAKS[resolve_accelerator(accelerator_type)]
    value = getattr(peak, dtype)
    if value is None:
        other = next(d for d in DTYPES if getattr(peak, d) is not None)
        raise SpecError(f"{peak.name} has no {dtype} math units", field="dtype", value=dtype,
                        fix=f"train in {other} on {peak.name}, or record the job's dtype as {other}")
    return value


# torch.cuda.get_device_name() spellings, most specific first: (substring, table name)
_DEVICE_NAMES: tuple[tuple[str, str | None], ...] = (
    ("H200", "H200"), ("H100 PCIE", "H100-PCIE"), ("H100", "H100-SXM"),
    ("A100-SXM4-40GB", "A100-40G"), ("A100-PCIE-40GB", "A100-40G"), ("A100", "A100-80G"),
    ("A10G", "A10G"), ("A10", "A10G"), ("L40", None), ("L4", "L4"), ("T4", "T4"), ("V100", "V100"),
)


def accelerator_from_device_name(device_name: str | None) -> str | None:
    """The table's name for a device as torch names it ("NVIDIA H100 80GB HBM3" -> "H100-SXM"),
    or None when the table has no entry for it: its MFU is then left out, never guessed."""
    if not isinstance(device_name, str) or not device_name.strip():
        return None
    words = device_name.upper().replace("_", " ")
    for needle, name in _DEVICE_NAMES:
        if needle in words.replace("-", " ") or needle in words:
            return name
    return None

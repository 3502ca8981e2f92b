"""How the CLI shows a job's cost record (the `cost` field of a job: trainyard.costs.JobCost.to_dict())."""
from __future__ import annotations

from typing import Any

__all__ = ["cost_of", "gpu_hours_cell", "money_cell", "cost_rows"]


def cost_of(job: Any) -> dict[str, Any]:
    cost = job.get("cost") if isinstance(job, dict) else getattr(job, "cost", None)
    if cost is not None and not isinstance(cost, dict):
        cost = cost.model_dump() if hasattr(cost, "model_dump") else None
    return cost or {}


def _num(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def gpu_hours_cell(job: Any) -> str:
    cost = cost_of(job)
    if not cost:
        return ""
    # a CPU job holds no GPU: show its CPU-hours, marked, rather than a bare 0
    if not cost.get("gpu_hours") and cost.get("cpu_hours"):
        return f"{_num(cost['cpu_hours'], '.4f')} cpu-h"
    return _num(cost.get("gpu_hours"), ".4f")


def money_cell(job: Any) -> str:
    cost = cost_of(job)
    if not cost or cost.get("cost") is None:
        return ""
    return f"{_num(cost['cost'], '.2f')} {cost.get('currency') or ''}".strip()


def _pct(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def cost_rows(job: Any) -> list[tuple[str, str]]:
    """The rows of `jobs show`'s cost table; [] when the job has no record yet."""
    c = cost_of(job)
    if not c:
        return []
    money = money_cell(job) or "n/a (the cluster declares no node prices)"
    mfu = _pct(c.get("mfu")) + (" (estimate: CPU peak)" if c.get("mfu") is not None and c.get("mfu_is_estimate")
                                else "")
    lost = c.get("lost_total_seconds")
    rows = [
        ("wall / queued / running", f"{_num(c.get('wall_seconds'), '.1f')} s / {_num(c.get('queued_seconds'), '.1f')}"
                                    f" s / {_num(c.get('running_seconds'), '.1f')} s"),
        ("GPU-hours / CPU-hours", f"{_num(c.get('gpu_hours'), '.4f')} / {_num(c.get('cpu_hours'), '.4f')}"),
        ("money", money + (f" (prices of {c['prices_as_of']})" if c.get("prices_as_of") else "")),
        ("busy / goodput", f"{_pct(c.get('busy_fraction'))} / {_pct(c.get('goodput'))}"),
        ("MFU", mfu),
        ("device", f"{c.get('accelerator_type') or 'CPU'} ({c.get('dtype')})"),
        ("lost to restarts", f"{_num(lost, '.1f')} s, {c.get('restarts', 0)} restart(s)" if lost else ""),
    ]
    rows.extend(("warning", str(w)) for w in (c.get("warnings") or [])[:5])
    return [(k, v) for k, v in rows if v]

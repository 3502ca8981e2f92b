"""Resuming at another world size: the batch arithmetic, the loop's position and which random
generators each rank starts from. Pure policy: numbers in, decisions out (no torch)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

from trainyard.errors import SpecError

__all__ = ["Layout", "elastic_batch", "gas_at_world", "gas_rule", "resume_micro", "rng_plan", "rng_seed", "rng_source"]

KEEP, SCALE = "keep", "scale"


def elastic_batch(spec) -> str:
    """training.elastic_batch ("keep" when the spec has no such field yet)."""
    return str(getattr(spec.training, "elastic_batch", KEEP) or KEEP)


def _max_workers(spec) -> int:
    res = spec.resources
    value = getattr(res, "max_workers", None)
    return int(value if value is not None else res.workers)


def gas_at_world(spec, world: int) -> int:
    """Gradient accumulation steps at world size `world`: the one place the runner asks.

    The spec contract's `gas_for_world` answers when the spec package has it; `gas_rule` is
    the same rule for a spec package without it."""
    try:
        from trainyard.specs.models import gas_for_world  # type: ignore[attr-defined]
    except ImportError:
        gas_for_world = None
    if gas_for_world is not None:
        return int(gas_for_world(spec, world))
    return gas_rule(gas=int(spec.deepspeed.gradient_accumulation_steps), max_workers=_max_workers(spec),
                    world=world, elastic_batch=elastic_batch(spec))


def gas_rule(*, gas: int, max_workers: int, world: int, elastic_batch: str = KEEP) -> int:
    """keep: the global batch is the one at max_workers (batch_size x max_workers x gas), so
    gas_w = gas x max_workers / world; scale: gas stays and the global batch follows the world."""
    if elastic_batch == SCALE:
        return gas
    if world < 1 or (gas * max_workers) % world:
        raise SpecError(
            f"keeping the global batch (training.batch_size x {max_workers} workers x "
            f"deepspeed.gradient_accumulation_steps {gas}) on {world} workers needs "
            f"{gas * max_workers}/{world} accumulation steps, which is not a whole number",
            field="resources.workers", value=world,
            fix="choose worker counts that divide gradient_accumulation_steps x max workers, "
                "or set training.elastic_batch: scale")
    return gas * max_workers // world


@dataclass(frozen=True)
class Layout:
    """How a run walks its data: world size, accumulation steps, micro-batches per epoch per
    rank, micro-batch size. A checkpoint records the one it was saved with."""

    world: int
    gas: int
    per_epoch: int
    batch_size: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world * self.gas

    def where(self, micro: int) -> tuple[int, int]:
        """(epoch, samples of that epoch's shuffled order already taken) after `micro` micro-steps.

        A DistributedSampler shuffles the whole dataset with seed + epoch, the same order at
        every world size, and deals it out round robin: after b micro-batches of every rank the
        first b x batch_size x world samples of the epoch's order are taken."""
        return micro // self.per_epoch, (micro % self.per_epoch) * self.batch_size * self.world

    def as_dict(self) -> dict[str, int]:
        return {"world_size": self.world, "gas": self.gas, "per_epoch": self.per_epoch,
                "batch_size": self.batch_size}


def saved_layout(state: dict) -> Layout | None:
    """The layout a checkpoint's state records (None for one saved before layouts were)."""
    try:
        return Layout(world=int(state["world_size"]), gas=int(state["gas"]), per_epoch=int(state["per_epoch"]),
                      batch_size=int(state["batch_size"]))
    except (KeyError, TypeError, ValueError):
        return None


def resume_micro(*, micro: int, step: int, saved: Layout | None, now: Layout,
                 saved_world: int | None = None) -> tuple[int, dict[str, Any]]:
    """Where a resumed run starts (its micro-step count at `now`) and what changed, for the record.

    The same layout: the saved micro-step as is (exact resume). Another one: the run goes on at
    the same optimizer step (the lr schedule, checkpoint cadence and max_steps count steps), so
    micro = step x gas_now. Under keep-batch each step takes the same global batch at every
    world size, so that is also the next unseen sample when an epoch holds as many samples at
    both sizes; `data_exact` says whether it does (a rank drops its epoch's last partial
    micro-batch, so the tail can differ), and `skipped_samples` how far the data moved
    (negative: samples seen again)."""
    if saved == now or (saved is None and saved_world in (None, now.world)):
        return micro, {}
    new_micro = step * now.gas
    record: dict[str, Any] = {
        "resized_from_world": saved.world if saved else saved_world, "world_size": now.world,
        "gas_from": saved.gas if saved else None, "gas": now.gas,
        "global_batch_from": saved.global_batch if saved else None, "global_batch": now.global_batch,
        "step": step,
    }
    if saved is None:
        record.update(data_exact=None, skipped_samples=None)
        return new_micro, record
    before, after = saved.where(micro), now.where(new_micro)
    record["data_exact"] = before == after
    record["skipped_samples"] = (None if before[0] != after[0] else after[1] - before[1])
    return new_micro, record


def rng_source(*, rank: int, saved_ranks: Iterable[int]) -> str:
    """"restored" when the checkpoint holds this rank's generators, else "seeded"."""
    return "restored" if rank in set(saved_ranks) else "seeded"


def rng_plan(*, world: int, saved_ranks: Iterable[int]) -> dict[str, list[int]]:
    """Which ranks of a world restore their saved generators, and which are seeded afresh."""
    saved = set(saved_ranks)
    plan: dict[str, list[int]] = {"restored": [], "seeded": []}
    for rank in range(world):
        plan[rng_source(rank=rank, saved_ranks=saved)].append(rank)
    return plan


def rng_seed(*, seed: int, step: int, rank: int) -> int:
    """A rank's fresh seed when it has no saved generators: the same (seed, step, rank) always
    gives the same draws, and ranks and resumes differ from each other (a hash, not seed + rank,
    so that rank 1 at step s never repeats rank 0 at step s + 1). < 2**32 for NumPy."""
    digest = hashlib.sha256(f"trainyard-rng:{int(seed)}:{int(step)}:{int(rank)}".encode()).digest()
    return int.from_bytes(digest[:4], "big")

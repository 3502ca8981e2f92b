"""Weighted dominant-resource fairness (DRF) across projects.

A project's dominant share is max over resources of (held / capacity), divided by its
weight. The queue is ordered by repeatedly taking the next job (priority, then FIFO) of the
project with the lowest dominant share; an admitted job's demand is added to its project's
share before the next pick. Priority comes first across projects too: fair share decides
between jobs of the same priority (so an urgent job is never stuck behind a routine one
of a project under its share, and may preempt). So a project under its share goes ahead of one above it, and
within a project priority then FIFO is kept.

Cost: one sort per project plus a heap over projects: O(n log n) for n jobs, never
quadratic in the queue. A pick that does not change its project's allocation (the job
waits) ranks the project's next job from a per-shape memo, so a long queue of a few shapes
costs a dictionary lookup per job, not a dominant-share computation.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from operator import attrgetter
from typing import Iterable, Iterator, Mapping

from trainyard.scheduler.policy import QueuedJob

__all__ = ["FairQueue", "dominant_share", "fair_order"]

_rank = attrgetter("rank")  # (-priority, seq, id), kept on the job


def dominant_share(held: Mapping[str, float], capacity: Mapping[str, float], weight: float = 1.0) -> float:
    share = 0.0
    for key, amount in held.items():
        cap = capacity.get(key, 0.0)
        if cap > 0 and amount > 0:
            share = max(share, amount / cap)
    return share / weight


class FairQueue:
    """The queue in weighted-DRF order, consumed one job at a time.

    Iterate over it; call `admitted(job)` for the job just yielded when it is admitted, so
    its demand counts toward its project's share. A job that waits does not raise its
    project's share, so that project's next job comes next (a project under its share keeps
    going ahead). Equal shares go to the project whose next job was submitted first, so that
    ties do not favour a project by its name. `held`: what each project holds now
    (accounting space); `weights`: per project, default 1. O(log projects) per job after an
    O(n log n) sort.
    """

    def __init__(self, jobs: Iterable[QueuedJob], *, held: Mapping[str, Mapping[str, float]],
                 capacity: Mapping[str, float], weights: Mapping[str, float]):
        self._queues: dict[str, list[QueuedJob]] = defaultdict(list)
        for job in jobs:
            self._queues[job.project].append(job)
        self._capacity = capacity
        self._weights = weights
        self.alloc: dict[str, dict[str, float]] = {}
        # per project: the ranked share of a next job of each shape, until the project's
        # allocation changes (most picks are a waiting job of a shape seen before)
        self._shares: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._heap: list[tuple[int, float, float, str]] = []
        for project, queue in self._queues.items():
            # reversed, so that pop() from the end gives the next job; ties go by id, as in order_queue
            queue.sort(key=_rank, reverse=True)
            self.alloc[project] = dict(held.get(project, {}))
            self._heap.append(self._key(project, queue[-1]))
        heapq.heapify(self._heap)

    def share(self, project: str) -> float:
        return dominant_share(self.alloc.get(project, {}), self._capacity, self._weights.get(project, 1.0))

    def _key(self, project: str, head: QueuedJob) -> tuple[int, float, float, str]:
        # Rank by the share with half of the next job counted (Webster / Sainte-Lague
        # rounding): counting none of it favours light projects, counting all of it heavy
        # ones, by about half a job each time a project is picked.
        memo = self._shares[project]
        shape = head.shape
        share = memo.get(shape)
        if share is None:
            share = memo[shape] = self._half_share(project, head.demand)
        return (-head.priority, share, head.seq, project)

    def _half_share(self, project: str, demand: Mapping[str, float]) -> float:
        # dominant_share(alloc with half of `demand` added): the same numbers, no dicts built
        alloc = self.alloc.get(project, {})
        capacity = self._capacity
        share = 0.0
        for key, amount in alloc.items():
            if key not in demand:
                cap = capacity.get(key, 0.0)
                if cap > 0 and amount > 0:
                    share = max(share, amount / cap)
        for key, v in demand.items():
            amount = alloc.get(key, 0.0) + v / 2
            cap = capacity.get(key, 0.0)
            if cap > 0 and amount > 0:
                share = max(share, amount / cap)
        return share / self._weights.get(project, 1.0)

    def admitted(self, job: QueuedJob) -> None:
        mine = self.alloc.setdefault(job.project, {})
        for key, amount in job.demand.items():
            mine[key] = mine.get(key, 0.0) + amount
        self._shares.pop(job.project, None)

    def __iter__(self) -> Iterator[QueuedJob]:
        heap = self._heap
        if not heap:
            return
        top = heapq.heappop(heap)
        while True:
            project = top[-1]
            queue = self._queues[project]
            yield queue.pop()
            if queue:
                # the same as push then pop, without touching the heap while this project
                # stays first (keys never tie: they end with the project's name)
                top = heapq.heappushpop(heap, self._key(project, queue[-1]))
            elif heap:
                top = heapq.heappop(heap)
            else:
                return


def fair_order(jobs: Iterable[QueuedJob], *, held: Mapping[str, Mapping[str, float]],
               capacity: Mapping[str, float], weights: Mapping[str, float]) -> list[QueuedJob]:
    """The queue in weighted-DRF order, as if every job were admitted in turn (the order in
    which a fully free fleet would start them)."""
    fq = FairQueue(jobs, held=held, capacity=capacity, weights=weights)
    out = []
    for job in fq:
        out.append(job)
        fq.admitted(job)
    return out

"""Weighted dominant-resource fairness (DRF) across projects.

A project's dominant share is max over resources of (held / capacity), divided by its
weight. The queue is ordered by repeatedly taking the next job (priority, then FIFO) of the
project with the lowest dominant share; an admitted job's demand is added to its project's
share before the next pick. Priority comes first across projects too: fair share decides
between jobs of the same priority (so an urgent job is never stuck behind a routine one
of a project under its share, and may preempt). So a project under its share goes ahead of one above it, and
within a project priority then FIFO is kept.

Cost: one sort per project plus a heap over projects: O(n log n) for n jobs, never
quadratic in the queue.
"""
from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Iterable, Iterator, Mapping

from trainyard.scheduler.model import demand_of
from trainyard.scheduler.policy import QueuedJob

__all__ = ["FairQueue", "dominant_share", "fair_order"]


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
        self._heap: list[tuple[int, float, float, str]] = []
        for project, queue in self._queues.items():
            # reversed, so that pop() from the end gives the next job; ties go by id, as in order_queue
            queue.sort(key=lambda j: (-j.priority, j.seq, j.id), reverse=True)
            self.alloc[project] = dict(held.get(project, {}))
            self._heap.append(self._key(project, queue[-1]))
        heapq.heapify(self._heap)

    def share(self, project: str) -> float:
        return dominant_share(self.alloc.get(project, {}), self._capacity, self._weights.get(project, 1.0))

    def _key(self, project: str, head: QueuedJob) -> tuple[int, float, float, str]:
        # Rank by the share with half of the next job counted (Webster / Sainte-Lague
        # rounding): counting none of it favours light projects, counting all of it heavy
        # ones, by about half a job each time a project is picked.
        alloc = self.alloc.get(project, {})
        half = {k: alloc.get(k, 0.0) + v / 2 for k, v in demand_of(head.per_worker, head.workers).items()}
        share = dominant_share({**alloc, **half}, self._capacity, self._weights.get(project, 1.0))
        return (-head.priority, share, head.seq, project)

    def admitted(self, job: QueuedJob) -> None:
        mine = self.alloc.setdefault(job.project, {})
        for key, amount in demand_of(job.per_worker, job.workers).items():
            mine[key] = mine.get(key, 0.0) + amount

    def __iter__(self) -> Iterator[QueuedJob]:
        while self._heap:
            project = heapq.heappop(self._heap)[-1]
            queue = self._queues[project]
            yield queue.pop()
            if queue:
                heapq.heappush(self._heap, self._key(project, queue[-1]))


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

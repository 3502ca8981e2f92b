"""Demand-driven autoscaling: tell each autoscaling cluster what Trainyard's queue needs.

Ray's autoscaler only sees what reaches Ray. A job that Trainyard holds in its own queue
(the scheduler said "wait"), or one whose driver is still importing torch, is invisible to
it, so nodes would come late or never. The controller therefore asks the cluster's
autoscaler for the resources itself, with `ray.autoscaler.sdk.request_resources(bundles=...)`
(sent by `trainyard.clusters.demand_agent`, see `DemandSender`).

`request_resources` is a *floor on the cluster's size*, checked against node totals with
usage ignored (Ray: "ensure_min_cluster_size ... we don't take into account existing
usage"), and it replaces the previous request. In Ray 2.60 it has one writer: the
AutoscalingCoordinator actor, with which Ray Train v2 (every TorchTrainer) and Ray Data
register their own needs and which sends the union of all requesters' bundles (see
trainyard.clusters.demand_agent, which registers as one more requester). So the bundles
sent are what Ray does not know about yet: one bundle per worker of every waiting job the
cluster is the target of, and of every job dispatched to it whose trainer has not had time
to register its own request (not yet RUNNING, or RUNNING for less than a grace period).
Jobs that run longer request for themselves; counting them here too would double them in
the union and launch nodes nobody uses. Nodes that a request covers are never removed as
idle, so the request is withdrawn as soon as that set is empty.

Rules, per cluster that autoscales (registered with `max_resources`):
  - A request starts when everything Trainyard has and wants there (running jobs included)
    does not fit the nodes that exist now (a job waits for nodes, or was dispatched ahead of
    them). Until then nothing is sent: a cluster that never needs to grow never sees a
    demand job.
  - Once started, it follows the set (a job starting or ending changes it) and is withdrawn
    when the set is empty. It is not dropped merely because the nodes came up: the jobs
    that asked may not have placed their workers yet, and an idle node goes in seconds.
  - At server start the last request is unknown (the previous server may have left one
    behind), so the first pass withdraws it when nothing is wanted.
  - Sent only when it changes: bundles are compared as a sorted multiset.

This module is pure (no Ray, no store, no clock): `plan_demand` computes the sets,
`DemandTracker` decides what to send. The I/O lives in `DemandSender` (the Ray Jobs REST
call) and `trainyard.controller.demand` (reads the store once per tick).
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from trainyard.scheduler import WAIT, ClusterView, Decision, QueuedJob, fits, pack

__all__ = [
    "Bundle", "ClusterDemand", "plan_demand", "canonical", "DemandTracker", "DemandSender",
    "agent_entrypoint", "DEMAND_JOB_PREFIX",
]

Bundle = dict[str, float]
DEMAND_JOB_PREFIX = "trainyard-demand-"


@dataclass(frozen=True)
class ClusterDemand:
    """What Trainyard has and wants on one autoscaling cluster."""

    cluster: str
    bundles: tuple[tuple[tuple[str, float], ...], ...]  # canonical() of all bundles
    waiting: tuple[str, ...] = ()  # job ids held in the queue for this cluster
    active: tuple[str, ...] = ()  # job ids dispatched to it that do not request for themselves yet
    fits_now: bool = True  # whether all of Trainyard's jobs there fit the nodes that exist now

    def as_lists(self) -> list[Bundle]:
        return [dict(b) for b in self.bundles]


def canonical(bundles: Iterable[Mapping[str, float]]) -> tuple[tuple[tuple[str, float], ...], ...]:
    """A bundle list as a sorted multiset of sorted items: equal demands compare equal."""
    out = []
    for bundle in bundles:
        items = tuple(sorted((str(k), float(v)) for k, v in bundle.items() if float(v) > 0))
        if items:
            out.append(items)
    return tuple(sorted(out))


def _worker_bundles(job: QueuedJob) -> list[Bundle]:
    # an elastic job runs on what it gets from min up, and grows when nodes come: ask for its max
    return [dict(job.per_worker) for _ in range(job.most_workers)]


def _free_cpu(view: ClusterView) -> float:
    return sum(n.get("CPU", 0.0) for n in view.nodes_free)


def _target(job: QueuedJob, clusters: Sequence[ClusterView]) -> str | None:
    """The autoscaling cluster a waiting job counts against: its pinned cluster, else the
    healthy autoscaling cluster that can ever hold it with the most free CPU (then by name),
    the same preference as placement, so that one job grows one cluster, not all."""
    candidates = [c for c in clusters
                  if (job.cluster is None or c.name == job.cluster)
                  and c.max_nodes is not None and c.healthy and fits(job, c.capacity_nodes())]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (-_free_cpu(c), c.name)).name


def plan_demand(queue: Sequence[QueuedJob], decisions: Sequence[Decision], clusters: Sequence[ClusterView], *,
                active: Mapping[str, Sequence[QueuedJob]],
                live_nodes: Mapping[str, Sequence[Mapping[str, float]]],
                running: Mapping[str, Sequence[QueuedJob]] | None = None) -> dict[str, ClusterDemand]:
    """One ClusterDemand per autoscaling cluster (those with `max_nodes`).

    queue/decisions: the pending jobs and the scheduler's answer for each; only WAIT counts
    (DISPATCH becomes active next, REJECT never runs). active: per cluster, the jobs
    dispatched to it that Ray does not know the needs of yet (requested). running: per
    cluster, the other jobs on it, which ask Ray themselves (only checked for fit).
    live_nodes: per cluster, the totals of the nodes that exist now (what the dashboard
    reported).
    """
    by_id = {j.id: j for j in queue}
    waiting: dict[str, list[QueuedJob]] = {}
    for decision in decisions:
        job = by_id.get(decision.job_id)
        if decision.action != WAIT or job is None:
            continue
        target = _target(job, clusters)
        if target is not None:
            waiting.setdefault(target, []).append(job)
    out: dict[str, ClusterDemand] = {}
    for view in clusters:
        if view.max_nodes is None:
            continue  # no autoscaler limits registered: nothing would act on a request
        held = list(active.get(view.name, ()))
        wanted = waiting.get(view.name, [])
        bundles = [b for job in held + wanted for b in _worker_bundles(job)]
        others = [b for job in (running or {}).get(view.name, ()) for b in _worker_bundles(job)]
        nodes = [dict(n) for n in live_nodes.get(view.name, ())]
        fits_now = _fits_all(bundles + others, nodes)
        out[view.name] = ClusterDemand(cluster=view.name, bundles=canonical(bundles),
                                       waiting=tuple(j.id for j in wanted), active=tuple(j.id for j in held),
                                       fits_now=fits_now)
    return out


def _fits_all(bundles: Sequence[Bundle], nodes: Sequence[Mapping[str, float]]) -> bool:
    """Whether every bundle fits the nodes at once, biggest first (first fit)."""
    left = [dict(n) for n in nodes]
    for bundle in sorted(bundles, key=lambda b: (-len(b), -sum(b.values()))):
        placed = pack(bundle, 1, left)
        if placed is None:
            return False
        left = placed
    return True


@dataclass
class _State:
    sent: tuple | None = None  # canonical bundles Ray confirmed (None: unknown)
    in_flight: tuple | None = None  # canonical bundles of the demand job still running
    retry_at: float = 0.0
    failures: int = 0


@dataclass
class DemandTracker:
    """Decides, per cluster, whether a demand must be sent now. Pure: the caller passes
    `now` and reports what happened with `started`, `confirmed` and `failed`."""

    retry_after_s: float = 10.0
    states: dict[str, _State] = field(default_factory=dict)

    def wanted(self, demand: ClusterDemand) -> tuple | None:
        """The bundles this cluster should have requested now (None: leave it alone)."""
        if not demand.bundles:
            return ()  # withdraw (to_send skips it when that is what Ray has already)
        state = self.states.get(demand.cluster, _State())
        requesting = bool(state.sent) or bool(state.in_flight)
        if requesting or not demand.fits_now:
            return demand.bundles
        return None  # everything fits the nodes there are, and no request of ours is out

    def to_send(self, demands: Mapping[str, ClusterDemand], *, now: float) -> dict[str, tuple]:
        """{cluster: canonical bundles} to send now. A cluster with a demand job still in
        flight waits for it (requests replace each other, so they must land in order)."""
        out = {}
        for name, demand in demands.items():
            state = self.states.setdefault(name, _State())
            want = self.wanted(demand)
            if want is None or state.in_flight is not None or now < state.retry_at:
                continue
            if want == state.sent:
                continue
            out[name] = want
        return out

    def started(self, cluster: str, bundles: tuple) -> None:
        self.states.setdefault(cluster, _State()).in_flight = bundles

    def confirmed(self, cluster: str) -> None:
        state = self.states.setdefault(cluster, _State())
        state.sent, state.in_flight, state.retry_at, state.failures = state.in_flight, None, 0.0, 0

    def failed(self, cluster: str, *, now: float) -> None:
        state = self.states.setdefault(cluster, _State())
        state.in_flight = None
        state.sent = None  # unknown again: resend what is wanted
        # a cluster that cannot run the demand job (no trainyard on its PATH, say) is not
        # asked again every tick: 10 s, 20 s, ... up to 5 minutes
        state.failures += 1
        state.retry_at = now + min(300.0, self.retry_after_s * 2 ** (state.failures - 1))

    def forget(self, cluster: str) -> None:
        self.states.pop(cluster, None)


def agent_entrypoint(bundles: Sequence[Mapping[str, float]], *, python: str = "python") -> str:
    """The demand job's command line (runs on the cluster's head, 0 CPUs)."""
    payload = json.dumps([dict(b) for b in bundles], separators=(",", ":"), sort_keys=True)
    return f"{python} -m trainyard.clusters.demand_agent {shlex.quote(payload)}"


class DemandSender:
    """Sends demands through the Ray Jobs REST API: one tiny job per change, whose driver
    calls request_resources (the GCS keeps the request after the driver exits).

    `client_for(cluster)` returns a RayClusterClient (submit/status/logs). Never blocks on
    the demand job: its outcome is read on the next call.
    """

    def __init__(self, client_for: Callable[[str], Any], *, tracker: DemandTracker | None = None,
                 python: str = "python", clock: Callable[[], float] = time.monotonic,
                 log: Callable[[str], None] | None = None):
        self.client_for = client_for
        self.tracker = tracker or DemandTracker()
        self.python = python
        self.clock = clock
        self.log = log or (lambda message: None)
        self._jobs: dict[str, str] = {}  # cluster -> submission_id of the demand job in flight
        self._seq = 0
        self.history: list[dict] = []  # what was sent, for status and tests

    def _check_in_flight(self, cluster: str) -> None:
        from trainyard.errors import ClusterError

        submission_id = self._jobs.get(cluster)
        if submission_id is None:
            return
        try:
            info = self.client_for(cluster).status(submission_id)
        except ClusterError:
            return  # ask again next time
        status = (info or {}).get("status", "")
        if status == "SUCCEEDED":
            self.tracker.confirmed(cluster)
            self._jobs.pop(cluster, None)
            self.log(f"cluster '{cluster}': autoscaler request {submission_id} applied")
        elif info is None or status in ("FAILED", "STOPPED"):
            message = (info or {}).get("message") or "Ray has no record of it"
            self.tracker.failed(cluster, now=self.clock())
            self._jobs.pop(cluster, None)
            self.log(f"cluster '{cluster}': autoscaler request {submission_id} failed ({message}); "
                     f"retrying in {self.tracker.retry_after_s:.0f}s")

    def update(self, demands: Mapping[str, ClusterDemand]) -> list[dict]:
        """Reconcile every cluster's request with `demands`; returns what was sent now."""
        from trainyard.errors import ClusterError

        for cluster in list(self._jobs):
            self._check_in_flight(cluster)
        for cluster in list(self.tracker.states):
            if cluster not in demands and cluster not in self._jobs:
                self.tracker.forget(cluster)  # unregistered, or no longer autoscaling
        sent = []
        for cluster, bundles in self.tracker.to_send(demands, now=self.clock()).items():
            self._seq += 1
            submission_id = f"{DEMAND_JOB_PREFIX}{cluster}-{int(time.time() * 1000)}-{self._seq}"
            bundle_list = [dict(b) for b in bundles]
            try:
                self.client_for(cluster).submit(
                    submission_id=submission_id, entrypoint=agent_entrypoint(bundle_list, python=self.python),
                    metadata={"trainyard_demand": "1"}, entrypoint_num_cpus=0)
            except ClusterError as exc:
                self.tracker.failed(cluster, now=self.clock())
                self.log(f"cluster '{cluster}': could not send the autoscaler request: {exc.message}")
                continue
            self.tracker.started(cluster, bundles)
            self._jobs[cluster] = submission_id
            record = {"cluster": cluster, "submission_id": submission_id, "bundles": bundle_list,
                      "jobs": list(demands[cluster].waiting + demands[cluster].active), "at": time.time()}
            self.history.append(record)
            del self.history[:-100]
            sent.append(record)
            what = f"{len(bundle_list)} bundle(s) {bundle_list}" if bundle_list else "nothing (withdrawn)"
            self.log(f"cluster '{cluster}': asked the autoscaler for {what} ({submission_id})")
        return sent

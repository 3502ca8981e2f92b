"""The job state machine. Pure: no I/O, unit-tested on its own.

Users see five states (PUBLIC_STATES). Inside, the controller tracks a few more *phases*
so that a crash at any moment leaves a record of what was about to happen:

    PENDING ──> DISPATCHING ──> SUBMITTED ──> RUNNING ──> SUCCEEDED | FAILED
       │            │               │            │
       │            └───────────────┴────────────┴──> CANCELLING ──> CANCELLED
       └──> CANCELLED (never dispatched)

    RUNNING ──> PREEMPTING ──> PREEMPTED ──> DISPATCHING ... (the next attempt)
                    │              └──> CANCELLED
                    └──> CANCELLING | SUCCEEDED | FAILED

- DISPATCHING: the submission_id and attempt are written, Ray has not confirmed yet
  (write-ahead). Reconciliation resubmits with the *same* submission_id, which Ray
  refuses to run twice.
- SUBMITTED: Ray accepted the job; its driver has not started (Ray's PENDING).
- CANCELLING: the user asked to cancel; we wait for Ray to report STOPPED.
- STALLED: RUNNING, but its workers reported no step for the stall timeout (controller/stall.py).
  Public state RUNNING (it still holds its GPUs), phase STALLED. By the job's on_stall policy
  the controller asks Ray to stop it and, once Ray reports STOPPED, queues it again (PENDING,
  next attempt, resumed from its checkpoint) or fails it; with `none` it stays STALLED until a
  step arrives (back to RUNNING) or the job ends.
- PREEMPTING: the scheduler took the job's place for another; the job was asked to
  checkpoint at its next step boundary and stop (public state: still RUNNING).
- PREEMPTED: it stopped (checkpointed, or stopped by Ray after the grace period) and is
  queued again with its place kept (public state: PENDING; QUEUED holds both queued
  phases). Its next attempt resumes from the checkpoint.

A job whose driver vanished before it started may go back to PENDING (re-queued, next
attempt); one that was RUNNING goes to FAILED. Terminal phases never change again.
"""
from __future__ import annotations

from trainyard.errors import ConflictError

__all__ = [
    "PENDING", "DISPATCHING", "SUBMITTED", "RUNNING", "STALLED", "CANCELLING", "SUCCEEDED", "FAILED",
    "CANCELLED", "PREEMPTING", "PREEMPTED", "PHASES", "QUEUED", "PUBLIC_STATES", "TERMINAL", "ACTIVE", "public_state",
    "can_transition", "check_transition", "phases_for_public", "ray_status_to_phase",
]

PENDING = "PENDING"
DISPATCHING = "DISPATCHING"
SUBMITTED = "SUBMITTED"
RUNNING = "RUNNING"
STALLED = "STALLED"
CANCELLING = "CANCELLING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
PREEMPTING = "PREEMPTING"
PREEMPTED = "PREEMPTED"

PHASES = (PENDING, DISPATCHING, SUBMITTED, RUNNING, STALLED, CANCELLING, SUCCEEDED, FAILED, CANCELLED, PREEMPTING,
          PREEMPTED)
PUBLIC_STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
# phases in which a Ray job may exist for the current attempt
ACTIVE = frozenset({DISPATCHING, SUBMITTED, RUNNING, STALLED, CANCELLING, PREEMPTING})
# phases of a job waiting in the queue for its (next) attempt
QUEUED = frozenset({PENDING, PREEMPTED})

_PUBLIC = {
    PENDING: PENDING,
    DISPATCHING: PENDING,
    SUBMITTED: PENDING,
    RUNNING: RUNNING,
    # it still holds its resources; `phase` says STALLED
    STALLED: RUNNING,
    # still running until Ray confirms the stop; `phase` says CANCELLING
    CANCELLING: RUNNING,
    SUCCEEDED: SUCCEEDED,
    FAILED: FAILED,
    CANCELLED: CANCELLED,
    # still holds its resources until it has checkpointed and stopped
    PREEMPTING: RUNNING,
    # queued again, with its place kept
    PREEMPTED: PENDING,
}

_ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({DISPATCHING, CANCELLED, FAILED}),
    # Ray may have finished a short job before we first polled it: any outcome is legal.
    DISPATCHING: frozenset({SUBMITTED, RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED, PENDING}),
    SUBMITTED: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLING, CANCELLED, PENDING}),
    # PREEMPTED straight from RUNNING: the driver took a stop notice (SIGTERM: a node going
    # away) that the controller did not send, checkpointed and stopped
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLING, CANCELLED, STALLED, PREEMPTING, PREEMPTED}),
    # a step arrived (RUNNING), requeued after the stop (PENDING), or ended
    STALLED: frozenset({RUNNING, PENDING, SUCCEEDED, FAILED, CANCELLING, CANCELLED}),
    # it may finish, fail or be cancelled before its checkpoint lands
    PREEMPTING: frozenset({PREEMPTED, SUCCEEDED, FAILED, CANCELLING, CANCELLED}),
    PREEMPTED: frozenset({DISPATCHING, CANCELLED, FAILED}),
    CANCELLING: frozenset({CANCELLED, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def public_state(phase: str) -> str:
    try:
        return _PUBLIC[phase]
    except KeyError:
        raise ValueError(f"unknown job phase {phase!r}; known: {', '.join(PHASES)}") from None


def phases_for_public(state: str) -> list[str]:
    """The internal phases that show as `state` (for filtering lists)."""
    return [p for p, s in _PUBLIC.items() if s == state]


def can_transition(old: str, new: str) -> bool:
    return new in _ALLOWED.get(old, frozenset())


def check_transition(old: str, new: str, *, job_id: str = "") -> None:
    """Raise ConflictError when `old -> new` is not a legal move."""
    if old not in _ALLOWED:
        raise ValueError(f"unknown job phase {old!r}")
    if new not in _ALLOWED:
        raise ValueError(f"unknown job phase {new!r}")
    if not can_transition(old, new):
        who = f"job {job_id} " if job_id else "a job "
        if old in TERMINAL:
            fix = f"{who}already ended ({old}); submit it again to rerun it"
        else:
            allowed = ", ".join(sorted(_ALLOWED[old])) or "none"
            fix = f"from {old} it can go to: {allowed}"
        raise ConflictError(f"{who}cannot go from {old} to {new}", value=new, fix=fix)


_RAY_TO_PHASE = {
    "PENDING": SUBMITTED,
    "RUNNING": RUNNING,
    "SUCCEEDED": SUCCEEDED,
    "FAILED": FAILED,
    "STOPPED": CANCELLED,
}


def ray_status_to_phase(status: str) -> str:
    """Map a Ray Jobs status (PENDING/RUNNING/STOPPED/SUCCEEDED/FAILED) to our phase."""
    try:
        return _RAY_TO_PHASE[status]
    except KeyError:
        raise ValueError(f"unknown Ray job status {status!r}") from None

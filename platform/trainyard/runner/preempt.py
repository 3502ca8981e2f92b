"""Checkpoint now and stop: how a running job is asked to leave (preemption, a node's stop notice).

The request reaches the job driver as SIGTERM: Ray's `stop_job` sends it to the driver
process (and its children), waits RAY_JOB_STOP_WAIT_TIME_S (the controller sets it to the
preemption grace period; Ray's default is 3 s), then kills. A node going away sends the same.

    driver   SIGTERM -> `DriverStop` sets an Event; its thread writes the key
             `preempt:<token>` into Ray's internal KV (a GCS call: not made inside the
             signal handler, which may interrupt the main thread in the middle of one)
    workers  `StopWatch`: a daemon thread polls the key (one small GCS read every
             `poll_s`) and sets a local flag. At agreed optimizer-step boundaries the ranks
             agree with one all_reduce(MAX) of the flag, so every rank stops after the same
             step, saves its DeepSpeed state (and generators) in one checkpoint, and returns.
             The driver then prints TRAINYARD_PREEMPTED and exits 75.

Agreeing costs a collective, a rendezvous of every rank: on small fast steps that was a third
of a step. So the ranks agree every step at first and then every `interval` steps, about
AGREE_EVERY_S of steps (at most MAX_INTERVAL), an interval they agree on in the same
all_reduce (the smallest any rank proposes, from its own step times): every rank asks at the
same steps, so all stop after the same one. A request waits at most that long more; no step is
lost, since the checkpoint is taken after the step the ranks stop at.

The token is drawn per driver run, so a resumed attempt never sees the last attempt's key.

A worker's own SIGTERM (its node is going away: a spot notice, a drained Kubernetes pod) is a
different request: the job goes on, without that node. Ray Train runs the training function
in a thread of the worker actor, which cannot install signal handlers, but the actor's main
thread runs its tasks, so rank code asks its own actor to run `install_worker_notice` there
(`WorkerNotice.install`). The handler only sets a flag; the ranks agree on it at the next step
boundary like a driver stop, save one checkpoint, and leave with `NodeNotice` (a failure to
Ray Train: the group restarts from that checkpoint on the workers left, when
failure.max_failures allows; an elastic job gets at least a few). The signalled worker then
hands SIGTERM back to Ray's own handler, which ends the process. A notice that cannot be
honoured in time (no step boundary within TRAINYARD_WORKER_STOP_GRACE_S, default 20 s) ends
the worker the same way without a checkpoint: the group restarts from the one before.
A driver stop outranks a node notice when both arrive at the same step (the whole job stops).
"""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any

__all__ = ["NAMESPACE", "new_token", "DriverStop", "StopWatch", "request_stop", "stop_requested",
           "WorkerNotice", "NodeNotice", "install_worker_notice", "NO_STOP", "NODE_NOTICE", "DRIVER_STOP",
           "GRACE_ENV", "propose_interval"]

NAMESPACE = "trainyard"
# what the ranks agree on at a step boundary (all_reduce MAX: the larger request wins)
NO_STOP, NODE_NOTICE, DRIVER_STOP = 0, 1, 2
GRACE_ENV = "TRAINYARD_WORKER_STOP_GRACE_S"
DEFAULT_GRACE_S = 20.0
# how far apart agreements may be, in time and in steps, and how many steps agree every time
# first (lazy init makes the first step times meaningless; and a request that comes early, or a
# short job's, is honoured at the very next step)
AGREE_EVERY_S = 0.25
MAX_INTERVAL = 64
AGREE_EVERY_STEP_FIRST = 10


class NodeNotice(RuntimeError):
    """A worker was told to leave (SIGTERM to its process): the group checkpointed and stops so
    that Ray Train restarts it without that worker. Raised by every rank after the checkpoint."""


def new_token(job_id: str) -> str:
    return f"{job_id}-{uuid.uuid4().hex[:12]}"


def _key(token: str) -> bytes:
    return f"preempt:{token}".encode()


def request_stop(token: str) -> None:
    """Ask the workers of the run with this token to checkpoint and stop (needs ray.init)."""
    from ray.experimental.internal_kv import _internal_kv_put

    _internal_kv_put(_key(token), b"1", overwrite=True, namespace=NAMESPACE)


def stop_requested(token: str) -> bool:
    from ray.experimental.internal_kv import _internal_kv_get

    return _internal_kv_get(_key(token), namespace=NAMESPACE) is not None


def _clear(token: str) -> None:
    from ray.experimental.internal_kv import _internal_kv_del

    _internal_kv_del(_key(token), namespace=NAMESPACE)


class DriverStop:
    """The driver's SIGTERM handler, installed for the length of a `with` block (main thread
    only; elsewhere it does nothing, and SIGTERM keeps its old meaning)."""

    def __init__(self, token: str):
        self.token = token
        self.requested = threading.Event()
        self._done = threading.Event()
        self._previous: Any = None
        self._installed = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DriverStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
            self._installed = True
            self._thread = threading.Thread(target=self._forward, name="trainyard-stop", daemon=True)
            self._thread.start()
        return self

    def _on_signal(self, signum, frame) -> None:
        self.requested.set()

    def _forward(self) -> None:
        while not self._done.is_set():
            if self.requested.wait(0.5):
                print("[trainyard] stop requested (SIGTERM): the job checkpoints at its next step and stops",
                      flush=True)
                try:
                    request_stop(self.token)
                except Exception as exc:  # Ray is going away: nothing left to ask
                    print(f"[trainyard] could not pass the stop on to the workers: {exc}", flush=True)
                return

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
        if self._thread is not None:
            self._thread.join(2)
        try:
            _clear(self.token)
        except Exception:
            pass


def _grace_s() -> float:
    raw = os.environ.get(GRACE_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_GRACE_S
    except ValueError:
        value = DEFAULT_GRACE_S
    return value if 0 < value <= 3600 else DEFAULT_GRACE_S


class WorkerNotice:
    """This worker process's SIGTERM as a request to checkpoint and leave (one per process).

    The first SIGTERM sets `seen` (Python runs the handler on the main thread). Any later one,
    a second notice or `leave()` re-sending it, goes to the handler that was there before
    (Ray's: the worker exits). `leave()` (any thread) is what the signalled rank calls once its
    checkpoint is saved, and what the grace period's timer calls when no step came in time."""

    def __init__(self, *, grace_s: float | None = None):
        self.seen = threading.Event()
        self.grace_s = _grace_s() if grace_s is None else grace_s
        self._previous: Any = None
        self._installed = False
        self._left = threading.Event()
        self.received_at: float | None = None
        # only while a training loop runs here is there a step to checkpoint at: before it
        # (building the group) and after it (Ray Train ending the group) SIGTERM is Ray's at once
        self.active = False

    def install(self) -> bool:
        """Install the handler; main thread only (False elsewhere: SIGTERM keeps Ray's meaning)."""
        if self._installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True
        return True

    def _on_signal(self, signum, frame) -> None:
        if self.seen.is_set() or not self.active:  # asked again, leave(), or no loop: the old handler's turn
            self._hand_back(signum, frame)
            return
        self.received_at = time.monotonic()
        self.seen.set()
        print(f"[trainyard] worker pid {os.getpid()}: SIGTERM (node notice): the group checkpoints at its "
              f"next step and restarts without this worker (grace {self.grace_s:g} s)", flush=True)
        threading.Thread(target=self._deadline, name="trainyard-notice-grace", daemon=True).start()

    def _hand_back(self, signum, frame) -> None:
        self._left.set()
        previous = self._previous if self._previous is not None else signal.SIG_DFL
        signal.signal(signal.SIGTERM, previous)
        self._installed = False
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal.SIGTERM)

    def _deadline(self) -> None:
        if not self._left.wait(self.grace_s):
            print(f"[trainyard] worker pid {os.getpid()}: no step boundary within {self.grace_s:g} s; "
                  "leaving without a checkpoint", flush=True)
            self.leave()

    def deactivate(self) -> None:
        """The loop ended (finished, failed, stopped): a SIGTERM from now on is Ray's at once,
        and one noticed but not yet honoured is handed on now."""
        self.active = False
        if self.seen.is_set():
            self.leave()

    def leave(self) -> None:
        """Send SIGTERM to this process again (once): the handler gives it to the old one."""
        if self._left.is_set() or not self._installed:
            return
        self._left.set()
        os.kill(os.getpid(), signal.SIGTERM)


_NOTICE: WorkerNotice | None = None
_NOTICE_LOCK = threading.Lock()


def install_worker_notice() -> bool:
    """Run on the worker actor's main thread (RayTrainWorker.execute): install this process's
    WorkerNotice. True when the handler is in place."""
    global _NOTICE
    with _NOTICE_LOCK:
        if _NOTICE is None:
            _NOTICE = WorkerNotice()
        return _NOTICE.install()



def worker_notice(*, timeout_s: float = 10.0) -> WorkerNotice | None:
    """This process's WorkerNotice, installed from the training thread by asking the worker
    actor to run `install_worker_notice` on its main thread; None when that cannot be done
    (not inside a Ray Train worker actor, or an actor that has no `execute`)."""
    if threading.current_thread() is threading.main_thread():
        if not install_worker_notice() or _NOTICE is None:
            return None
        _NOTICE.active = True
        return _NOTICE
    import sys

    ray = sys.modules.get("ray")
    # never Ray's own auto-init (get_runtime_context() starts a local cluster where none is
    # connected): outside a Ray worker there is no actor to ask
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    try:
        actor = ray.get_runtime_context().current_actor
        ok = ray.get(actor.execute.remote(install_worker_notice), timeout=timeout_s)
    except Exception as exc:  # not an actor, or Ray Train changed its worker: notices stay Ray's
        print(f"[trainyard] worker SIGTERM stays Ray's (no checkpoint on a node notice): {exc}", flush=True)
        return None
    if not ok or _NOTICE is None:
        return None
    _NOTICE.active = True
    return _NOTICE


def propose_interval(*, steps: int, seconds: float, every_s: float = AGREE_EVERY_S,
                     max_interval: int = MAX_INTERVAL) -> int:
    """Steps until the next agreement, from `steps` taking `seconds` since the last one: as many
    as fit in `every_s` (1 to max_interval)."""
    if steps <= 0 or seconds <= 0:
        return 1
    return max(1, min(int(max_interval), int(every_s * steps / seconds + 1e-9)))


class StopWatch:
    """A worker's view of the stop requests (the driver's, through Ray's KV; its own process's
    SIGTERM, through `notice`). At a step boundary every rank asks `due(step)` and, when due,
    calls `agreed_reason(step=step)` (a collective when the group has more than one rank)."""

    def __init__(self, token: str | None, *, poll_s: float = 0.5, device: Any = None,
                 notice: WorkerNotice | None = None):
        self.token, self.poll_s, self.device, self.notice = token, poll_s, device, notice
        self.seen = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="trainyard-stopwatch", daemon=True)
        self._next: int | None = None  # the step of the next agreement (None: the next boundary)
        self._last: tuple[int, float] | None = None  # (step, monotonic time) of the last one
        self._agreements = 0
        if token:
            self._thread.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            try:
                if stop_requested(self.token):
                    self.seen.set()
                    return
            except Exception:  # the GCS is briefly unreachable: look again
                pass
            self._closed.wait(self.poll_s)

    def local_reason(self) -> int:
        if self.seen.is_set():
            return DRIVER_STOP
        if self.notice is not None and self.notice.seen.is_set():
            return NODE_NOTICE
        return NO_STOP

    def due(self, step: int) -> bool:
        """Whether the ranks agree at this step boundary (the same answer on every rank)."""
        return self._next is None or step >= self._next

    def _proposal(self, step: int, now: float) -> int:
        if self._agreements < AGREE_EVERY_STEP_FIRST or self._last is None:
            return 1
        return propose_interval(steps=step - self._last[0], seconds=now - self._last[1])

    def agreed_reason(self, *, step: int | None = None) -> int:
        """The strongest request any rank has seen, the same on every rank (ranks see requests at
        different moments; they must stop after the same step to save one consistent
        checkpoint): NO_STOP, NODE_NOTICE or DRIVER_STOP. With `step`, the ranks also agree
        when to ask next (`due`)."""
        flag = self.local_reason()
        now = time.monotonic()
        interval = self._proposal(step, now) if step is not None else 1
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            # one collective for both: MAX of the flags, and (negated) MIN of the proposals
            t = torch.tensor([flag, -interval], dtype=torch.int64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag, interval = int(t[0].item()), -int(t[1].item())
        if step is not None:
            self._agreements += 1
            self._last = (step, now)
            self._next = step + max(1, interval)
        return flag

    def agreed(self) -> bool:
        """True on every rank when any rank has seen a request."""
        return self.agreed_reason() != NO_STOP

    def leave_if_noticed(self) -> None:
        """After the notice's checkpoint: the signalled process hands SIGTERM back to Ray."""
        if self.notice is not None and self.notice.seen.is_set():
            self.notice.leave()

    def close(self) -> None:
        self._closed.set()
        if self.notice is not None:
            self.notice.deactivate()

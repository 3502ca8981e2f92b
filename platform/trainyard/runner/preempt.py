"""Checkpoint now and stop: how a running job is asked to leave (preemption, a node's stop notice).

The request reaches the job driver as SIGTERM: Ray's `stop_job` sends it to the driver
process (and its children), waits RAY_JOB_STOP_WAIT_TIME_S (the controller sets it to the
preemption grace period; Ray's default is 3 s), then kills. A node going away sends the same.

    driver   SIGTERM -> `DriverStop` sets an Event; its thread writes the key
             `preempt:<token>` into Ray's internal KV (a GCS call: not made inside the
             signal handler, which may interrupt the main thread in the middle of one)
    workers  `StopWatch`: a daemon thread polls the key (one small GCS read every
             `poll_s`) and sets a local flag. At each optimizer-step boundary the ranks
             agree with one all_reduce(MAX) of a 1-element flag, so every rank stops after
             the same step, saves its DeepSpeed state (and generators) in one checkpoint, and
             returns. The driver then prints TRAINYARD_PREEMPTED and exits 75.

The token is drawn per driver run, so a resumed attempt never sees the last attempt's key.
Workers only learn of a stop through the driver: Ray Train runs the training function in a
thread of the worker actor, which cannot install signal handlers (a worker's own SIGTERM
is Ray's to handle, and ends that worker; Ray Train restarts the group from the last
checkpoint when failure.max_failures allows).
"""
from __future__ import annotations

import signal
import threading
import uuid
from typing import Any

__all__ = ["NAMESPACE", "new_token", "DriverStop", "StopWatch", "request_stop", "stop_requested"]

NAMESPACE = "trainyard"


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


class StopWatch:
    """A worker's view of the stop request; `agreed()` is called by every rank at every step
    boundary (a collective when the group has more than one rank)."""

    def __init__(self, token: str, *, poll_s: float = 0.5, device: Any = None):
        self.token, self.poll_s, self.device = token, poll_s, device
        self.seen = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="trainyard-stopwatch", daemon=True)
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

    def agreed(self) -> bool:
        """True on every rank when any rank has seen the request (ranks see it at different
        moments; they must stop after the same step to save one consistent checkpoint)."""
        flag = 1 if self.seen.is_set() else 0
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            t = torch.tensor([flag], dtype=torch.int32, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = int(t.item())
        return bool(flag)

    def close(self) -> None:
        self._closed.set()

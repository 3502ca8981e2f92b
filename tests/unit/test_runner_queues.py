"""The runner's queue consumers never lose an item: the job driver's progress printer and a
sweep trial's hand-off from its Train gang (pure logic: a fake queue, no Ray).

ray.util.queue.Queue.get(timeout=...) runs `asyncio.wait_for(queue.get(), timeout)` in the
queue actor; on Python 3.11 a timeout that races the get can drop the item the get took.
FakeQueue.get does the same (every third item it takes is lost), so a consumer that blocks
in get(timeout=...) fails these tests; one that polls qsize()/get_nowait_batch() does not.
"""
from __future__ import annotations

import collections
import json
import queue as stdlib_queue
import threading
import time

from trainyard.runner import sweep, train
from trainyard.runner.protocol import parse_line


class FakeQueue:
    """What the consumers may use of ray.util.queue.Queue; thread-safe.

    qsize() is a lower bound, as with any queue others put into: it reports at most 2 items.
    `late` items arrive at the first qsize() call made from the main thread (the test's own
    thread, so: inside _ProgressPrinter.stop(), after the stop was requested)."""

    def __init__(self, late=()):
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self.late = list(late)
        self.taken_by_get = 0

    def put(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def qsize(self) -> int:
        with self._cond:
            if self.late and threading.current_thread() is threading.main_thread():
                self._items.extend(self.late)
                self.late = []
            return min(2, len(self._items))

    def get_nowait_batch(self, n: int) -> list:
        with self._cond:
            if n > len(self._items):
                raise stdlib_queue.Empty(f"Cannot get {n} items from queue of size {len(self._items)}.")
            return [self._items.popleft() for _ in range(n)]

    def get(self, block: bool = True, timeout: float | None = None):
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout=timeout if block else 0):
                raise stdlib_queue.Empty
            item = self._items.popleft()
            self.taken_by_get += 1
            if self.taken_by_get % 3 == 0:  # the timeout won the race: the item is gone
                raise stdlib_queue.Empty
            return item


def _progress(step: int) -> dict:
    return {"kind": "progress", "step": step, "total_steps": 100, "epoch": 0, "metrics": {"loss": 1.0 / step}}


def _steps(lines: list[str]) -> list[int]:
    return [parse_line(line)[1]["step"] for line in lines]


def test_progress_printer_emits_every_item_once_in_order_including_late_ones():
    late = [_progress(41), _progress(42)]
    q = FakeQueue(late=late)
    lines: list[str] = []
    printer = train._ProgressPrinter(q, lines.append)
    for step in range(1, 41):
        q.put(_progress(step))
        if step % 8 == 0:
            time.sleep(0.25)  # let the printer's thread take some while more come
    q.put({"kind": "final", "step": 40, "total_steps": 100, "epoch": 1, "metrics": {"accuracy": 0.9}})
    printer.stop()  # the late items arrive now: the final drain must take them too
    assert _steps(lines) == list(range(1, 43))
    assert printer.final is not None and printer.final["metrics"] == {"accuracy": 0.9}
    assert q.taken_by_get == 0 and q.qsize() == 0


def test_progress_printer_stop_twice_and_a_dead_queue_are_harmless():
    class Gone:
        def qsize(self):
            raise RuntimeError("the queue actor is gone")

    lines: list[str] = []
    printer = train._ProgressPrinter(Gone(), lines.append)
    printer.stop()
    printer.stop()
    assert lines == [] and printer.final is None


def test_take_available_takes_what_qsize_counts_and_nothing_when_empty():
    q = FakeQueue()
    assert train.take_available(q) == []
    for i in range(3):
        q.put(i)
    assert train.take_available(q) == [0, 1]
    assert train.take_available(q) == [2]
    assert q.taken_by_get == 0


def test_gang_hand_off_forwards_every_report_in_order_then_stops_at_the_sentinel():
    q = FakeQueue()
    items = [{"metrics": {"accuracy": 0.1 * i, "step": i, "trainyard_model_uri": "runs:/x"},
              "checkpoint": f"bucket/ckpt_{i}" if i % 2 else None} for i in range(1, 8)]

    def producer():  # Train's controller: put() waits while the (maxsize 1) queue is full
        for item in [*items, sweep._SENTINEL]:
            while q.qsize():
                time.sleep(0.001)
            q.put(item)

    sent: list[tuple] = []
    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    flags = {"trainyard_restored": 1.0, "trainyard_cloned": 0.0}
    last = sweep._forward_reports(q, lambda report, metrics, ckpt: sent.append((report, metrics, ckpt)),
                                  first_flags=flags, poll_s=0.005)
    thread.join(5)
    assert [m["step"] for _, m, _ in sent] == list(range(1, 8))
    assert [c for _, _, c in sent] == [item["checkpoint"] for item in items]
    # Tune gets numbers only; the first report of the start says how it began, the others don't
    assert sent[0][0] == {"accuracy": 0.1, "step": 1, **flags}
    assert all("trainyard_restored" not in report for report, _, _ in sent[1:])
    assert last == items[-1]["metrics"]
    assert q.taken_by_get == 0


def test_gang_hand_off_returns_on_a_sentinel_with_no_report():
    q = FakeQueue()
    q.put(sweep._SENTINEL)
    assert sweep._forward_reports(q, lambda *a: None, first_flags={}, poll_s=0.001) == {}

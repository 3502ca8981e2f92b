"""A client that sends requests in a loop and remembers every answer (for zero-downtime checks)."""
from __future__ import annotations

import threading
import time

import httpx


class LoopClient:
    def __init__(self, url: str, payload: dict, *, threads: int = 1, pause_s: float = 0.01, key: str | None = None):
        """`key`: an endpoint key, sent as `Authorization: Bearer <key>` (none for a public endpoint)."""
        self.url, self.payload, self.pause_s = url, payload, pause_s
        self.headers = {"authorization": f"Bearer {key}"} if key else {}
        self.answers: list[tuple[float, int, str | None, str]] = []  # (time, status, version, error)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def _run(self):
        with httpx.Client(timeout=30, headers=self.headers) as http:
            while not self._stop.is_set():
                try:
                    resp = http.post(self.url, json=self.payload)
                    row = (time.monotonic(), resp.status_code, resp.headers.get("x-trainyard-version"),
                           "" if resp.status_code == 200 else resp.text[:200])
                except httpx.HTTPError as exc:
                    row = (time.monotonic(), -1, None, repr(exc))
                with self._lock:
                    self.answers.append(row)
                if self.pause_s:
                    time.sleep(self.pause_s)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def failures(self):
        return [a for a in self.answers if a[1] != 200]

    def versions_after(self, t: float) -> set:
        return {a[2] for a in self.answers if a[0] > t}

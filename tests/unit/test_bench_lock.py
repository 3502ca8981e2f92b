"""The benchmarks' measurement lock (benchmarks/_bench.py): a benchmark run under
`flock LOCK ...` uses the lock its caller holds instead of waiting for it forever, and one run
while someone else holds the lock waits for it."""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = ("import _bench\n"
         "with _bench.measurement(False) as info:\n"
         "    print(info['measure_lock'])\n")

pytestmark = pytest.mark.skipif(shutil.which("flock") is None or not os.path.isdir("/proc/self/fd"),
                                reason="needs util-linux flock and /proc")


def _run(args: list[str], lock: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINYARD_MEASURE_LOCK": str(lock)}
    return subprocess.run(args, cwd=REPO / "benchmarks", env=env, capture_output=True, text=True, timeout=timeout)


def test_a_benchmark_under_the_callers_flock_uses_that_lock(tmp_path):
    lock = tmp_path / "measure.lock"
    out = _run(["flock", str(lock), sys.executable, "-c", PROBE], lock, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "held by the caller" in out.stdout and str(lock) in out.stdout


def test_a_benchmark_takes_the_lock_itself_and_waits_for_another_holder(tmp_path):
    lock = tmp_path / "measure.lock"
    out = _run([sys.executable, "-c", PROBE], lock, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == str(lock), out.stderr
    # someone else holds it (this test, through its own open of the file; the child does not
    # inherit it): the benchmark says it waits, and does not start
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(subprocess.TimeoutExpired) as waited:
            _run([sys.executable, "-c", PROBE], lock, timeout=5)
    said = waited.value.stderr or b""
    said = said.decode() if isinstance(said, bytes) else said
    assert "waiting for the measurement lock" in said and not waited.value.stdout

"""Shared by the sweep benchmarks: a private local Ray head (2 CPUs), started and stopped here."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "platform", REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@contextlib.contextmanager
def ray_head(num_cpus: int = 2):
    from trainyard.local.processes import start_ray_head, stop_ray_head

    temp_dir = tempfile.mkdtemp(prefix="tyb-", dir="/tmp")
    head = start_ray_head(temp_dir=temp_dir, token=secrets.token_hex(16), num_cpus=num_cpus,
                          log_file=os.path.join(temp_dir, "ray-start.log"), timeout=300)
    saved = {k: os.environ.get(k) for k in head.env()}
    os.environ.update(head.env())
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # benchmarks measure the sweep, not tracking
    os.environ.pop("TRAINYARD_MLFLOW_URI", None)
    try:
        yield head
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        stop_ray_head(head)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp_dir, ignore_errors=True)

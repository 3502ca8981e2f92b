"""A ZeRO checkpoint in DeepSpeed's universal form, so that another number of ranks can load it.

ZeRO 1-3 save each rank's shard of the optimizer states (and under ZeRO-3 of the parameters);
DeepSpeed refuses to load them into another data-parallel world size. Its converter
(deepspeed.checkpoint.ds_to_universal) rewrites a checkpoint as one file per parameter and
state (fp32 weights, Adam's exp_avg / exp_avg_sq, step), which an engine created with
`checkpoint.load_universal` loads at any world size. A stage-0 checkpoint holds the full
weights and optimizer state in one file every rank reads, so it needs no conversion.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import tempfile
import time

__all__ = ["UNIVERSAL_TAG", "KEEP_ENV", "needs_universal", "universal_dir", "ensure_universal", "prune"]

UNIVERSAL_TAG = "ckpt_universal"
_DONE = ".trainyard-complete"
# A converted checkpoint is as large as the model's fp32 weights and Adam states together, on
# each node's local disk; one unused this long (seconds) is removed by the next conversion there.
KEEP_ENV = "TRAINYARD_UNIVERSAL_KEEP_S"
_KEEP_DEFAULT_S = 24 * 3600.0


def needs_universal(*, saved_world: int, world: int, zero_stage: int) -> bool:
    """Load the universal form: the world size changed and the states are sharded."""
    return int(saved_world) != int(world) and int(zero_stage) >= 1


def universal_dir(key: str, *, root: str | None = None) -> str:
    """The node-local folder that holds the converted form of the checkpoint named `key`
    (its storage path and module): the same key, the same folder, so a second load on this
    node (a restarted worker group, the other ranks) finds it converted."""
    return os.path.join(_root(root), hashlib.sha256(key.encode()).hexdigest()[:24])


def _root(root: str | None) -> str:
    return root or os.path.join(tempfile.gettempdir(), "trainyard-universal")


def _keep_s() -> float:
    try:
        value = float(os.environ.get(KEEP_ENV, ""))
    except ValueError:
        return _KEEP_DEFAULT_S
    return value if value > 0 else _KEEP_DEFAULT_S


def ensure_universal(tag_dir: str, *, key: str, root: str | None = None) -> str:
    """Convert the DeepSpeed checkpoint in `tag_dir` (one engine's `<module>/<tag>` folder)
    unless this node has done it already; return the folder to hand `engine.load_checkpoint`
    with tag=UNIVERSAL_TAG.

    Once per node, not once per job: every rank calls this, the first to take the lock
    converts and the others find its result. Rank 0's local temp folder is not visible to
    ranks on other nodes, so "rank 0 converts, the rest wait on a barrier" would only hold on
    one machine; a file lock on each node's own folder holds on any number of them."""
    out = universal_dir(key, root=root)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not os.path.exists(os.path.join(out, _DONE)):
                shutil.rmtree(out, ignore_errors=True)  # what a killed conversion left
                _convert(tag_dir, os.path.join(out, UNIVERSAL_TAG))
                os.makedirs(out, exist_ok=True)
                open(os.path.join(out, _DONE), "w").close()
            os.utime(os.path.join(out, _DONE))  # used now: the pruning below counts from here
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    prune(root=root, older_than_s=_keep_s(), keep=out)
    return out


def prune(*, root: str | None = None, older_than_s: float, keep: str | None = None,
          now: float | None = None) -> list[str]:
    """Remove the converted checkpoints in this node's cache last used more than
    `older_than_s` ago (and what a killed conversion left that long ago); return them.

    A folder another process holds the lock of is being converted or read: it stays. Best
    effort: a failure to remove is left for the next call, never raised into a job."""
    base, now = _root(root), time.time() if now is None else now
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.endswith(".lock")]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(base, name[:-len(".lock")])
        if folder == keep or not os.path.isdir(folder):
            continue
        marker = os.path.join(folder, _DONE)
        try:
            used = os.path.getmtime(marker if os.path.exists(marker) else folder + ".lock")
        except OSError:
            continue
        if now - used < older_than_s:
            continue
        try:
            with open(folder + ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                try:
                    # the empty lock file stays: a process already waiting on it must lock the
                    # same file as one that opens it after this
                    shutil.rmtree(folder, ignore_errors=True)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError:  # locked by a loader (BlockingIOError), or gone meanwhile
            continue
        removed.append(folder)
    return removed


def _convert(tag_dir: str, output: str) -> None:
    """DeepSpeed's own converter, in this process: no extract/merge worker pools (they would
    fork a Ray worker), and its progress output kept for the error when it fails.

    inject_missing_state: a plain data-parallel model carries no `universal_checkpoint_info`
    (only tensor/pipeline-parallel ones need its patterns); the converter adds the version
    marker it requires."""
    import argparse

    from deepspeed.checkpoint.ds_to_universal import main

    args = argparse.Namespace(input_folder=tag_dir, output_folder=output, num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            main(args)
    except Exception as exc:
        raise RuntimeError(f"converting the DeepSpeed checkpoint in {tag_dir} to the universal form "
                           f"failed: {exc}\n{log.getvalue()[-2000:]}") from exc

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

__all__ = ["UNIVERSAL_TAG", "needs_universal", "universal_dir", "ensure_universal"]

UNIVERSAL_TAG = "ckpt_universal"
_DONE = ".trainyard-complete"


def needs_universal(*, saved_world: int, world: int, zero_stage: int) -> bool:
    """Load the universal form: the world size changed and the states are sharded."""
    return int(saved_world) != int(world) and int(zero_stage) >= 1


def universal_dir(key: str, *, root: str | None = None) -> str:
    """The node-local folder that holds the converted form of the checkpoint named `key`
    (its storage path and module): the same key, the same folder, so a second load on this
    node (a restarted worker group, the other ranks) finds it converted."""
    base = root or os.path.join(tempfile.gettempdir(), "trainyard-universal")
    return os.path.join(base, hashlib.sha256(key.encode()).hexdigest()[:24])


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
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


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

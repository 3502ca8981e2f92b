"""Helpers for workload authors: check a family on a laptop, without Ray or DeepSpeed.

    from trainyard.testing import check_workload, engines_for, write_meta

    check_workload(WORKLOAD, hparams={"hidden": 8}, steps=2)   # build, train, evaluate, predict
    write_meta([WORKLOAD], "mypkg/")                           # the meta.json the server reads

`FakeEngine` is a plain-torch stand-in for a DeepSpeed engine (forward, backward, step).
Importing this package imports no torch.
"""
from __future__ import annotations

from trainyard.testing.checks import check_workload, meta_table, write_meta
from trainyard.testing.fake_engine import FakeEngine, engines_for

__all__ = ["FakeEngine", "engines_for", "check_workload", "meta_table", "write_meta"]

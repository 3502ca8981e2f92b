"""Pure sweep logic: search spaces, validation, the sweep plan, leaderboards and plots.

Nothing here imports torch or starts Ray. `space.to_tune` imports ray.tune lazily (the
sweep driver calls it on the cluster); `plot` imports matplotlib lazily.
"""
from __future__ import annotations

__all__ = ["space", "validate", "plan", "leaderboard", "plot"]

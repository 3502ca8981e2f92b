"""Learning curves of every trial and the best-so-far line (matplotlib, Agg: no display)."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["plot_board"]


def plot_board(board: Mapping[str, Any], path: str, *, title: str = "") -> str:
    """Left: each trial's metric by iteration. Right: best-so-far by total steps spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = board.get("metric", "metric")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    best_trial = (board.get("best") or {}).get("trial")
    for name, curve in sorted((board.get("curves") or {}).items()):
        points = [(c[1], c[3]) for c in curve if c[3] is not None]
        if not points:
            continue
        xs, ys = zip(*points)
        is_best = name == best_trial
        ax.plot(xs, ys, marker="o", markersize=2, linewidth=2.2 if is_best else 0.9,
                alpha=1.0 if is_best else 0.6, label=f"{name} (best)" if is_best else None)
    ax.set_xlabel("iteration (evaluation)")
    ax.set_ylabel(metric)
    ax.set_title("learning curves")
    if best_trial:
        ax.legend(loc="best", fontsize=8)
    bsf = board.get("best_so_far") or []
    if bsf:
        ax2.step([b[1] for b in bsf], [b[2] for b in bsf], where="post", color="black")
    ax2.set_xlabel("total training steps spent (all trials)")
    ax2.set_ylabel(f"best {metric} so far")
    ax2.set_title("best so far")
    fig.suptitle(title or f"sweep: {metric} ({board.get('mode', '')})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

"""The loss-curve PNG logged with every job (matplotlib, Agg backend: no display)."""
from __future__ import annotations

__all__ = ["loss_curve_png"]


def loss_curve_png(path: str, *, train: dict[str, list[tuple[int, float]]],
                   evals: dict[str, list[tuple[int, float]]] | None = None, title: str = "") -> str:
    """Plot training series (left axis) and eval series (right axis) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for name, points in sorted(train.items()):
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    handles, labels = ax.get_legend_handles_labels()
    if evals:
        ax2 = ax.twinx()
        for name, points in sorted(evals.items()):
            if points:
                xs, ys = zip(*sorted(points))
                ax2.plot(xs, ys, "o--", label=name, linewidth=1, markersize=3)
        ax2.set_ylabel("evaluation")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

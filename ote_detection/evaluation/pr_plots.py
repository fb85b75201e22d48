"""Precision/recall curve charts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import numpy as np

from ..utils.fileio import atomic_path

__all__ = ["save_pr_curves"]


def save_pr_curves(curves: dict, path_png: str, title: str) -> str:
    """Draw ``{name: (recall, precision, ap)}`` on one chart and save it as ``path_png``.

    NaN precision points (no detection above the threshold yet) are left out.  ``ap`` is a
    fraction (0..1) or None; it is shown in the legend when the name does not already hold it.
    Returns the path written.
    """
    # Figure + the Agg canvas directly: no pyplot, no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, (recall, precision, ap) in curves.items():
        r = np.asarray(recall, dtype=np.float64)
        p = np.asarray(precision, dtype=np.float64)
        ok = ~(np.isnan(r) | np.isnan(p))
        label = str(name)
        if ap is not None and "%" not in label and np.isfinite(ap):
            label = f"{label} (AP {100.0 * ap:.2f}%)"
        ax.plot(r[ok], p[ok], linewidth=2, label=label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(title)
    ax.grid(True, alpha=0.4)
    if curves:
        ax.legend(loc="lower left")
    # written beside and moved into place: a full or read-only disk is one line and keeps an older chart
    with atomic_path(path_png) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path_png

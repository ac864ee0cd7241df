"""Figures for every report: one matplotlib set-up, one way to finish an axes, one saver.

`save_figure` writes PNG + SVG that are byte-identical from one rebuild to the next, so that rebuilding a
committed run leaves `git status` clean: no date in the SVG, no matplotlib version in either file, and a
fixed `svg.hashsalt` (matplotlib otherwise salts the SVG's clip-path ids at random).
"""
from __future__ import annotations

import io
from pathlib import Path

from ..fileio import write_atomically

DPI = 150
SVG_HASH_SALT = "rwkv-bench"
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write `fig` to `<path>.png` and `<path>.svg` (path without suffix), close it, return both paths."""
    import matplotlib

    plt = pyplot()
    paths = []
    with matplotlib.rc_context({"svg.hashsalt": SVG_HASH_SALT}):
        for ext, metadata in METADATA.items():
            out = Path(f"{path}.{ext}")
            image = io.BytesIO()
            fig.savefig(image, format=ext, dpi=DPI, bbox_inches="tight", metadata=metadata)
            write_atomically(out, image.getvalue())
            paths.append(out)
    plt.close(fig)
    return paths


def finish_axes(ax, *, xlabel: str, ylabel: str, title: str | None = None, grid: str | None = "both",
                legend: bool | str = True, fontsize: int = 10) -> None:
    """Axis labels, a title, a light grid on `grid` ("both", "x", "y" or None) and a legend (`legend`:
    False, True for the best place, or a place such as "upper left")."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=fontsize)
    if grid:
        ax.grid(True, axis=grid, which="both", alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc=legend if isinstance(legend, str) else "best")

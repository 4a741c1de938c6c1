"""Figures: the Pareto front, before/after similarity matrices, image grids (PNG files).

Example:
    >>> plot_pareto(result.layers, result.chosen_names, "pareto.png")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from .io import atomic_path
from .selection import LayerScore


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_pareto(
    scores: Sequence[LayerScore], chosen: Sequence[str] | None, path: str | Path
) -> Path:
    """Alignment (x) against importance (y), log–log, one panel per tower, front highlighted."""
    plt = _pyplot()
    towers = sorted({s.tower for s in scores})
    fig, axes = plt.subplots(1, len(towers), figsize=(5.2 * len(towers), 4.2), squeeze=False)
    chosen = tuple(chosen or ())
    for ax, tower in zip(axes[0], towers):
        members = [s for s in scores if s.tower == tower]
        rest = [s for s in members if not s.on_front]
        front = sorted((s for s in members if s.on_front), key=lambda s: s.alignment)
        ax.scatter(
            [s.alignment for s in rest],
            [s.importance for s in rest],
            s=18,
            c="0.65",
            label="candidate layers",
        )
        ax.plot(
            [s.alignment for s in front],
            [s.importance for s in front],
            "o-",
            c="tab:red",
            ms=6,
            label="Pareto front",
        )
        for s in front:
            ax.annotate(
                s.label.split(".", 1)[1],
                (s.alignment, s.importance),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        for s in members:
            if s.names == chosen:
                ax.scatter(
                    [s.alignment],
                    [s.importance],
                    s=160,
                    facecolors="none",
                    edgecolors="tab:blue",
                    linewidths=2,
                    label=f"chosen: {s.label}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gradient alignment |cos(G_f, G_r)|")
        ax.set_ylabel("layer importance ‖G_f‖ / ‖θ‖")
        ax.set_title(f"{tower} tower")
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_similarity(
    before: torch.Tensor,
    after: torch.Tensor,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str = "image–text cosine similarity",
) -> Path:
    """Two heat maps side by side: similarity of images (rows) to texts (columns), before/after."""
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, 2, figsize=(2.0 + 1.1 * len(col_labels) * 2, 1.5 + 0.6 * len(row_labels))
    )
    low = float(min(before.min(), after.min()))
    high = float(max(before.max(), after.max()))
    for ax, matrix, name in zip(axes, (before, after), ("before", "after")):
        image = ax.imshow(matrix.numpy(), cmap="viridis", vmin=low, vmax=high)
        ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{float(matrix[i, j]):.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] < (low + high) / 2 else "black",
                )
        ax.set_title(f"{title} — {name}", fontsize=9)
        ax.set_xlabel("text", fontsize=8)
        ax.set_ylabel("image", fontsize=8)
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    return _save(fig, path)


def image_grid(
    rows: Sequence[Sequence[Image.Image]],
    path: str | Path,
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
) -> Path:
    """A labelled grid of images (e.g. generations before/after, one prompt per row)."""
    plt = _pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.6 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                ax.imshow(row[j])
            if j == 0 and i < len(row_labels):  # left of the row, clear of the column titles
                ax.text(
                    -0.06,
                    0.5,
                    row_labels[i],
                    transform=ax.transAxes,
                    fontsize=7,
                    ha="right",
                    va="center",
                    wrap=True,
                )
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=7)
    fig.tight_layout()
    return _save(fig, path)

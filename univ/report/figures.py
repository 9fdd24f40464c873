"""Figures drawn from the tables the library returns (heatmaps of layer x layer similarity, ...)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(n: int, ncols: int, size: tuple[float, float]):
    """(Figure, the first ``n`` axes) of a grid of ``n`` panels, ``ncols`` wide, each ``size`` inches; the
    unused axes of the last row are hidden."""
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def heatmap(matrix: pd.DataFrame | np.ndarray, title: str = "", ax=None, vmin=0.0, vmax=1.0,
            cmap: str = "magma", annot: bool | None = None, xlabel: str = "", ylabel: str = ""):
    """A labelled heatmap of a (rows x cols) matrix; returns the Figure."""
    import seaborn as sns

    plt = _plt()
    if ax is None:
        n_r, n_c = np.shape(matrix)
        fig, ax = plt.subplots(figsize=(1.2 + 0.55 * n_c, 1.0 + 0.45 * n_r))
    else:
        fig = ax.figure
    if annot is None:
        annot = max(np.shape(matrix)) <= 12
    sns.heatmap(matrix, ax=ax, vmin=vmin, vmax=vmax, cmap=cmap, annot=annot, fmt=".2f", square=False,
                cbar_kws={"shrink": 0.8}, annot_kws={"size": 7})
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig


def grid_figure(df: pd.DataFrame, metric: str, title: str | None = None, **heatmap_kwargs):
    """A heatmap Figure of a tidy comparison table (``univ.similarity.compare``'s) for one metric: rows are
    layers of A, columns layers of B (see :func:`univ.similarity.grid`)."""
    from ..similarity import grid

    return heatmap(grid(df, metric), title=title or metric, xlabel="layer_b", ylabel="layer_a", **heatmap_kwargs)

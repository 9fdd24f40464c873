"""Figures drawn from the tables the library returns (heatmaps of layer x layer similarity, ...)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _figure(figsize):
    """A Figure outside pyplot: the report holds it until written, pyplot does not count it towards its
    open-figure warning, and the caller's matplotlib backend is left as it is."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def panels(n: int, ncols: int, size: tuple[float, float]):
    """(Figure, the first ``n`` axes) of a grid of ``n`` panels, ``ncols`` wide, each ``size`` inches; the
    unused axes of the last row are hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _figure((size[0] * ncols, size[1] * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def heatmap(matrix: pd.DataFrame | np.ndarray, title: str = "", ax=None, vmin=0.0, vmax=1.0,
            cmap: str = "magma", annot: bool | None = None, xlabel: str = "", ylabel: str = "",
            cbar_label: str = "value", baseline: float | None = None, not_significant=None):
    """A labelled heatmap of a (rows x cols) matrix; returns the Figure.

    cbar_label: what the colours mean (the colorbar's label). baseline: the value a reader compares with (e.g. the
    mean of a permutation null), drawn as a line across the colorbar. not_significant: a (rows x cols) boolean
    matrix; those cells are hatched (and the legend says so).
    """
    from matplotlib.patches import Rectangle

    n_r, n_c = np.shape(matrix)
    if ax is None:
        fig = _figure((2.0 + 0.6 * n_c, 1.4 + 0.5 * n_r))
        ax = fig.subplots()
    else:
        fig = ax.figure
    if annot is None:
        annot = max(n_r, n_c) <= 12
    _cells(ax, matrix, vmin, vmax, cmap, annot, cbar_label)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    ax.tick_params(labelsize=8)
    if labels and max(map(len, labels)) > 4:  # long layer names would run into each other
        ax.set_xticklabels(labels, rotation=40, ha="right", rotation_mode="anchor")
    cbar = ax.collections[0].colorbar
    cbar.ax.tick_params(labelsize=8)
    cbar.ax.yaxis.label.set_size(9)
    if baseline is not None and np.isfinite(baseline):
        cbar.ax.axhline(baseline, color="#2c7fb8", lw=2.5)
        cbar.set_label(f"{cbar_label} (blue line: baseline {baseline:.2g})", size=9)
    if not_significant is not None:
        ns = np.asarray(not_significant, dtype=bool)
        if ns.shape != (n_r, n_c):
            raise ValueError(f"not_significant: expected shape {(n_r, n_c)} like the matrix, got {ns.shape}")
        for i, j in zip(*np.nonzero(ns)):
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, hatch="///", edgecolor="#bbbbbb", lw=0))
        if ns.any():
            title = f"{title}\n(hatched: not significant)" if title else "hatched: not significant"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    return fig


def _cells(ax, matrix, vmin, vmax, cmap, annot: bool, cbar_label: str) -> None:
    """The coloured cells (row 0 at the top, missing values blank), their values written in them, tick labels
    from a DataFrame's index and columns, and a labelled colorbar: seaborn's heatmap layout, drawn directly
    (seaborn draws the whole figure once per heatmap to check its tick labels, so a figure of n panels cost
    O(n^2) draws: 6 of the 9 seconds of the main job's figures)."""
    values = np.asarray(matrix, dtype=float)
    n_r, n_c = values.shape
    mesh = ax.pcolormesh(np.ma.masked_invalid(values), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xlim(0, n_c)
    ax.set_ylim(n_r, 0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(length=0)
    if isinstance(matrix, pd.DataFrame):
        ax.set_xticks(np.arange(n_c) + 0.5, [str(c) for c in matrix.columns], rotation=0)
        ax.set_yticks(np.arange(n_r) + 0.5, [str(i) for i in matrix.index], rotation=0)
        ax.set_xlabel(matrix.columns.name or "")
        ax.set_ylabel(matrix.index.name or "")
    else:
        ax.set_xticks(np.arange(n_c) + 0.5, [str(c) for c in range(n_c)])
        ax.set_yticks(np.arange(n_r) + 0.5, [str(i) for i in range(n_r)])
    cbar = ax.figure.colorbar(mesh, ax=ax, shrink=0.85)
    cbar.set_label(cbar_label)
    cbar.outline.set_visible(False)
    if annot:
        rgb = mesh.cmap(mesh.norm(values))[..., :3]
        lin = np.where(rgb <= 0.03928, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
        luminance = lin @ np.array([0.2126, 0.7152, 0.0722])  # dark text on light cells, as seaborn
        for i, j in zip(*np.nonzero(np.isfinite(values))):
            ax.text(j + 0.5, i + 0.5, f"{values[i, j]:.2f}", ha="center", va="center", size=8,
                    color=".15" if luminance[i, j] > 0.408 else "w")


def grid_figure(df: pd.DataFrame, metric: str, title: str | None = None, alpha: float = 0.05, **heatmap_kwargs):
    """A heatmap Figure of a tidy comparison table (``univ.similarity.compare``'s) for one metric: rows are
    layers of A, columns layers of B (see :func:`univ.similarity.grid`). The colorbar names the metric and marks
    the mean baseline (``baseline_mean``) when the table has one; cells whose q-value (else p-value) is at least
    ``alpha`` are hatched."""
    from ..similarity import grid

    values = grid(df, metric)
    sub = df[df["metric"] == metric]
    kw = {"cbar_label": metric}
    if "baseline_mean" in sub.columns and sub["baseline_mean"].notna().any():
        kw["baseline"] = float(sub["baseline_mean"].mean())
    p = next((c for c in ("q_value", "p_value") if c in sub.columns and sub[c].notna().any()), None)
    if p is not None:
        kw["not_significant"] = grid(df, metric, value=p).to_numpy() >= alpha
    return heatmap(values, title=title or metric, xlabel="layer_b", ylabel="layer_a", **(kw | heatmap_kwargs))

"""Many layers against many: the measures that are functions of second moments (linear CKA, its debiased
form, the Procrustes similarity) from per-layer statistics computed once and one cross product per pair.

In a layer x layer grid over N networks, :func:`linear_cka` and :func:`procrustes` would centre each layer and
form its (d, d) Gram once per pair; here that happens once per layer:

    stats = [layer_moments(X) for X in layers]            # once per layer
    moment_measures(stats[i], stats[j])                   # {"linear_cka": ..., "linear_cka_debiased": ...,
                                                          #  "procrustes": ...}, equal to the pairwise functions
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._core import center, cka_ratio, debiased_hsic, matrix, sym_fro2


class LayerMoments(NamedTuple):
    """One layer's statistics (centred and scaled by a power of two, so the measures are unchanged)."""

    Xc: torch.Tensor
    """(n, d) centred activations."""
    row_sq: torch.Tensor
    """(n,) squared norms of the centred rows."""
    total: float
    """||Xc||_F^2."""
    self_hsic: float
    """||Xc^T Xc||_F^2 (the biased self-HSIC, times (n - 1)^2)."""
    self_hsic_debiased: float
    """The unbiased self-HSIC, times n (n - 3)."""


def layer_moments(X, name: str = "X", device=None) -> LayerMoments:
    """The statistics of X: (n, d) that :func:`moment_measures` needs (n >= 4)."""
    X = matrix(X, name, min_rows=4, device=device, rescale=True, what="linear CKA")
    Xc = center(X)
    r = (Xc * Xc).sum(1)
    total, xx = float(r.sum()), float(sym_fro2(Xc))
    return LayerMoments(Xc, r, total, xx, float(debiased_hsic(xx, r, r, total, total, Xc.shape[0])))


def moment_measures(a: LayerMoments, b: LayerMoments) -> dict[str, float]:
    """linear_cka, linear_cka_debiased and procrustes of two layers (the same n inputs, same order), equal to
    :func:`linear_cka`, ``linear_cka(debiased=True)`` and :func:`procrustes` to rounding."""
    if a.Xc.shape[0] != b.Xc.shape[0]:
        raise ValueError(f"a and b must describe the same number of samples: got {a.Xc.shape[0]} and "
                         f"{b.Xc.shape[0]}")
    n = a.Xc.shape[0]
    C = a.Xc.T @ b.Xc
    xy = float((C * C).sum())
    return {
        "linear_cka": cka_ratio(xy, a.self_hsic, b.self_hsic, False, ("a", "b")),
        "linear_cka_debiased": cka_ratio(debiased_hsic(xy, a.row_sq, b.row_sq, a.total, b.total, n),
                                         a.self_hsic_debiased, b.self_hsic_debiased, True, ("a", "b")),
        "procrustes": min(1.0, float(torch.linalg.svdvals(C).sum()) / (a.total * b.total) ** 0.5),
    }

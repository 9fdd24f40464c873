"""Second-moment and distance-based dependence measures: Bures distance, effective number of shared
dimensions (ENSD), distance correlation. X: (n, d1), Y: (n, d2), rows are samples, float64."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ._core import center, pair, sym_fro2


class ENSDResult(NamedTuple):
    """ensd: effective number of shared dimensions; pr_x, pr_y: participation ratios of X and Y."""

    ensd: float
    pr_x: float
    pr_y: float


def bures_distance(X, Y, device=None) -> float:
    """Bures distance between the centred linear kernels of X: (n, d1) and Y: (n, d2) -> float >= 0.

    d_B = sqrt(tr Kx + tr Ky - 2 tr (Kx^1/2 Ky Kx^1/2)^1/2) with K = Xc Xc^T, computed in feature space as
    sqrt(||Xc||^2 + ||Yc||^2 - 2 ||Xc^T Yc||_*): the unnormalised Procrustes size-and-shape distance (Harvey
    et al. 2023's duality), as nn_similarity_index's ``bures_distance``. Symmetric; invariant to orthogonal
    maps, translation and permutation of units (not to scaling).
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="the Bures distance", rescale=False)
    Xc, Yc = center(X), center(Y)
    nuc = torch.linalg.svdvals(Xc.T @ Yc).sum()
    return float(torch.sqrt((Xc.square().sum() + Yc.square().sum() - 2 * nuc).clamp_min(0.0)))


def ensd(X, Y, device=None) -> ENSDResult:
    """Effective number of shared dimensions (Giaffar et al. 2023) of X: (n, d1) and Y: (n, d2).

    With K = Xc Xc^T: PR(X) = (tr Kx)^2 / tr Kx^2 (participation ratio) and
    ENSD = PR(X) PR(Y) tr(Kx Ky) / (tr Kx tr Ky) = tr Kx tr Ky tr(Kx Ky) / (tr Kx^2 tr Ky^2), in
    [0, min(PR(X), PR(Y))]; ENSD / sqrt(PR(X) PR(Y)) is linear CKA. Symmetric; invariant to orthogonal
    maps, isotropic scaling, translation and permutation of units.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="ENSD")
    Xc, Yc = center(X), center(Y)
    tx, ty = Xc.square().sum(), Yc.square().sum()
    xx, yy, xy = sym_fro2(Xc), sym_fro2(Yc), (Xc.T @ Yc).square().sum()
    return ENSDResult(float(tx * ty * xy / (xx * yy)), float(tx * tx / xx), float(ty * ty / yy))


def _double_centred_distances(X: torch.Tensor) -> torch.Tensor:
    Xc = center(X)
    sq = (Xc * Xc).sum(1)
    D = (sq[:, None] + sq[None, :] - 2 * Xc @ Xc.T).clamp_min(0.0).sqrt()
    D.fill_diagonal_(0)
    D = D - D.mean(0, keepdim=True)
    return D - D.mean(1, keepdim=True)


def distance_correlation(X, Y, device=None) -> float:
    """Distance correlation (Szekely et al. 2007) of X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    A, B: double-centred Euclidean distance matrices (n, n); dCor = sqrt(<A, B> / sqrt(<A, A> <B, B>))
    (the V-statistic, as ReSi's ``DistanceCorrelation``). 0 in the population iff X and Y are independent.
    Symmetric; invariant to orthogonal maps, isotropic scaling, translation and permutation of units.
    Memory O(n^2).
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="distance correlation")
    A, B = _double_centred_distances(X), _double_centred_distances(Y)
    ab, aa, bb = (A * B).sum(), (A * A).sum(), (B * B).sum()
    return float(torch.sqrt((ab / torch.sqrt(aa * bb)).clamp_min(0.0)))


def ensd_angular(X, Y, device=None) -> float:
    """The ENSD repository's normalised angular distance (2 / pi) arccos(ENSD / sqrt(PR(X) PR(Y))) in [0, 1]
    (= (2 / pi) arccos(linear CKA))."""
    r = ensd(X, Y, device=device)
    return (2 / math.pi) * math.acos(min(1.0, max(-1.0, r.ensd / math.sqrt(r.pr_x * r.pr_y))))

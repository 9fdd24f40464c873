"""Nearest-neighbour measures beside :func:`~univ.similarity.geometry.mutual_knn`: the Jaccard similarity of
kNN sets, CKNNA and cycle kNN (Huh et al. 2024). X: (n, d1), Y: (n, d2), rows are samples; neighbours never
include the sample itself, and the neighbour sets are exactly float64's (:func:`knn_indices`)."""

from __future__ import annotations

import torch

from ._core import pair
from .geometry import knn_indices


def _k(k, n: int) -> int:
    from .._checks import check_int

    k = check_int(k, "k", 1)
    if k >= n:
        raise ValueError(f"k: must be an integer with 1 <= k < n = {n} (self is excluded), got {k}")
    return k


def _unit_rows(X: torch.Tensor, name: str) -> torch.Tensor:
    norms = torch.linalg.norm(X, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"{name}: row {int(torch.nonzero(norms.flatten() == 0)[0])} is all zero; its cosine "
                         "neighbours are undefined")
    return X / norms


def jaccard_knn(X, Y, k: int = 10, center: bool = False, device=None) -> float:
    """Mean Jaccard similarity |A_i & B_i| / |A_i | B_i| of each sample's k nearest neighbours in X: (n, d1)
    (A_i) and in Y: (n, d2) (B_i) under cosine similarity of the raw rows -> float in [0, 1].

    ReSi's (and llm_repsim's) ``jaccard_similarity`` (k=10, ``NearestNeighbors(metric="cosine")``, the
    repository's ``jaccard_similarity``). ReSi compares the raw rows; llm_repsim centres columns first (then
    translation invariant): univ follows ReSi, the measure's source; ``center=True`` gives llm_repsim's value.
    Symmetric; invariant to orthogonal maps, isotropic scaling and permutation of units. Needs 1 <= k < n.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="the Jaccard kNN similarity")
    k = _k(k, X.shape[0])
    if center:
        X, Y = X - X.mean(0), Y - Y.mean(0)
    a, b = knn_indices(_unit_rows(X, "X"), k), knn_indices(_unit_rows(Y, "Y"), k)
    shared = (a[:, :, None] == b[:, None, :]).sum(dim=(1, 2)).double()
    return float((shared / (2 * k - shared)).mean())


def cycle_knn(X, Y, k: int = 10, device=None) -> float:
    """Cycle kNN (Huh et al. 2024's ``cycle_knn``) of X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    Neighbours by inner product of the raw rows (as platonic-rep). The fraction of samples i that are among
    the X-neighbours of at least one of their own Y-neighbours: going i -> (kNN in Y) -> (kNN in X) returns to
    i. Not symmetric; invariant to orthogonal maps, isotropic scaling and permutation of units.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="cycle kNN")
    k = _k(k, X.shape[0])
    a, b = knn_indices(X, k), knn_indices(Y, k)
    back = a[b]  # (n, k, k): the X-neighbours of each Y-neighbour
    home = torch.arange(X.shape[0], device=back.device)[:, None, None]
    return float((back == home).flatten(1).any(1).double().mean())


def _masked_hsic(X: torch.Tensor, Y: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor, chunk: int = 1024):
    """Song et al.'s unbiased HSIC of (mask * X X^T, mask * Y Y^T), with the (n, n) mask given sparsely by each
    row's columns ``idx``: (n, k) where ``keep``: (n, k) is True; O(n k (k + d)) time, O(n k) memory."""
    n = X.shape[0]
    kv = torch.empty(idx.shape, dtype=X.dtype, device=X.device)
    lv = torch.empty_like(kv)
    for s in range(0, n, chunk):  # the kept entries of K and L: rows . their neighbours
        rows = slice(s, s + chunk)
        kv[rows] = torch.einsum("rd,rkd->rk", X[rows], X[idx[rows]])
        lv[rows] = torch.einsum("rd,rkd->rk", Y[rows], Y[idx[rows]])
    kv, lv = kv * keep, lv * keep
    rows = torch.arange(n, device=X.device)[:, None].expand_as(idx)
    i, j = rows[keep], idx[keep]
    # sum_ij K~_ij L~_ji: the entries (i, j) whose transpose (j, i) is also kept
    key, key_t = i * n + j, j * n + i
    order = torch.argsort(key)
    pos = torch.searchsorted(key[order], key_t).clamp_max(key.numel() - 1)
    hit = key[order][pos] == key_t
    t1 = (kv[keep][hit] * lv[keep][order][pos][hit]).sum()
    col_k = torch.zeros(n, dtype=X.dtype, device=X.device).index_add_(0, j, kv[keep])  # 1^T K~
    row_l = lv.sum(1)  # L~ 1
    t2 = kv.sum() * lv.sum() / ((n - 1) * (n - 2))
    t3 = 2 * (col_k @ row_l) / (n - 2)
    return (t1 + t2 - t3) / (n * (n - 3))


def cknna(X, Y, k: int = 10, device=None) -> float:
    """CKNNA (Huh et al. 2024): CKA restricted to mutual nearest neighbours, of X: (n, d1) and Y: (n, d2)
    -> float (<= 1 in practice; may be < 0).

    K = X X^T, L = Y Y^T on the raw rows (as platonic-rep's ``cknna``, unbiased form); M_ij = 1 when j is among
    the k nearest neighbours (inner product, self excluded) of i in both spaces; CKNNA =
    HSIC_u(M K, M L) / sqrt(HSIC_u(M_X K, M_X K) HSIC_u(M_Y L, M_Y L)) with Song et al.'s unbiased HSIC and
    M_X, M_Y each side's own kNN mask. platonic-rep adds 1e-6 to the denominator and runs in float32; univ
    omits the constant (which makes the value depend on the data's scale) and computes in float64, without
    forming an (n, n) matrix. Not symmetric (the masks are not symmetric matrices, and Song's estimator of two
    non-symmetric matrices depends on their order: platonic-rep's value too); invariant to orthogonal maps,
    isotropic scaling and permutation of units. Needs 2 <= k < n and n >= 4.
    """
    X, Y = pair(X, Y, min_rows=4, device=device, what="CKNNA")
    k = _k(k, X.shape[0])
    if k < 2:
        raise ValueError(f"k: CKNNA needs k >= 2 (as platonic-rep), got {k}")
    a, b = knn_indices(X, k), knn_indices(Y, k)
    both = (a[:, :, None] == b[:, None, :]).any(2)
    everything = torch.ones_like(both)
    kl = _masked_hsic(X, Y, a, both)
    kk, ll = _masked_hsic(X, X, a, everything), _masked_hsic(Y, Y, b, everything)
    if float(kk) <= 0 or float(ll) <= 0:
        raise ValueError(f"{'X' if float(kk) <= 0 else 'Y'}: CKNNA is undefined (the unbiased HSIC of its "
                         "kNN-masked kernel with itself is not positive)")
    return float(kl / torch.sqrt(kk * ll))

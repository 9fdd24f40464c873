"""Unit matching: compare two representations after pairing their units (columns), one to one (Hungarian
assignment) or softly (optimal transport, Khosla & Williams 2023). X: (n, d1), Y: (n, d2), rows are
samples; the narrower side is zero-padded where a one-to-one pairing needs equal widths."""

from __future__ import annotations

import numpy as np
import torch

from ._core import center, pair


def _assign(S: np.ndarray) -> float:
    """max over one-to-one pairings of rows and columns of S: (d1, d2) of the summed entries."""
    from scipy.optimize import linear_sum_assignment

    r, c = linear_sum_assignment(S, maximize=True)
    return float(S[r, c].sum())


def permutation_score(X, Y, device=None) -> float:
    """Cosine of netrep's ``PermutationMetric`` between X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    Centre the columns, zero-pad to equal width, and align Y's units to X's by the permutation P maximising
    <Xc, Yc P> (Hungarian assignment on Xc^T Yc): max_P <Xc, Yc P> / (||Xc|| ||Yc||) (for nonnegative
    trade-offs the best pairing; 1 iff Y is a reordering of X up to translation and scale). Its arccos is the
    repository's ``permutation_metric-distance=angular`` and sqrt(||Xc||^2 + ||Yc||^2 - 2 ||Xc|| ||Yc|| s)
    = min_P ||Xc - Yc P||_F its ``distance=euclidean``. Symmetric; invariant to isotropic scaling, translation
    and permutation of units (not to rotations).
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="the permutation metric")
    Xc, Yc = center(X), center(Y)
    top = _assign((Xc.T @ Yc).cpu().numpy())
    return min(1.0, max(0.0, top / float(torch.linalg.norm(Xc) * torch.linalg.norm(Yc))))


def permutation_procrustes(X, Y, device=None) -> float:
    """ReSi's ``PermutationProcrustes`` between X: (n, d1) and Y: (n, d2) -> float >= 0: min over unit
    permutations P of ||X - Y P||_F on the raw (uncentred, unscaled) matrices, the narrower zero-padded.

    = sqrt(||X||^2 + ||Y||^2 - 2 max_P <X, Y P>). Symmetric; invariant only to permutation of units.
    """
    from scipy.optimize import linear_sum_assignment

    X, Y = pair(X, Y, min_rows=1, device=device, rescale=False)
    r, c = linear_sum_assignment((X.T @ Y).cpu().numpy(), maximize=True)
    r, c = torch.as_tensor(r, device=X.device), torch.as_tensor(c, device=X.device)
    # the residual of the matched columns, plus the unmatched (zero-padded) ones; no ||X||^2 + ||Y||^2 - 2 <.,.>
    # cancellation, so a reordered copy gives exactly 0
    free_x = torch.ones(X.shape[1], dtype=torch.bool, device=X.device).index_fill_(0, r, False)
    free_y = torch.ones(Y.shape[1], dtype=torch.bool, device=Y.device).index_fill_(0, c, False)
    rest = X[:, free_x].square().sum() + Y[:, free_y].square().sum()
    return float(torch.sqrt((X[:, r] - Y[:, c]).square().sum() + rest))


def unit_correlations(X, Y, device=None) -> np.ndarray:
    """Pearson correlations (d1, d2) between the units (columns) of X: (n, d1) and Y: (n, d2); a constant
    unit raises (its correlation is undefined: drop it first)."""
    X, Y = pair(X, Y, min_rows=2, device=device, what="unit correlation")
    cols = []
    for T, name in ((X, "X"), (Y, "Y")):
        Tc = center(T)
        norms = torch.linalg.norm(Tc, dim=0)
        if bool((norms == 0).any()):
            raise ValueError(f"{name}: unit (column) {int(torch.nonzero(norms == 0)[0])} is constant; its "
                             "correlation with any unit is undefined (drop constant units first)")
        cols.append(Tc / norms)
    return (cols[0].T @ cols[1]).cpu().numpy()


def hard_correlation_match(X, Y, device=None) -> float:
    """Mean correlation of the best one-to-one pairing of units of X: (n, d1) and Y: (n, d2) -> [-1, 1].

    Hungarian assignment maximising the summed Pearson correlations (:func:`unit_correlations`); with
    d1 != d2 only min(d1, d2) pairs count (ReSi's ``HardCorrelationMatch``). Symmetric; invariant to
    translation, isotropic (indeed per-unit) scaling and permutation of units.
    """
    C = unit_correlations(X, Y, device=device)
    return _assign(C) / min(C.shape)


def soft_correlation_match(X, Y, device=None) -> float:
    """Soft-matching correlation score (Khosla & Williams 2023) of X: (n, d1) and Y: (n, d2) -> [-1, 1].

    max over transport plans T >= 0 with row sums 1/d1 and column sums 1/d2 of sum_ij T_ij C_ij, C the unit
    correlations (:func:`unit_correlations`): each unit's mass is spread over the other side's units, so
    unequal widths need no padding; d1 = d2 gives the one-to-one (Hungarian) pairing (Birkhoff). The
    repository's ``soft_correlation_match`` as NeuroAIMetrics (``ot.emd`` on 1 - C) computes it; ReSi's
    measure of that name instead averages each unit's best correlation over both directions (not a transport
    plan): univ follows the optimal-transport definition of the paper. Solved exactly: Hungarian assignment
    for equal widths (O(d^3)), otherwise a HiGHS linear program over the d1 d2 plan entries (memory and time
    grow with d1 d2: thousands of units on each side take minutes). Symmetric; invariant to translation,
    isotropic (indeed per-unit) scaling and permutation of units.
    """
    C = unit_correlations(X, Y, device=device)
    d1, d2 = C.shape
    if d1 == d2:
        return _assign(C) / d1
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, eye, kron, vstack

    rows = kron(eye(d1), csr_matrix(np.ones((1, d2))))  # sum_j T_ij = 1 / d1
    cols = kron(csr_matrix(np.ones((1, d1))), eye(d2))  # sum_i T_ij = 1 / d2
    b = np.concatenate([np.full(d1, 1 / d1), np.full(d2, 1 / d2)])
    res = linprog(-C.ravel(), A_eq=vstack([rows, cols]).tocsr(), b_eq=b, bounds=(0, None), method="highs")
    if res.status != 0:  # pragma: no cover  (a feasible bounded LP: HiGHS only fails on resource limits)
        raise ValueError(f"X, Y: the optimal transport problem ({d1} x {d2} units) was not solved: {res.message}")
    return float(-res.fun)

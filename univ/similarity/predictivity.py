"""Regression predictivity: how well a linear (or ridge) map from one representation predicts the other.

X: (n, d1) predicts Y: (n, d2) (``reverse=True``: Y predicts X), rows are samples, float64. The direction
follows the similarity-repository's regression peers (DeepDive, NeuroAIMetrics): ``measure(X, Y)`` scores
the prediction of Y from X, and its ``-reverse`` names the prediction of X from Y.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_int, check_real
from ._core import center, pair

SCORES = ("r2", "pearsonr", "pearsonr2")


def kfold(n: int, folds: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic contiguous folds over n samples (scikit-learn's ``KFold(folds, shuffle=False)``): the
    first n % folds test blocks hold n // folds + 1 samples, the rest n // folds -> [(train, test)]."""
    folds = check_int(folds, "folds", 2)
    if folds > n:
        raise ValueError(f"folds: must be <= n = {n} (every fold needs a test sample), got {folds}")
    sizes = [n // folds + (i < n % folds) for i in range(folds)]
    out, start, idx = [], 0, torch.arange(n)
    for s in sizes:
        test = idx[start:start + s]
        out.append((torch.cat([idx[:start], idx[start + s:]]), test))
        start += s
    return out


def _fit_predict(Xtr, Ytr, Xte, ridge: float) -> torch.Tensor:
    """Least squares (ridge = 0: minimum-norm) or ridge regression with an unpenalised intercept."""
    mx, my = Xtr.mean(0), Ytr.mean(0)
    A, B = Xtr - mx, Ytr - my
    if ridge == 0:
        W = torch.linalg.pinv(A) @ B
    else:  # (A^T A + lambda I)^-1 A^T B, through the smaller of the two Gram matrices
        if A.shape[1] <= A.shape[0]:
            W = torch.linalg.solve(A.T @ A + ridge * torch.eye(A.shape[1], dtype=A.dtype, device=A.device), A.T @ B)
        else:
            W = A.T @ torch.linalg.solve(A @ A.T + ridge * torch.eye(A.shape[0], dtype=A.dtype, device=A.device), B)
    return (Xte - mx) @ W + my


def _columns_score(Y: torch.Tensor, P: torch.Tensor, score: str) -> float:
    """Mean over Y's non-constant columns of the per-column score of predictions P (both (n, d))."""
    Yc = center(Y)
    ss = (Yc * Yc).sum(0)
    keep = ss > 0
    Yc, P, ss = Yc[:, keep], P[:, keep], ss[keep]
    if score == "r2":  # scikit-learn's r2_score per column: 1 - SS_res / SS_tot (around the mean of all n)
        return float((1 - ((Y[:, keep] - P) ** 2).sum(0) / ss).mean())
    Pc = center(P)
    sp = (Pc * Pc).sum(0)
    # a column whose predictions are constant has no linear association with its target: r = 0
    r = torch.where(sp > 0, (Yc * Pc).sum(0) / torch.sqrt(ss * sp.clamp_min(1e-300)), torch.zeros_like(sp))
    return float((r if score == "pearsonr" else r * r).mean())


def regression_predictivity(X, Y, folds: int = 5, ridge: float = 0.0, score: str = "r2", reverse: bool = False,
                            device=None) -> float:
    """Cross-validated linear predictivity of Y: (n, d2) from X: (n, d1) -> float.

    Over ``folds`` deterministic contiguous folds (:func:`kfold`), fit Y ~ X W + b on the other folds (least
    squares with ``ridge=0``, the minimum-norm solution when X is rank deficient; otherwise ridge with penalty
    ``ridge`` on W and none on b), predict the held-out fold, and score the n pooled out-of-fold predictions
    per column of Y, averaged over columns: ``score="r2"`` (1 - SS_res / SS_tot, <= 1, negative when worse
    than the mean), ``"pearsonr"`` (Pearson r of prediction and target, in [-1, 1]) or ``"pearsonr2"`` (its
    square). Constant columns of the target are left out of the mean. ``reverse``: predict X from Y.

    This is DeepDive's ``neural_regression`` (scikit-learn ``Ridge(alpha=ridge)``, ``KFold(folds)`` unshuffled,
    ``r2_score``/``pearsonr`` per column, mean), the repository's ``ridge-lambda=L-{score}-cv=Kfolds``.
    For ``linear_regression-{score}-cv=Kfolds`` univ fits ordinary least squares; DeepDive's wrapper under that
    name passes ``alphas=[0]`` to an argument its k-fold path ignores, so it fits ``Ridge(alpha=1)`` too
    (univ's ``ridge-lambda=1-...`` value). Not symmetric; invariant to permutation and translation of units
    on both sides, with ``ridge=0`` also to isotropic scaling (and to any invertible linear map of X).
    """
    folds = check_int(folds, "folds", 2)
    ridge = check_real(ridge, "ridge", 0.0)
    check_choice(score, "score", SCORES)
    X, Y = pair(X, Y, min_rows=2, device=device, rescale=False, what="regression predictivity")
    if reverse:
        X, Y = Y, X
    if folds > X.shape[0]:
        raise ValueError(f"folds: must be <= n = {X.shape[0]} (every fold needs a test sample), got {folds}")
    P = torch.empty_like(Y)
    for train, test in kfold(X.shape[0], folds):
        train, test = train.to(X.device), test.to(X.device)
        P[test] = _fit_predict(X[train], Y[train], X[test], ridge)
    return _columns_score(Y, P, score)


def linear_regression_r2(X, Y, reverse: bool = False, device=None) -> float:
    """In-sample fraction of Y's total variance explained by a least-squares map from X -> float in [0, 1].

    ||P_X Yc||_F^2 / ||Yc||_F^2 with P_X the orthogonal projection onto the span of the centred X: (n, d1)
    (Yc: the centred Y: (n, d2)); the variance-weighted R^2 of ReSi's ``LinearRegression`` (Klabunde et al.),
    which projects its FIRST argument onto the second's span, i.e. scores X from Y: univ keeps the direction
    of its other regression measures (Y from X) and ReSi's value is univ's ``reverse=True``. Not symmetric;
    invariant to any invertible linear map and translation of X and to orthogonal maps, isotropic scaling,
    translation and permutation of Y's units.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="linear regression")
    if reverse:
        X, Y = Y, X
    Xc, Yc = center(X), center(Y)
    U, S, _ = torch.linalg.svd(Xc, full_matrices=False)
    U = U[:, S > S[0] * max(Xc.shape) * torch.finfo(S.dtype).eps]
    return float((U.T @ Yc).square().sum() / Yc.square().sum())


def ridge_r2(X, Y, ridge: float = 1.0, reverse: bool = False, device=None) -> float:
    """In-sample R^2 of a ridge map from X: (n, d1) to Y: (n, d2) without intercept -> float (<= 1).

    W = (X^T X + ridge I)^-1 X^T Y on the raw (uncentred) matrices, predictions X W, then the mean over Y's
    non-constant columns of 1 - mean((Y - XW)^2) / var(Y): brain_language_nlp's ``ridge`` and ``kernel_ridge``
    wrapped with ``R2`` (Toneva & Wehbe 2019), the repository's ``ridge-lambda=L-r2``. No intercept, so not
    translation invariant; with ``ridge > 0`` not scale invariant either. Not symmetric; invariant to
    permutation of units. ``reverse``: predict X from Y.
    """
    ridge = check_real(ridge, "ridge", 0.0)
    X, Y = pair(X, Y, min_rows=2, device=device, rescale=False, what="ridge regression")
    if reverse:
        X, Y = Y, X
    if X.shape[1] <= X.shape[0]:
        eye = torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
        P = X @ torch.linalg.lstsq(X.T @ X + ridge * eye, X.T @ Y).solution
    else:  # the dual (kernel) form: X^T (X X^T + ridge I)^-1 Y
        eye = torch.eye(X.shape[0], dtype=X.dtype, device=X.device)
        P = X @ (X.T @ torch.linalg.lstsq(X @ X.T + ridge * eye, Y).solution)
    return _columns_score(Y, P, "r2")

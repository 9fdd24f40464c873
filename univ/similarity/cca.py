"""Canonical correlation analysis and its network-comparison variants: CCA, SVCCA, PWCCA.

All three guard against the degenerate regime of Kornblith et al. (2019), Theorem 1: with n samples
the centred data span at most n - 1 dimensions, so when a side has n - 1 or more features every
canonical correlation is 1 whatever the data. ``cca`` and ``pwcca`` raise there (their input width is
the raw feature count); ``svcca`` warns, since its width is only known after the SVD reduction.
When d1 + d2 > n - 1, some correlations are forced to 1 and all three warn.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .._checks import as_matrix, check_fraction, check_int, check_positive, check_same_n
from ..utils import one_blas_thread
from ._core import center, degenerate_check, gram, matrix, pair, source_eps


class CCAResult(NamedTuple):
    """rho: canonical correlations, sorted descending, shape (min(r1, r2),) (r = numerical rank);
    mean: mean of rho; r2: mean of rho^2 (Kornblith et al.'s R^2_CCA)."""

    rho: np.ndarray
    mean: float
    r2: float


def _span_basis(Xc: torch.Tensor, eps: float) -> torch.Tensor:
    """Orthonormal basis (n, r) of the column span of Xc, r its numerical rank at the precision ``eps`` the
    data were computed in (a rank-6 layer of float32 activations in 16 units has rank 6, not 16: its float32
    rounding is not signal).

    Householder QR then an SVD of R: no normal equations, so ill-conditioned activations (nearly
    collinear neurons) do not lose half their digits the way covariance-based CCA does.
    """
    n, d = Xc.shape
    Q, R = torch.linalg.qr(Xc)
    U, S, _ = torch.linalg.svd(R)
    tol = S[0] * max(n, d) * max(eps, torch.finfo(S.dtype).eps)
    r = int((S > tol).sum())
    return Q @ U[:, :r]


def cca(X, Y, device=None) -> CCAResult:
    """CCA between X: (n, d1) and Y: (n, d2) -> CCAResult(rho, mean, r2).

    All min(d1, d2) canonical correlations are kept (not google/svcca's 98%-mass truncation); rank-
    deficient sides (dead or duplicated neurons) contribute only their numerical rank. Raises when
    n <= max(d1, d2) + 1 (degenerate, see module docstring). Invariant to any invertible linear
    map and translation of either side; symmetric.
    """
    eps_x, eps_y = source_eps(X), source_eps(Y)
    X, Y = pair(X, Y, min_rows=3, device=device, what="CCA")
    n = X.shape[0]
    degenerate_check(n, X.shape[1], Y.shape[1], "cca", strict=True)
    Qx, Qy = _span_basis(center(X), eps_x), _span_basis(center(Y), eps_y)
    if Qx.shape[1] == 0 or Qy.shape[1] == 0:
        raise ValueError(f"{'X' if Qx.shape[1] == 0 else 'Y'}: has zero variance; CCA is undefined")
    rho = torch.linalg.svdvals(Qx.T @ Qy).clamp(0.0, 1.0)
    return CCAResult(rho.cpu().numpy(), float(rho.mean()), float((rho * rho).mean()))


def _scatter_whitener(C: torch.Tensor, n: int, variance_kept: float | None = None) -> torch.Tensor:
    """W: (d, k) with W^T C W = I_k, from a centred scatter C = Xc^T Xc: (d, d) of n samples, so that
    Xc @ W is an orthonormal basis of principal directions: all k = numerical-rank ones (for CCA) or, with
    ``variance_kept``, the fewest top ones keeping that fraction of the variance (SVCCA).

    Eigendecomposition of C (O(d^3)): the rank cut is eigenvalue > largest * max(n, d) * eps, the accuracy
    of a scatter's eigenvalues; the kept directions have the large eigenvalues, which the squared
    conditioning of the scatter does not hurt.
    """
    lam, V = torch.linalg.eigh(C)
    lam, V = lam.flip(0).clamp_min(0.0), V.flip(1)
    rank = int((lam > lam[0] * max(n, C.shape[0]) * torch.finfo(lam.dtype).eps).sum())
    k = rank
    if variance_kept is not None:
        frac = torch.cumsum(lam, 0) / lam.sum()
        k = max(1, min(int((frac < variance_kept - 1e-12).sum()) + 1, rank))
    return V[:, :k] / torch.sqrt(lam[:k])


def svcca(X, Y, variance_kept: float = 0.99, device=None) -> float:
    """SVCCA (Raghu et al. 2017) between X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    google/svcca's recipe: centre, SVD, keep the smallest k whose cumulative squared singular values
    reach ``variance_kept`` of the total, CCA on the kept directions, mean of all min(k1, k2)
    canonical correlations. Invariant to orthogonal maps, isotropic scaling and translation (not to
    general invertible maps, which change the kept subspace); symmetric. Warns when degenerate.
    """
    check_fraction(variance_kept, "variance_kept")
    X, Y = pair(X, Y, min_rows=3, device=device, what="SVCCA")
    n = X.shape[0]
    Xc, Yc = center(X), center(Y)
    if n >= max(X.shape[1], Y.shape[1]):
        return svcca_from_scatter(gram(Xc), gram(Yc), Xc.T @ Yc, n, variance_kept)
    # d > n: PCA through the (n, n) sample Gram instead, giving orthonormal scores directly
    Qx, Qy = _pca_scores(Xc, variance_kept), _pca_scores(Yc, variance_kept)
    degenerate_check(n, Qx.shape[1], Qy.shape[1], "svcca", strict=False)
    return float(torch.linalg.svdvals(Qx.T @ Qy).clamp(0.0, 1.0).mean())


def svcca_from_scatter(Cxx: torch.Tensor, Cyy: torch.Tensor, Cxy: torch.Tensor, n: int,
                       variance_kept: float = 0.99) -> float:
    """:func:`svcca` from the centred scatters Cxx = Xc^T Xc: (d1, d1), Cyy: (d2, d2), Cxy = Xc^T Yc: (d1, d2)
    of n samples (the n >= d path of :func:`svcca` is this function); warns when degenerate."""
    check_fraction(variance_kept, "variance_kept")
    Cxx, Cyy, Cxy, n = _scatters(Cxx, Cyy, Cxy, n)
    Bx, By = _scatter_whitener(Cxx, n, variance_kept), _scatter_whitener(Cyy, n, variance_kept)
    degenerate_check(n, Bx.shape[1], By.shape[1], "svcca", strict=False)
    return float(torch.linalg.svdvals(Bx.T @ Cxy @ By).clamp(0.0, 1.0).mean())


def cca_from_scatter(Cxx: torch.Tensor, Cyy: torch.Tensor, Cxy: torch.Tensor, n: int) -> CCAResult:
    """:func:`cca` from the centred scatters Cxx = Xc^T Xc: (d1, d1), Cyy: (d2, d2), Cxy = Xc^T Yc: (d1, d2)
    of n samples -> CCAResult with min(r1, r2) correlations (r: numerical rank: eigenvalues of the scatter
    above the largest times max(n, d) eps). Equal to :func:`cca` on well-conditioned data; covariance-based, it loses
    digits as cond(X)^2 where :func:`cca`'s QR loses cond(X), and cuts directions with singular value below
    largest * sqrt(max(n, d) eps) as rank-deficient (:func:`cca`: below largest * max(n, d) eps). Raises
    when degenerate (n <= max(d1, d2) + 1) or when a side has zero variance."""
    Cxx, Cyy, Cxy, n = _scatters(Cxx, Cyy, Cxy, n)
    degenerate_check(n, Cxx.shape[0], Cyy.shape[0], "cca", strict=True)
    for C, name in ((Cxx, "X"), (Cyy, "Y")):
        if float(torch.diagonal(C).max()) <= 0:
            raise ValueError(f"{name}: has zero variance; CCA is undefined")
    Wx, Wy = _scatter_whitener(Cxx, n), _scatter_whitener(Cyy, n)
    rho = torch.linalg.svdvals(Wx.T @ Cxy @ Wy).clamp(0.0, 1.0)
    return CCAResult(rho.cpu().numpy(), float(rho.mean()), float((rho * rho).mean()))


def _scatters(Cxx, Cyy, Cxy, n):
    """The scatters as float64 tensors of matching shapes ((d1, d1), (d2, d2), (d1, d2)) and n as an int >= 2."""
    n = check_int(n, "n", 2)
    Cxx, Cyy = (as_matrix(C, name, min_rows=1) for C, name in ((Cxx, "Cxx"), (Cyy, "Cyy")))
    Cxy = as_matrix(Cxy, "Cxy", min_rows=1, device=Cxx.device)
    for C, name in ((Cxx, "Cxx"), (Cyy, "Cyy")):
        if C.shape[0] != C.shape[1]:
            raise ValueError(f"{name}: expected a square (d, d) scatter, got shape {tuple(C.shape)}")
    if Cxy.shape != (Cxx.shape[0], Cyy.shape[0]):
        raise ValueError(f"Cxy: expected shape {(Cxx.shape[0], Cyy.shape[0])} (d1 of Cxx, d2 of Cyy), got "
                         f"{tuple(Cxy.shape)}")
    return Cxx, Cyy.to(Cxx.device), Cxy, n


def span_basis(X, device=None) -> torch.Tensor:
    """The per-layer half of :func:`cca`: an orthonormal basis (n, r) of the centred column span of X: (n, d),
    r its numerical rank, so that ``cca(X, Y).rho == svdvals(span_basis(X).T @ span_basis(Y))``. Compute it
    once per layer when one layer meets many others."""
    eps = source_eps(X)
    X = matrix(X, "X", min_rows=3, device=device, rescale=True, what="CCA")
    return _span_basis(center(X), eps)


def principal_basis(X, variance_kept: float = 0.99, device=None) -> torch.Tensor:
    """The per-layer half of :func:`svcca`: orthonormal scores (n, k) of the fewest principal directions of
    X: (n, d) keeping ``variance_kept`` of the variance, so that ``svcca(X, Y)`` is the mean of
    ``svdvals(principal_basis(X).T @ principal_basis(Y))`` (up to rounding)."""
    check_fraction(variance_kept, "variance_kept")
    X = matrix(X, "X", min_rows=3, device=device, rescale=True, what="SVCCA")
    Xc = center(X)
    if X.shape[0] < X.shape[1]:
        return _pca_scores(Xc, variance_kept)
    return Xc @ _scatter_whitener(gram(Xc), X.shape[0], variance_kept)


def _pca_scores(Xc: torch.Tensor, variance_kept: float) -> torch.Tensor:
    lam, U = torch.linalg.eigh(Xc @ Xc.T)
    lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
    frac = torch.cumsum(lam, 0) / lam.sum()
    k = int((frac < variance_kept - 1e-12).sum()) + 1
    rank = int((lam > lam[0] * max(Xc.shape) * torch.finfo(lam.dtype).eps).sum())
    return U[:, :max(1, min(k, rank))]


def _inv_sqrt_psd(S: np.ndarray) -> np.ndarray:
    """(pinv S)^(1/2) for a symmetric PSD S, as google/svcca's pinv + eigh square root."""
    w, V = np.linalg.eigh(S)
    cutoff = 1e-15 * np.abs(w).max()
    inv = np.where(w > cutoff, 1.0 / np.sqrt(np.maximum(w, cutoff)), 0.0)
    return (V * inv) @ V.T


class PWCCASide(NamedTuple):
    """What PWCCA needs from one side, reusable across pairs (see :func:`pwcca_side`)."""

    name: str
    raw: torch.Tensor  # (n, d) float64 on the CPU, rescaled by a power of two
    centered: torch.Tensor  # (n, k) kept columns, centred
    mean: torch.Tensor  # (k,)
    scatter: torch.Tensor  # (k, k) centred scatter of the kept columns
    keep: torch.Tensor  # (d,) bool: google's small-variance cut
    inv_sqrt: torch.Tensor  # (k, k) inverse square root of the rescaled, regularised covariance


# PWCCA runs in numpy on one BLAS thread. Its value hangs on individual canonical directions (their
# signs, and their basis wherever canonical correlations nearly coincide) and on the inverse square root
# of a covariance regularised at epsilon, which magnify rounding differences by up to ~1e12. Threaded
# BLAS/LAPACK (MKL in torch, OpenBLAS in numpy) round differently for different thread counts, which
# moved PWCCA by up to ~1e-4 between 1 and 2 threads; one thread makes the value reproducible.


def pwcca_side(X, epsilon: float = 1e-10, name: str = "X") -> PWCCASide:
    """Per-side statistics of :func:`pwcca` for X: (n, d). Comparing one layer with many others,
    compute this once per layer and call :func:`pwcca_from_sides`."""
    _check_epsilon(epsilon)
    X = matrix(X, name, min_rows=3, device="cpu", rescale=True, what="PWCCA")
    with one_blas_thread():
        return _side(X.numpy(), epsilon, name)


def _check_epsilon(epsilon) -> None:
    check_positive(epsilon, "epsilon", strict=False)
    if epsilon >= 1:
        raise ValueError(f"epsilon: must be < 1 (it cuts neurons whose variance is below epsilon times "
                         f"the largest), got {epsilon!r}")


def _side(X: np.ndarray, epsilon: float, name: str) -> PWCCASide:
    n = X.shape[0]
    m = X.mean(0)
    Xc = X - m
    C = Xc.T @ Xc  # numpy dispatches A.T @ A to syrk
    # google's rescaling of each covariance by its largest entry, then its small-variance cut
    scale = float(np.abs(C).max()) / (n - 1)
    if scale <= 0:
        raise ValueError(f"{name}: has zero variance; PWCCA is undefined")
    keep = np.diagonal(C) / (n - 1) / scale >= epsilon
    if not keep.all():  # boolean indexing copies (n, d): only when something is cut
        C, Xc, m = C[np.ix_(keep, keep)], Xc[:, keep], m[keep]
    S = C / (n - 1) / scale + epsilon * np.eye(C.shape[0])
    t = torch.from_numpy
    return PWCCASide(name, t(X), t(Xc), t(m), t(C), t(keep), t(_inv_sqrt_psd(S) / np.sqrt(scale)))


def pwcca_from_sides(sx: PWCCASide, sy: PWCCASide) -> float:
    """PWCCA from two :func:`pwcca_side` results (the same n); see :func:`pwcca`."""
    for side, arg in ((sx, "sx"), (sy, "sy")):
        if not isinstance(side, PWCCASide):
            raise TypeError(f"{arg}: expected a PWCCASide from pwcca_side(), got {type(side).__name__}")
    check_same_n(sx.raw, sy.raw, ("sx", "sy"))
    a, b = (sx, sy) if int(sx.keep.sum()) <= int(sy.keep.sum()) else (sy, sx)
    with one_blas_thread():
        return _pwcca(*(t.numpy() for t in (a.raw, a.centered, a.mean, a.scatter, a.keep, a.inv_sqrt,
                                            b.centered, b.inv_sqrt)))


def lower_solve(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """L^-1 B for lower-triangular L: (..., k, k) and B: (..., k, m), stacked. A triangular solve (torch's
    batched trsm on the same memory), ~6x faster than numpy's general ``solve`` (an LU of the triangle) at
    k = 48; each column of B is solved on its own, so the result does not depend on the thread count."""
    return torch.linalg.solve_triangular(torch.from_numpy(L), torch.from_numpy(np.ascontiguousarray(B)),
                                         upper=False).numpy()


def _pwcca(A, Ac, mA, Caa, keep, inv_a, Bc, inv_b) -> float:
    n = A.shape[0]
    # inv_sqrt carries 1/sqrt(scale), so this is google's rescaled (Saa^-1/2 Sab Sbb^-1/2)
    arr = inv_a @ ((Ac.T @ Bc) / (n - 1)) @ inv_b
    # numpy's LAPACK SVD: the sign of each singular vector changes the "+ mean" term of the directions
    # below, and google's numbers come from numpy's sign convention
    u, rho, _ = np.linalg.svd(arr, full_matrices=False)  # u, rho as full_matrices=True gives them, faster
    rho = np.abs(rho)
    # dirns D = u^T (A - mean)^T + mean 1^T: (ka, n). With C the centred scatter of A,
    #   D D^T = u^T C u + n m m^T  and  D A = u^T C + n m m^T,
    # so P = D^T R^-1 (QR of D^T, R^T R = D D^T) gives P^T A = L^-1 D A with L = chol(D D^T).
    nmm = n * np.outer(mA, mA)
    try:
        L = np.linalg.cholesky(u.T @ Caa @ u + nmm)
        proj = lower_solve(L, u.T @ Caa + nmm)
    except np.linalg.LinAlgError:  # rank-deficient directions: the explicit QR, as google does
        P, _ = np.linalg.qr((u.T @ Ac.T + mA[:, None]).T)
        proj = P.T @ (A if keep.all() else A[:, keep])
        if int(np.linalg.matrix_rank(Caa, hermitian=True)) < Caa.shape[0] - 1:
            import warnings

            warnings.warn(f"pwcca: the side it weights by ({Caa.shape[0]} kept neurons) is rank-deficient (e.g. a "
                          "position-averaged embedding), so google's projection directions are singular and the "
                          "QR of them decides part of the value, which can then move with rounding (by ~0.01 "
                          "between two such layers); read CKA or SVCCA for this layer", RuntimeWarning,
                          stacklevel=3)
    weights = np.abs(proj).sum(1)
    weights = weights / weights.sum()
    return float(np.clip((weights[: rho.size] * rho).sum(), 0.0, 1.0))


def pwcca(X, Y, epsilon: float = 1e-10, device=None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018) between X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    Agrees with google/svcca's ``pwcca.compute_pwcca(A.T, B.T, epsilon)`` where A is the side with
    fewer features (X on ties): canonical correlations from the epsilon-regularised covariance CCA;
    directions u^T (A - mean) + mean, orthonormalised (QR); weights sum_j |<P_i, a_j>| over A's
    uncentred neurons. Either argument order works (google's code crashes when the first is wider);
    on equal widths the value depends on the order, as PWCCA weights by one side. Computed from
    (d, d) moments: O(n d^2), in numpy on the CPU with one BLAS thread (whatever ``device``), so the
    value does not depend on the thread count. Raises when degenerate (see module docstring).

    Note: the "+ mean" term makes google's PWCCA depend on the arbitrary sign of each singular
    vector (by ~1e-5 to 1e-3); univ reproduces numpy's signs to agree with the published numbers.
    """
    _check_epsilon(epsilon)
    X, Y = pair(X, Y, min_rows=3, device="cpu", what="PWCCA")
    degenerate_check(X.shape[0], X.shape[1], Y.shape[1], "pwcca", strict=True)
    with one_blas_thread():
        return pwcca_from_sides(_side(X.numpy(), epsilon, "X"), _side(Y.numpy(), epsilon, "Y"))

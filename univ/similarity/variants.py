"""Measures that the similarity-repository's standard names ask for beyond univ's defaults: kernel CKA with an
absolute RBF bandwidth and the Gretton/Song/Lange HSIC estimators, SVCCA to a fixed dimension, Williams et
al.'s shape metrics with partial whitening, RSA over RDM x comparison choices, and the cosine of two matrices.

X: (n, d1), Y: (n, d2), rows are samples; everything is computed in float64. :func:`univ.similarity.measure`
maps standard names onto these functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._checks import check_choice, check_int, check_real
from ._core import center, matrix, pair

HSICS = ("gretton", "song", "lange")
RDMS = ("correlation", "euclidean", "squared_euclidean", "cosine")
COMPARES = ("pearson", "spearman", "kendall", "tau_b", "tau_a", "rho_a", "cosine", "euclidean")


def _rbf(X: torch.Tensor, sigma: float) -> torch.Tensor:
    Xc = center(X)  # distances are translation invariant; centring keeps the Gram trick accurate
    sq = (Xc * Xc).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * Xc @ Xc.T).clamp_min(0.0)
    return torch.exp(-d2 / (2.0 * sigma * sigma))


def _cosine(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    na, nb = torch.linalg.norm(a), torch.linalg.norm(b)
    if float(na) == 0 or float(nb) == 0:
        raise ValueError(f"{'X' if float(na) == 0 else 'Y'}: {what} is undefined (its centred kernel vanishes)")
    return float((a * b).sum() / (na * nb))


def _hsic_center(K: torch.Tensor, hsic: str) -> torch.Tensor:
    n = K.shape[0]
    if hsic == "song":  # Song et al. (2012)'s unbiased estimator: zero diagonal, then its own centring
        K = K.clone()
        K.fill_diagonal_(0)
        means = K.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        K = K - means[:, None] - means[None, :]
        K.fill_diagonal_(0)
        return K
    Kc = K - K.mean(0, keepdim=True)
    Kc = Kc - Kc.mean(1, keepdim=True)
    if hsic == "lange":  # Lange et al. (2022): centre, then drop the diagonal
        Kc = Kc.clone()
        Kc.fill_diagonal_(0)
    return Kc


def kernel_cka(X, Y, sigma: float | None = None, hsic: str = "gretton", device=None) -> float:
    """CKA of X: (n, d1) and Y: (n, d2) with a linear (``sigma=None``) or RBF kernel and one of three HSIC
    estimators -> float (<= 1).

    K = X X^T or K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) with an ABSOLUTE bandwidth ``sigma`` (the
    similarity-repository's ``rbf-sigma=S``: every wrapped implementation takes sigma as given; univ's
    :func:`rbf_cka` instead scales it by the median distance). CKA = <K~x, K~y> / (||K~x|| ||K~y||) with
    hsic="gretton": K~ = H K H (biased HSIC, Gretton et al. 2005; value in [0, 1]);
    hsic="song": Song et al.'s (2012) unbiased estimator (Kornblith's debiased CKA; may be < 0);
    hsic="lange": H K H with its diagonal set to 0 (Lange et al. 2022; may be < 0).
    Linear kernels are computed in feature space, O(n d^2); RBF kernels build (n, n) Grams.
    """
    check_choice(hsic, "hsic", HSICS)
    if sigma is not None:
        sigma = check_real(sigma, "sigma")
        if not 0 < sigma < math.inf:
            raise ValueError(f"sigma: the RBF bandwidth must be a positive finite number, got {sigma!r}")
    n_min = 4 if hsic == "song" else 2
    if sigma is None and hsic != "song":
        Xc, Yc = (center(t) for t in pair(X, Y, min_rows=n_min, device=device, what="CKA"))
        from ._core import sym_fro2

        xty = (Xc.T @ Yc).square().sum()
        xx, yy = sym_fro2(Xc), sym_fro2(Yc)
        if hsic == "lange":  # <K~x, K~y> minus the diagonal's contribution, still in feature space
            rx, ry = (Xc * Xc).sum(1), (Yc * Yc).sum(1)
            xty, xx, yy = xty - rx @ ry, xx - rx @ rx, yy - ry @ ry
        if float(xx) <= 0 or float(yy) <= 0:
            raise ValueError(f"{'X' if float(xx) <= 0 else 'Y'}: CKA is undefined (its centred kernel vanishes)")
        return float(xty / torch.sqrt(xx * yy))
    X, Y = pair(X, Y, min_rows=n_min, device=device, what="CKA", rescale=sigma is None)
    Kx, Ky = (X @ X.T, Y @ Y.T) if sigma is None else (_rbf(X, sigma), _rbf(Y, sigma))
    return _cosine(_hsic_center(Kx, hsic), _hsic_center(Ky, hsic), "CKA")


def svcca_dim(X, Y, dim: int, squared: bool = False, device=None) -> float:
    """SVCCA of X: (n, d1) and Y: (n, d2) on each side's top ``dim`` principal components -> float in [0, 1].

    The scores of PCA(n_components=dim) (column-centred), then the mean of the ``dim`` canonical correlations
    (``squared``: of their squares), as the similarity-repository's ``svcca-dim=K`` (PCA + CCA). Invariant to
    orthogonal maps, isotropic scaling, translation and permutation of units; symmetric.
    """
    dim = check_int(dim, "dim", 1)
    X, Y = pair(X, Y, min_rows=3, device=device, what="SVCCA")
    n = X.shape[0]
    if dim > min(n - 1, X.shape[1], Y.shape[1]):
        raise ValueError(f"dim: must be <= min(n - 1, d1, d2) = {min(n - 1, X.shape[1], Y.shape[1])}, got {dim}")
    bases = []
    for T, name in ((X, "X"), (Y, "Y")):
        U, S, _ = torch.linalg.svd(center(T), full_matrices=False)
        if float(S[dim - 1]) <= float(S[0]) * max(T.shape) * torch.finfo(S.dtype).eps:
            raise ValueError(f"{name}: has numerical rank below dim={dim}; SVCCA on {dim} components is undefined")
        bases.append(U[:, :dim])
    rho = torch.linalg.svdvals(bases[0].T @ bases[1]).clamp(0.0, 1.0)
    return float((rho * rho).mean() if squared else rho.mean())


def kernel_norm(X, sigma: float, device=None) -> float:
    """sqrt(tr(H K H)) of the RBF kernel K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)) of X: (n, d) (absolute
    bandwidth, H the centring matrix): the norm of the feature map the kernel CKA compares, which the
    similarity-repository's Euclidean forms of RBF-kernel CKA use in place of ||Xc||."""
    sigma = check_real(sigma, "sigma")
    X = matrix(X, "X", min_rows=2, device=device)
    K = _rbf(X, sigma)
    return math.sqrt(max(0.0, float(torch.diagonal(K).sum() - K.sum() / K.shape[0])))


def pca_norm(X, var: float | None = None, dim: int | None = None, device=None) -> float:
    """Frobenius norm of the PCA scores of X: (n, d) that SVCCA keeps -> float: the top ``dim`` components,
    or the fewest whose cumulative variance reaches ``var`` (SVCCA's rule, capped at the numerical rank).
    The similarity-repository's Euclidean forms of SVCCA measure these reduced data (PCA, then CCA)."""
    X = matrix(X, "X", min_rows=2, device=device)
    lam = torch.linalg.svdvals(center(X)).square()
    if dim is None:
        frac = torch.cumsum(lam, 0) / lam.sum()
        rank = int((lam > lam[0] * max(X.shape) * torch.finfo(lam.dtype).eps).sum())
        dim = max(1, min(int((frac < var - 1e-12).sum()) + 1, rank))
    return math.sqrt(float(lam[:dim].sum()))


def partial_whiten(Xc: torch.Tensor, alpha: float, eigval_tol: float = 1e-7) -> torch.Tensor:
    """netrep's partial whitening of centred Xc: (n, d) -> (n, d): Xc V diag(s d_i) V^T with
    Xc^T Xc = V diag(lam) V^T, d_i = alpha + (1 - alpha) lam_i^(-1/2) and s rescaling to the original total
    variance tr(Xc^T Xc). alpha = 1: no whitening; alpha = 0: full whitening (CCA)."""
    if alpha > 1 - eigval_tol:
        return Xc
    lam, V = torch.linalg.eigh(Xc.T @ Xc)
    lam = lam.clamp_min(eigval_tol)
    d = alpha + (1 - alpha) * lam.rsqrt()
    new_var = (alpha**2 * lam + 2 * alpha * (1 - alpha) * lam.sqrt() + (1 - alpha) ** 2).sum()
    d = d * torch.sqrt(lam.sum() / new_var)
    return Xc @ ((V * d) @ V.T)


def shape_metric(X, Y, alpha: float, device=None) -> float:
    """Cosine of Williams et al.'s (2021) generalized shape metric between X: (n, d1) and Y: (n, d2)
    -> float in [0, 1]; the angular distance is its arccos.

    Centre, partially whiten each side (:func:`partial_whiten`, netrep's ``LinearMetric(alpha)``), zero-pad to
    equal width, align by the optimal rotation: cos = ||Xw^T Yw||_* / (||Xw|| ||Yw||). alpha = 1 is Procrustes
    (``procrustes-score``), alpha = 0 the mean canonical correlation when d1 = d2. Following netrep, the
    whitening uses the unnormalised scatter Xc^T Xc, so for 0 < alpha < 1 the value depends on the scale of
    the data and on n (not invariant to isotropic scaling). Symmetric; invariant to orthogonal maps,
    translation and permutation of units.
    """
    alpha = check_real(alpha, "alpha", 0.0, 1.0)
    X, Y = pair(X, Y, min_rows=2, device=device, what="the shape metric", rescale=False)
    Xw, Yw = partial_whiten(center(X), alpha), partial_whiten(center(Y), alpha)
    nuc = torch.linalg.svdvals(Xw.T @ Yw).sum()
    return float((nuc / (torch.linalg.norm(Xw) * torch.linalg.norm(Yw))).clamp(0.0, 1.0))


def cosine(X, Y, device=None) -> float:
    """Cosine of two same-shape matrices X, Y: (n, d): <X, Y>_F / (||X||_F ||Y||_F) in [-1, 1], uncentred
    (the similarity-repository's ``cosine``, the comparison its CKA and RSA compositions apply to kernels).
    Invariant only to isotropic scaling; symmetric."""
    X, Y = pair(X, Y, min_rows=1, device=device, what="cosine")
    if X.shape != Y.shape:
        raise ValueError(f"X, Y: cosine needs equal shapes, got {tuple(X.shape)} and {tuple(Y.shape)}")
    return _cosine(X, Y, "cosine")


# ---------------------------------------------------------------------------------------------------
# RSA grid


def rdm(X, kind: str = "correlation", device=None) -> torch.Tensor:
    """Representational dissimilarity matrix (n, n) of X: (n, d): "correlation" (1 - Pearson r of two rows),
    "cosine" (1 - cosine of two rows), "euclidean" or "squared_euclidean" (distances between rows)."""
    check_choice(kind, "kind", RDMS)
    X = matrix(X, "X", min_rows=2, device=device, rescale=True)
    return _rdm(X, kind, "X")


def _rdm(X: torch.Tensor, kind: str, name: str) -> torch.Tensor:
    if kind in ("correlation", "cosine"):
        Z = X - X.mean(1, keepdim=True) if kind == "correlation" else X
        norms = torch.linalg.norm(Z, dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError(f"{name}: {kind} distance is undefined for row {int(torch.nonzero(norms == 0)[0, 0])}"
                             f" ({'constant' if kind == 'correlation' else 'all zero'})")
        Z = Z / norms
        D = 1.0 - Z @ Z.T
    else:
        Xc = center(X)
        sq = (Xc * Xc).sum(1)
        D = (sq[:, None] + sq[None, :] - 2 * Xc @ Xc.T).clamp_min(0.0)
        D = D if kind == "squared_euclidean" else D.sqrt()
    D.fill_diagonal_(0)
    return D


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v)


def compare_rdms(a: np.ndarray, b: np.ndarray, compare: str) -> float:
    """Compare two RDMs' upper triangles a, b: (m,) -> float (see :func:`rsa_variant`)."""
    from scipy import stats

    if compare == "euclidean":
        return float(np.linalg.norm(a - b))
    if compare == "cosine":
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    for v, name in ((a, "X"), (b, "Y")):
        if np.all(v == v[0]):
            raise ValueError(f"{name}: RSA is undefined: its RDM is constant (all pairwise distances equal)")
    if compare == "pearson":
        return float(np.corrcoef(a, b)[0, 1])
    if compare == "spearman":
        return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])
    if compare in ("kendall", "tau_b"):
        return float(stats.kendalltau(a, b, variant="b").statistic)
    if compare == "tau_a":
        m = a.size
        tau_b = stats.kendalltau(a, b, variant="b").statistic
        # tau_a = (concordant - discordant) / (m (m - 1) / 2); tau_b divides by sqrt(n0 - n1)(n0 - n2)
        n0 = m * (m - 1) / 2
        ties = [np.unique(v, return_counts=True)[1] for v in (a, b)]
        n1, n2 = ((c * (c - 1) / 2).sum() for c in ties)
        return float(tau_b * math.sqrt((n0 - n1) * (n0 - n2)) / n0)
    # rho_a: Spearman without tie correction, 1 - 6 sum d^2 / (m^3 - m)
    m = a.size
    d = _ranks(a) - _ranks(b)
    return float(1 - 6 * (d @ d) / (m**3 - m))


def rsa_variant(X, Y, rdm: str = "correlation", compare: str = "spearman", device=None) -> float:
    """RSA of X: (n, d1) and Y: (n, d2): build each side's RDM (:func:`rdm`) and compare their upper
    triangles (i < j, the n (n - 1) / 2 distinct pairs) -> float.

    compare: "pearson", "spearman" (ranks, ties averaged), "kendall" = "tau_b" (Kendall's tau-b), "tau_a",
    "rho_a" (Spearman without tie correction), "cosine" (of the uncentred triangles) or "euclidean" (the
    Euclidean distance between the triangles: a distance, not scale-free). Correlations lie in [-1, 1].
    Symmetric. All choices are invariant to permutation of units; "euclidean" and "squared_euclidean" RDMs
    also to orthogonal maps and translation, "cosine" RDMs to orthogonal maps; with a correlation-type
    comparison, to isotropic scaling.
    """
    check_choice(rdm, "rdm", RDMS)
    check_choice(compare, "compare", COMPARES)
    X, Y = pair(X, Y, min_rows=3, device=device, what="RSA", rescale=compare != "euclidean")
    n = X.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=X.device)
    a, b = (_rdm(T, rdm, name)[iu[0], iu[1]].cpu().numpy() for T, name in ((X, "X"), (Y, "Y")))
    return compare_rdms(a, b, compare)

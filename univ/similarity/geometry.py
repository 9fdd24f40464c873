"""Shape and neighbourhood metrics: orthogonal Procrustes, RSA, mutual k-nearest neighbours."""

from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_int
from ._core import center, matrix, pair

# ---------------------------------------------------------------------------------------------------
# Procrustes (Williams et al. 2021)


def procrustes(X, Y, device=None) -> float:
    """Orthogonal-Procrustes similarity of X: (n, d1) and Y: (n, d2) -> float in [0, 1].

    The cosine of Williams et al.'s (2021) angular shape metric: centre both, scale to unit
    Frobenius norm, and take max over orthogonal Q of <X, Y Q> = ||Xc^T Yc||_* / (||Xc|| ||Yc||)
    (nuclear norm; unequal widths are zero-padded implicitly). 1 iff the two are the same up to
    rotation, reflection, translation and isotropic scaling. Symmetric and invariant to exactly
    those. Distances: :func:`procrustes_distance`.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="Procrustes")
    Xc, Yc = center(X), center(Y)
    nx, ny = torch.linalg.norm(Xc), torch.linalg.norm(Yc)
    for v, name in ((nx, "X"), (ny, "Y")):
        if float(v) == 0:
            raise ValueError(f"{name}: has zero variance (all rows equal); Procrustes is undefined")
    nuc = torch.linalg.svdvals(Xc.T @ Yc).sum()
    return float((nuc / (nx * ny)).clamp(0.0, 1.0))


def procrustes_distance(X, Y, kind: str = "angular", device=None) -> float:
    """Procrustes distance between X: (n, d1) and Y: (n, d2) after centring and unit-norm scaling.

    kind="angular": Williams et al.'s shape metric arccos(procrustes(X, Y)) in [0, pi/2], a metric
    on shapes (satisfies the triangle inequality). kind="euclidean": min_Q ||X^ - Y^ Q||_F =
    sqrt(2 - 2 procrustes(X, Y)) in [0, sqrt 2] (Ding et al. 2021's orthogonal Procrustes distance).
    """
    check_choice(kind, "kind", ("angular", "euclidean"))
    s = procrustes(X, Y, device=device)
    return math.acos(s) if kind == "angular" else math.sqrt(max(0.0, 2.0 - 2.0 * s))


# ---------------------------------------------------------------------------------------------------
# RSA


def _rdm_upper(X: torch.Tensor, distance: str, name: str) -> torch.Tensor:
    """Upper triangle (k > 0) of the (n, n) representational dissimilarity matrix, flattened."""
    if distance in ("correlation", "cosine"):  # correlation distance: the cosine of row-centred samples
        Z = X - X.mean(1, keepdim=True) if distance == "correlation" else X
        norms = torch.linalg.norm(Z, dim=1, keepdim=True)
        if bool((norms == 0).any()):
            what = "a sample whose features are all equal" if distance == "correlation" else "an all-zero sample"
            raise ValueError(f"{name}: {distance} distance is undefined for {what} (row "
                             f"{int(torch.nonzero(norms.flatten() == 0)[0])}); use distance='euclidean'")
        Z = Z / norms
        D = 1.0 - Z @ Z.T
    else:
        Xc = center(X)  # centring first keeps the Gram trick accurate
        sq = (Xc * Xc).sum(1)
        D = torch.sqrt((sq[:, None] + sq[None, :] - 2 * Xc @ Xc.T).clamp_min(0.0))
    iu = torch.triu_indices(X.shape[0], X.shape[0], offset=1, device=X.device)
    return D[iu[0], iu[1]]


def _average_ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..m with ties given their average rank (as scipy.stats.rankdata)."""
    order = torch.argsort(v)
    sv = v[order]
    _, inverse, counts = torch.unique_consecutive(sv, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(v.dtype)
    avg = ends - (counts.to(v.dtype) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = avg[inverse]
    return ranks


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    na, nb = torch.linalg.norm(a), torch.linalg.norm(b)
    for v, name in ((na, "X"), (nb, "Y")):
        if float(v) == 0:
            raise ValueError(f"{name}: RSA is undefined: its RDM is constant (all pairwise distances equal)")
    return float((a @ b) / (na * nb))


def rsa(X, Y, distance: str = "correlation", method: str = "spearman", device=None) -> float:
    """Representational similarity analysis of X: (n, d1) and Y: (n, d2) -> float in [-1, 1].

    Builds each side's (n, n) RDM and correlates their upper triangles. distance: "correlation"
    (1 - Pearson r between two samples' feature vectors: Kriegeskorte et al. 2008's default),
    "euclidean" or "cosine"; method: "spearman" (rank correlation, ties averaged) or "pearson".
    Symmetric. Invariant to isotropic scaling with every choice; with "euclidean" also to orthogonal
    maps and translation; "correlation" and "cosine" are not invariant to translation or to
    general rotations of the feature space. Memory and time O(n^2).
    """
    check_choice(distance, "distance", ("correlation", "euclidean", "cosine"))
    check_choice(method, "method", ("spearman", "pearson"))
    X, Y = pair(X, Y, min_rows=3, device=device, what="RSA")
    a, b = _rdm_upper(X, distance, "X"), _rdm_upper(Y, distance, "Y")
    if method == "spearman":
        a, b = _average_ranks(a), _average_ranks(b)
    return _pearson(a, b)


# ---------------------------------------------------------------------------------------------------
# Mutual kNN (Huh et al. 2024)


def _merge_top(vals, idx, new_vals, new_idx, r: int):
    """Keep the r largest of (vals, idx) and (new_vals, new_idx) row-wise, sorted descending."""
    v, pos = torch.topk(torch.cat([vals, new_vals], 1), r, dim=1, sorted=True)
    return v, torch.gather(torch.cat([idx, new_idx], 1), 1, pos)


def _top_float32(Xf: torch.Tensor, r: int, chunk: int):
    """Each row's r largest float32 inner products with the other rows, (values, indices) sorted
    descending. X X^T is symmetric, so only the blocks on and above the diagonal are multiplied: each
    block updates the running top-r of its rows and (transposed) of its columns' rows."""
    n = Xf.shape[0]
    vals = torch.full((n, r), -math.inf, device=Xf.device)
    idx = torch.zeros(n, r, dtype=torch.long, device=Xf.device)
    starts = list(range(0, n, chunk))
    for i, a in enumerate(starts):
        a2 = min(a + chunk, n)
        for b in starts[i:]:
            b2 = min(b + chunk, n)
            B = Xf[a:a2] @ Xf[b:b2].T
            if a == b:
                B.fill_diagonal_(-math.inf)
            for lo, hi, block, off in ((a, a2, B, b), (b, b2, B.T, a)) if a != b else ((a, a2, B, b),):
                v, j = torch.topk(block, min(r, block.shape[1]), dim=1, sorted=False)
                vals[lo:hi], idx[lo:hi] = _merge_top(vals[lo:hi], idx[lo:hi], v, j + off, r)
    return vals, idx


def knn_indices(X, k: int, chunk: int = 2048) -> torch.Tensor:
    """Indices (n, k) of each row of X: (n, d)'s k largest inner products with the other rows (self
    excluded), 1 <= k < n.

    The set of neighbours is exactly float64's, found at float32 speed: a float32 pass over the
    blocks of the (n, n) similarity on and above the diagonal (it is symmetric) keeps each row's top
    k + 1 (topk, no sort of a full row). Where the gap between the k-th and (k+1)-th float32 scores
    exceeds twice the float32 rounding bound, the set is certain. The other rows re-score m = 2k + 8
    candidates in float64, and a row where a non-candidate could still beat the k-th is redone
    entirely in float64. Within a row the order follows the float32 scores (descending).
    Memory O(chunk^2 + n k).
    """
    X = matrix(X, "X", rescale=True)
    k = _check_k(k, X.shape[0])
    return _knn_indices(X, k, check_int(chunk, "chunk", 1))


def _check_k(k, n: int) -> int:
    check_int(k, "k")
    if not 1 <= k < n:
        raise ValueError(f"k: must be an integer with 1 <= k < n = {n} (self is excluded), got {k!r}")
    return int(k)


def _knn_indices(X: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    n, d = X.shape
    m = min(n - 1, 2 * k + 8)
    norms = torch.linalg.norm(X, dim=1)
    top = float(norms.max())
    scale = 2.0 ** -round(math.log2(top)) if 0 < top < math.inf else 1.0  # float32 can't overflow
    Xf = (X * scale).float()
    # worst-case |fl32(x.y) - x.y| <= (d + 2) u32 ||x|| ||y|| (input rounding plus the dot product)
    tol = (d + 2) * torch.finfo(torch.float32).eps * norms * top * scale * scale + 1e-30
    v32, cand = _top_float32(Xf, min(k + 1, n - 1), chunk)
    out = cand[:, :k].clone()
    if k == n - 1:  # every other row is a neighbour
        return out
    unsure = torch.nonzero(v32[:, k - 1] - v32[:, k] <= 2 * tol).flatten()
    for part in torch.split(unsure, chunk):
        S = Xf[part] @ Xf.T
        S[torch.arange(part.numel(), device=X.device), part] = -math.inf
        v32, cand = torch.topk(S, m, dim=1, sorted=True)
        exact = torch.einsum("rd,rmd->rm", X[part], X[cand])
        vk, pos = torch.topk(exact, k, dim=1)
        out[part] = torch.gather(cand, 1, pos)
        if m < n - 1:
            redo = part[vk[:, -1] * scale * scale <= v32[:, -1].double() + tol[part]]
            if redo.numel():
                full = X[redo] @ X.T
                full[torch.arange(redo.numel(), device=X.device), redo] = -math.inf
                out[redo] = torch.topk(full, k, dim=1).indices
    return out


def mutual_knn(X, Y, k: int = 10, center: bool = False, normalize: bool = False, device=None) -> float:
    """Mutual k-nearest-neighbour alignment (Huh et al. 2024) of X: (n, d1) and Y: (n, d2) -> [0, 1].

    For each sample, the fraction of its k nearest neighbours (largest inner product, self excluded)
    shared between the two spaces, averaged over samples. Defaults follow platonic-rep's
    ``mutual_knn`` on raw rows, which is NOT translation invariant; ``center=True`` subtracts each
    side's column mean first (then invariant to translation), ``normalize=True`` scales rows to unit
    norm (what platonic-rep's ``measure_alignment`` does before calling it). Symmetric; invariant
    to orthogonal maps and isotropic scaling. Needs 1 <= k < n.
    """
    X, Y = pair(X, Y, min_rows=2, device=device, what="mutual kNN")
    k = _check_k(k, X.shape[0])
    if center:
        X, Y = X - X.mean(0), Y - Y.mean(0)
    if normalize:
        X = X / torch.linalg.norm(X, dim=1, keepdim=True).clamp_min(1e-300)
        Y = Y / torch.linalg.norm(Y, dim=1, keepdim=True).clamp_min(1e-300)
    a, b = _knn_indices(X, k), _knn_indices(Y, k)
    shared = (a[:, :, None] == b[:, None, :]).sum(dim=(1, 2))
    return float(shared.double().mean() / k)


def rdm_upper(X, distance: str = "correlation") -> torch.Tensor:
    """The upper triangle (k > 0, row-major) of the (n, n) representational dissimilarity matrix of
    X: (n, d), flattened to (n (n - 1) / 2,) float64; ``distance`` as in :func:`rsa`."""
    check_choice(distance, "distance", ("correlation", "euclidean", "cosine"))
    return _rdm_upper(matrix(X, "X", min_rows=2, rescale=True), distance, "X")

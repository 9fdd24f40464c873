"""Shared numerics for the similarity metrics: input pairs, exact rescaling, centering, fast symmetric Grams."""

from __future__ import annotations

import math

import torch

from .._checks import as_matrix, check_finite, check_same_n

# Inputs whose largest |entry| lies in [2^-17, 2^16) are used as given; others are multiplied by a power
# of two. Within the band no metric's products (fourth powers summed over n^2 d^2 terms in float64, the
# squares of the mixed-precision path in float32) can overflow or underflow.
_BAND = (2.0**-17, 2.0**16)


def pow2_exponent(top: float) -> int:
    """-e such that ``top`` * 2^-e is in [0.5, 1) (``top``: a largest |entry|), or 0 when ``top`` is
    already in the safe band (or 0)."""
    if top == 0 or _BAND[0] <= top < _BAND[1]:
        return 0
    return -math.frexp(top)[1]


def times_pow2(X: torch.Tensor, k: int) -> torch.Tensor:
    """X * 2^k, exact in binary floating point (no copy when k = 0)."""
    if k == 0:
        return X
    if abs(k) > 1000:  # 2^k itself would overflow or be subnormal: two exact steps
        X, k = X * math.ldexp(1.0, k // 2), k - k // 2
    return X * math.ldexp(1.0, k)


def source_eps(x) -> float:
    """Machine epsilon of the precision ``x`` was computed in: float32 activations carry float32 rounding even
    once converted to float64, so numerical-rank cuts must use float32's epsilon for them (integers and
    float64: float64's)."""
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return float(torch.finfo(dtype).eps)
    if dtype is not None and getattr(dtype, "kind", "") == "f":  # numpy floating dtypes
        import numpy as np

        return float(np.finfo(dtype).eps)
    return float(torch.finfo(torch.float64).eps)


def unit_scale(X: torch.Tensor, top: float | None = None) -> torch.Tensor:
    """X: (n, d) times a power of two so that max|X| is in [0.5, 1), or X itself when max|X| (``top``,
    computed when None) is in the safe band. Exact (bit for bit a scaled copy), so every scale-invariant
    metric gives the same value on X * 2^s for any s that keeps X * 2^s representable."""
    return times_pow2(X, pow2_exponent(float(X.abs().max()) if top is None else top))


def all_rows_equal(X: torch.Tensor) -> bool:
    """Whether every row of X: (n, d) equals the first exactly, i.e. X is constant."""
    n = X.shape[0]
    for i in (n - 1, n // 2):  # a differing row usually settles it in O(d)
        if bool((X[i] != X[0]).any()):
            return False
    return bool((X == X[0]).all())


def _checked(x, name: str, min_rows: int, device) -> tuple[torch.Tensor, float]:
    """(X as float64, max|X|), finiteness checked by one min/max pass (NaN and Inf propagate)."""
    X = as_matrix(x, name, min_rows=min_rows, dtype=torch.float64, device=device, finite=False)
    lo, hi = (float(v) for v in torch.aminmax(X))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        check_finite(X, name)
    return X, max(-lo, hi)


def _constant_error(X: torch.Tensor, name: str, what: str | None) -> None:
    if what is not None and all_rows_equal(X):
        raise ValueError(f"{name}: has zero variance (all {X.shape[0]} rows are equal); {what} is undefined")


def matrix(x, name: str, min_rows: int = 2, device=None, rescale: bool = False, what: str | None = None
           ) -> torch.Tensor:
    """``as_matrix(x, name, min_rows)`` as float64 (n, d); ``rescale``: :func:`unit_scale` it; ``what``
    (a metric's name): raise if X is constant, saying that ``what`` is undefined."""
    X, top = _checked(x, name, min_rows, device)
    _constant_error(X, name, what)
    return unit_scale(X, top) if rescale else X


def pair(X, Y, min_rows: int = 2, device=None, names=("X", "Y"), rescale: bool = True,
         what: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample matrices X: (n, d1), Y: (n, d2) and return them as float64 tensors on
    ``device``, each rescaled by a power of two (``rescale``, see :func:`unit_scale`). ``what`` (the
    metric's name): raise for a constant side, naming it."""
    (X, tx), (Y, ty) = _checked(X, names[0], min_rows, device), _checked(Y, names[1], min_rows, device)
    check_same_n(X, Y, names)
    _constant_error(X, names[0], what)
    _constant_error(Y, names[1], what)
    return (unit_scale(X, tx), unit_scale(Y, ty)) if rescale else (X, Y)


class RowWatch:
    """Remembers, over batches, whether every row of each side so far equals that side's first row,
    so streaming estimators can say a side is constant (exactly, as :func:`all_rows_equal`)."""

    def __init__(self):
        self.rows: list | None = None  # per side: the first row, or None once the side varies

    def update(self, *batches: torch.Tensor) -> None:
        if self.rows is None:
            self.rows = [b[0].clone() for b in batches]
        self.rows = [None if r is None or bool((b != r).any()) else r for r, b in zip(self.rows, batches)]

    def check(self, what: str, n: int, names=("xb", "yb")) -> None:
        for row, name in zip(self.rows or [], names):
            if row is not None:
                raise ValueError(f"{name}: has zero variance (all {n} rows over all batches are equal); "
                                 f"{what} is undefined")


def center(X: torch.Tensor) -> torch.Tensor:
    """Column-centred copy of X: (n, d)."""
    return X - X.mean(dim=0, keepdim=True)


def gram(X: torch.Tensor, blocks: int = 8) -> torch.Tensor:
    """X^T X: (d, d) at about half a gemm's cost, which is most of the cost of every moment-based metric.

    On the CPU numpy's ``A.T @ A`` dispatches to BLAS syrk (run with torch's thread count); torch has no
    syrk, so elsewhere the upper block triangle is computed and mirrored.
    """
    d = X.shape[1]
    if X.device.type == "cpu" and X.dtype in (torch.float64, torch.float32) and d >= 32:
        from ..utils import blas_threads

        xn = X.detach().contiguous().numpy()
        with blas_threads(torch.get_num_threads()):
            return torch.from_numpy(xn.T @ xn)
    if d < 128 or blocks < 2:
        return X.T @ X
    edges = torch.linspace(0, d, blocks + 1).long().tolist()
    out = torch.empty(d, d, dtype=X.dtype, device=X.device)
    for a, b in zip(edges[:-1], edges[1:]):
        out[a:b, a:] = X[:, a:b].T @ X[:, a:]
    return torch.triu(out) + torch.triu(out, diagonal=1).T


def sym_fro2(X: torch.Tensor) -> torch.Tensor:
    """||X^T X||_F^2 (see :func:`gram`)."""
    G = gram(X)
    return (G * G).sum()


def degenerate_check(n: int, d1: int, d2: int, what: str, strict: bool = True) -> None:
    """CCA-family guard (Kornblith et al. 2019, Theorem 1).

    With n samples the centred data span at most n - 1 dimensions. If either side has >= n - 1
    (linearly independent) features, every direction of the other side lies in its span and all
    canonical correlations are 1 whatever the data: raise (or warn when ``strict`` is False). If
    d1 + d2 > n - 1, at least d1 + d2 - (n - 1) correlations are 1 by construction: warn.
    """
    import warnings

    if max(d1, d2) >= n - 1:
        msg = (f"{what}: degenerate input: n={n} samples but {max(d1, d2)} features on one side "
               f"(need n > d + 1); every canonical correlation would be 1 regardless of the data "
               f"(Kornblith et al. 2019, Theorem 1). Use more samples or reduce dimension first.")
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    elif d1 + d2 > n - 1:
        warnings.warn(
            f"{what}: d1 + d2 = {d1 + d2} > n - 1 = {n - 1}: at least {d1 + d2 - n + 1} canonical "
            f"correlations equal 1 by construction; the mean is inflated (Kornblith et al. 2019, Thm 1)",
            RuntimeWarning, stacklevel=3)


def debiased_hsic(xty, ssr_x, ssr_y, sn_x, sn_y, n: int):
    """Kornblith's feature-space unbiased-HSIC correction, times n (n - 3).

    xty: ||Xc^T Yc||_F^2, ssr_*: per-row squared norms of the centred data (or their dot product when
    a float is passed as ``ssr_x`` and ``ssr_y`` is None), sn_*: total squared norms.
    """
    dot = ssr_x if ssr_y is None else ssr_x @ ssr_y
    return xty - n / (n - 2.0) * dot + sn_x * sn_y / ((n - 1.0) * (n - 2.0))


def cka_ratio(num, den_x, den_y, debiased: bool, names=("X", "Y")) -> float:
    """num / sqrt(den_x den_y), refusing a vanishing denominator with a message naming the side."""
    # inputs are constant-checked and rescaled before this, so a zero here means the variation is
    # below the rounding of the computation (e.g. float32 in precision="mixed"), not exactly zero
    if float(den_x) <= 0 or float(den_y) <= 0:
        which = names[0] if float(den_x) <= 0 else names[1]
        why = ("its debiased self-HSIC is <= 0 (too few samples or nearly constant features)"
               if debiased else "its centred values vanish in rounding (nearly constant features)")
        raise ValueError(f"{which}: CKA is undefined because {why}")
    return float(num / torch.sqrt(torch.as_tensor(den_x * den_y, dtype=torch.float64)))

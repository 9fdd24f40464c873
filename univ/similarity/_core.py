"""Shared numerics for the similarity metrics: input pairs, centering, fast symmetric Grams."""

from __future__ import annotations

import torch

from .._checks import as_matrix, check_same_n


def matrix(x, name: str, min_rows: int = 2, device=None) -> torch.Tensor:
    """``as_matrix(x, name, min_rows)`` as float64 (its NaN/Inf check is one reduction in the common case)."""
    return as_matrix(x, name, min_rows=min_rows, dtype=torch.float64, device=device)


def pair(X, Y, min_rows: int = 2, device=None, names=("X", "Y")) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample matrices and return them as float64 tensors on ``device``."""
    X = matrix(X, names[0], min_rows=min_rows, device=device)
    Y = matrix(Y, names[1], min_rows=min_rows, device=device)
    check_same_n(X, Y, names)
    return X, Y


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

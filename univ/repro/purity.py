"""Neuron purity against a known dictionary (Allen-Zhu & Li 2020, "feature purification").

A first-layer neuron with weights w (in input space) is read in the dictionary's coordinates
c = M^T w: a *pure* neuron puts its energy ||c||^2 on one or a few atoms, a neuron with a *dense
mixture* spreads it thinly over many. With an orthonormal dictionary (M^T M = I, the paper's setting)
c are the exact coordinates of w, an atom has purity 1, and a random direction has the expected purity
:func:`expected_random_purity`; for an overcomplete dictionary use :func:`random_purity` as the baseline.

    p1 = purity(W, M, k=1)                       # W: (n_neurons, d), M: (d, n_atoms) -> (n_neurons,)
    table = neuron_table(W, M, ks=(1, 3))        # tidy per-neuron DataFrame
    dec = decompose(W_clean, W_adv)              # w_clean = beta * w_adv + v, per neuron
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .._checks import as_matrix, to_tensor


def _wm(W, M) -> tuple[torch.Tensor, torch.Tensor]:
    W = to_tensor(W, "W")
    W = as_matrix(W[None] if W.ndim == 1 else W, "W", 1).double()
    M = as_matrix(M, "M", 1).double().to(W.device)
    if W.shape[1] != M.shape[0]:
        raise ValueError(f"W: neurons have {W.shape[1]} input dims but the dictionary M has {M.shape[0]} rows")
    return W, M


def atom_energy(W, M) -> torch.Tensor:
    """(n_neurons, n_atoms) squared dictionary coordinates (M^T w)_j^2 of each neuron (float64).

    W: (n_neurons, d) neuron weights as rows (a (d,) vector is one neuron); M: (d, n_atoms) atoms as columns.
    """
    W, M = _wm(W, M)
    return (W @ M) ** 2


def purity(W, M, k: int = 1) -> torch.Tensor:
    """Share of each neuron's dictionary energy ||M^T w||^2 in its top-``k`` atoms: (n_neurons,) in
    [k / n_atoms, 1]; 1 for a neuron along one atom of an orthonormal dictionary. Zero rows give NaN."""
    E = atom_energy(W, M)
    if not 1 <= k <= E.shape[1]:
        raise ValueError(f"k: must be in [1, n_atoms={E.shape[1]}], got {k}")
    total = E.sum(1)
    top = E.topk(k, dim=1).values.sum(1)
    return torch.where(total > 0, top / total.clamp_min(1e-300), torch.nan)


def participation(W, M) -> torch.Tensor:
    """Effective number of atoms per neuron, (sum_j c_j^2)^2 / sum_j c_j^4: 1 for a pure neuron,
    n_atoms for energy spread evenly (the "dense mixture" in one number)."""
    E = atom_energy(W, M)
    return E.sum(1) ** 2 / (E**2).sum(1).clamp_min(1e-300)


def expected_random_purity(n_atoms: int, k: int = 1) -> float:
    """E[purity_k] of a uniformly random direction under an orthonormal dictionary with ``n_atoms`` atoms.

    The coordinates of an isotropic Gaussian g are iid N(0, 1) and g/||g|| is independent of ||g||, so
    E[top-k share] = E[sum of the k largest of n chi^2_1] / n, and
    E[sum of the k largest] = int_0^inf E[min(N_t, k)] dt with N_t ~ Binomial(n, P(chi^2_1 > t)).
    """
    from scipy import integrate, stats

    if not 1 <= k <= n_atoms:
        raise ValueError(f"k: must be in [1, n_atoms={n_atoms}], got {k}")

    def e_min_nk(t: float) -> float:
        q = stats.chi2.sf(t, 1)
        r = np.arange(1, k + 1)
        return float(stats.binom.sf(r - 1, n_atoms, q).sum())  # sum_r P(N_t >= r)

    upper = stats.chi2.isf(1e-16 / n_atoms, 1)
    val, _ = integrate.quad(e_min_nk, 0, upper, limit=200, points=[1.0, 4.0, 10.0])
    return val / n_atoms


def random_purity(M, k: int = 1, n: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Monte-Carlo (mean, std) of purity_k over ``n`` isotropic random directions, for any dictionary
    M: (d, n_atoms) (the baseline when M is not orthonormal)."""
    M = as_matrix(M, "M", 1).double()
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, M.shape[0], generator=g, dtype=torch.float64)
    p = purity(W, M, k)
    return float(p.mean()), float(p.std())


def neuron_table(W, M, ks: Sequence[int] = (1, 3), direction=None) -> pd.DataFrame:
    """One row per neuron: norm, top_atom, purity_k for each k, dense_mass (outside the largest k),
    participation; with ``direction`` (d,) also ``mix_align``, the |cosine| between the neuron's
    off-top-k part and that direction (e.g. the labelling function's M w*)."""
    Wd, Md = _wm(W, M)
    E = atom_energy(Wd, Md)
    df = pd.DataFrame({"neuron": np.arange(len(Wd)), "norm": Wd.norm(dim=1).cpu().numpy(),
                       "top_atom": E.argmax(1).cpu().numpy()})
    for k in ks:
        df[f"purity_{k}"] = purity(Wd, Md, k).cpu().numpy()
    df["dense_mass"] = 1.0 - df[f"purity_{max(ks)}"]
    df["participation"] = participation(Wd, Md).cpu().numpy()
    if direction is not None:
        u = torch.as_tensor(np.asarray(direction), dtype=torch.float64).flatten()
        C = Wd @ Md  # (n, n_atoms)
        top = C.abs().topk(max(ks), dim=1).indices
        rest = C.scatter(1, top, 0.0) @ torch.linalg.pinv(Md)  # the off-top-k part back in input space
        cos = (rest @ u).abs() / (rest.norm(dim=1) * u.norm()).clamp_min(1e-300)
        df["mix_align"] = cos.cpu().numpy()
    return df


class Decomposition(NamedTuple):
    """w_ref = beta * w_other + v per neuron, with v orthogonal to w_other.

    beta: (n,); v: (n, d); cos: (n,) cosine(w_ref, w_other); resid_share: ||v||^2 / ||w_ref||^2."""

    beta: torch.Tensor
    v: torch.Tensor
    cos: torch.Tensor
    resid_share: torch.Tensor


def decompose(W_ref, W_other) -> Decomposition:
    """Split each neuron of ``W_ref`` (n, d) along the same neuron of ``W_other`` (n, d) (e.g. a clean
    and an adversarially trained network from the same initialisation)."""
    A = as_matrix(W_ref, "W_ref", 1).double()
    B = as_matrix(W_other, "W_other", 1).double().to(A.device)
    if A.shape != B.shape:
        raise ValueError(f"W_other: shape {tuple(B.shape)} differs from W_ref's {tuple(A.shape)}")
    bb = (B * B).sum(1).clamp_min(1e-300)
    beta = (A * B).sum(1) / bb
    v = A - beta[:, None] * B
    cos = (A * B).sum(1) / (A.norm(dim=1) * B.norm(dim=1)).clamp_min(1e-300)
    share = (v * v).sum(1) / (A * A).sum(1).clamp_min(1e-300)
    return Decomposition(beta, v, cos, share)


def orthonormal_dictionary(M) -> torch.Tensor:
    """The orthonormal matrix nearest to a square dictionary M: (d, d) (polar factor U V^T of its SVD)."""
    M = as_matrix(M, "M", 1).double()
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"M: need a square (complete) dictionary to orthonormalise, got {tuple(M.shape)}")
    U, _, Vh = torch.linalg.svd(M)
    return U @ Vh


__all__ = ["atom_energy", "purity", "participation", "expected_random_purity", "random_purity",
           "neuron_table", "Decomposition", "decompose", "orthonormal_dictionary"]

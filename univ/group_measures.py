"""Chughtai, Chan & Nanda (2023)'s measures: which irreducible representations a group-composition network uses.

Arrays are indexed by group element ids (see :mod:`univ.groups`): an embedding is (|G|, d) (row = element),
hidden activations and logits are over the full grid of pairs, (|G|^2, d) with row a * |G| + b.

- :func:`trace_similarity`: cosine similarity between the logits (centred over c) and chi_rho(a b c^-1).
- :func:`logit_components`: the logits' orthogonal projection onto the functions (a, b, c) -> rho_ij(a b c^-1);
  :func:`restricted_loss` keeps only the key irreps' components, :func:`excluded_loss` removes one irrep's.
- :func:`variance_fractions`: the fraction of (centred) variance of embeddings, unembedding, hidden
  activations and logits in each irrep's subspace (definitions in its docstring).
- :func:`key_irreps` (the irreps holding a given share of the logits) and :func:`learning_order` (from
  checkpoints along training).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .groups import Group, Irrep, irrep_basis, irreps


def _irrep_map(G: Group, names: Iterable[str] | None = None) -> dict[str, Irrep]:
    all_ = {f.name: f for f in irreps(G)}
    if names is None:
        return all_
    names = list(names)
    for n in names:
        if n not in all_:
            from .registry import unknown_name_error

            raise unknown_name_error(f"irrep of {G.name}", n, list(all_))
    return {n: all_[n] for n in names}


def _as_array(x, name: str, shape0: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != shape0:
        raise ValueError(f"{name}: expected a ({shape0}, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf")
    return x


def _basis(G: Group, names: Iterable[str]) -> np.ndarray:
    """(|G|, r) orthonormal basis of the non-trivial irreps ``names`` (trivial parts dropped: data is centred)."""
    cols = [irrep_basis(f) for n, f in _irrep_map(G, names).items() if n != "trivial"]
    return np.concatenate(cols, 1) if cols else np.zeros((len(G), 0))


def element_fraction(W, G: Group, names: Iterable[str]) -> float:
    """Fraction of the variance of ``W`` (|G|, d), a function of one element (embedding, unembedding^T),
    in the span of the matrix elements of the irreps ``names`` (rows centred first)."""
    W = _as_array(W, "W", len(G))
    Wc = W - W.mean(0)
    Q = _basis(G, names)
    total = (Wc ** 2).sum()
    return float(((Q.T @ Wc) ** 2).sum() / total) if total > 0 else float("nan")


def pair_fraction(H, G: Group, names: Iterable[str], per_column: bool = False):
    """Fraction of the variance of ``H`` (|G|^2, d), a function of the pair (a, b) (hidden activations), in
    the span of the functions rho_ij(a) sigma_kl(b) with rho, sigma in ``names`` or trivial (the constant
    excluded: H is centred): everything the irreps ``names`` can build from a and b. ``per_column``: one
    fraction per column (d,) instead of one for the whole array (NaN for a constant column)."""
    n = len(G)
    H = _as_array(H, "H", n * n).reshape(n, n, -1)
    H = H - H.mean((0, 1))
    names = list(names)
    Q = np.concatenate([np.ones((n, 1)) / np.sqrt(n), _basis(G, names)], 1)  # trivial first
    C = np.einsum("ar,abd,bs->rsd", Q, H, Q)
    C[0, 0] = 0.0
    if per_column:
        total = (H ** 2).sum((0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (C ** 2).sum((0, 1)) / total, np.nan)
    total = (H ** 2).sum()
    return float((C ** 2).sum() / total) if total > 0 else float("nan")


def _logit_coefficients(L: np.ndarray, G: Group, Q: np.ndarray) -> np.ndarray:
    """Coefficients of L (|G|^2, |G|) on the orthonormal basis (a, b, c) -> Q[a b c^-1, k] / |G|."""
    n = len(G)
    prod = G.table.reshape(-1)
    by_product = np.zeros((n, n))
    np.add.at(by_product, prod, L)  # sum over the pairs with the same product a * b
    idx = G.table[:, G.inverse]  # (g, c) -> g c^-1
    return np.einsum("gc,gck->k", by_product, Q[idx]) / n


def logit_components(logits, G: Group, names: Iterable[str]) -> np.ndarray:
    """The projection of ``logits`` (|G|^2, |G|, centred over c) onto the functions rho_ij(a b c^-1) of the
    irreps ``names``: an array of the same shape."""
    n = len(G)
    L = _as_array(logits, "logits", n * n)
    L = L - L.mean(1, keepdims=True)
    Q = _basis(G, names)
    coef = _logit_coefficients(L, G, Q)
    M = Q[G.table[:, G.inverse]] @ coef / n  # (g, c)
    return M[G.table.reshape(-1)]


def logit_fraction(logits, G: Group, names: Iterable[str]) -> float:
    """Fraction of the variance of the logits (centred over c) in the span of rho_ij(a b c^-1), rho in ``names``."""
    n = len(G)
    L = _as_array(logits, "logits", n * n)
    L = L - L.mean(1, keepdims=True)
    coef = _logit_coefficients(L, G, _basis(G, names))
    total = (L ** 2).sum()
    return float((coef ** 2).sum() / total) if total > 0 else float("nan")


def trace_similarity(logits, G: Group, names: Iterable[str] | None = None) -> dict[str, float]:
    """Per irrep: cosine similarity between the logits (|G|^2, |G|) and chi_rho(a b c^-1), both centred over c
    (NaN for the trivial irrep, whose centred character is zero)."""
    n = len(G)
    L = _as_array(logits, "logits", n * n)
    L = L - L.mean(1, keepdims=True)
    idx = G.table[:, G.inverse][G.table.reshape(-1)]  # (a*b, c) -> a b c^-1
    out = {}
    for name, f in _irrep_map(G, names).items():
        T = f.character[idx]
        T = T - T.mean(1, keepdims=True)
        denom = np.linalg.norm(L) * np.linalg.norm(T)
        out[name] = float((L * T).sum() / denom) if denom > 1e-12 else float("nan")
    return out


def _loss(logits: np.ndarray, labels, rows) -> float:
    L = torch.as_tensor(logits[rows])
    return float(F.cross_entropy(L, torch.as_tensor(np.asarray(labels)[rows], dtype=torch.long)))


def restricted_loss(logits, G: Group, key: Sequence[str], rows=None) -> float:
    """Cross-entropy of the logits restricted to the key irreps' rho(a b c^-1) components, on ``rows`` of the
    grid (default all; the paper uses the training pairs)."""
    rows = np.arange(len(G) ** 2) if rows is None else np.asarray(rows)
    return _loss(logit_components(logits, G, key), G.table.reshape(-1), rows)


def excluded_loss(logits, G: Group, name: str, rows=None) -> float:
    """Cross-entropy of the logits with irrep ``name``'s rho(a b c^-1) components removed, on ``rows``."""
    rows = np.arange(len(G) ** 2) if rows is None else np.asarray(rows)
    L = _as_array(logits, "logits", len(G) ** 2)
    L = L - L.mean(1, keepdims=True)
    return _loss(L - logit_components(L, G, [name]), G.table.reshape(-1), rows)


def chance_fraction(G: Group, name: str) -> float:
    """The fraction a random (isotropic) function of one element puts in irrep ``name``: r / (|G| - 1)."""
    return irrep_basis(_irrep_map(G, [name])[name]).shape[1] / (len(G) - 1)


def key_irreps(fractions: dict[str, float], threshold: float = 0.05, chance: dict[str, float] | None = None
               ) -> list[str]:
    """The non-trivial irreps whose fraction is at least ``threshold`` (and, given ``chance``, at least twice
    their chance fraction). The analysis uses the logit fractions, whose chance level is ~0."""
    chance = chance or {}
    return sorted(n for n, v in fractions.items()
                  if n != "trivial" and v >= max(threshold, 2 * chance.get(n, 0.0)))


def learning_order(fractions_by_step: dict[int, dict[str, float]], key: Sequence[str]) -> dict[str, int]:
    """For each key irrep: the first checkpoint step at which its fraction has covered half the way from its
    initial value (step 0) to its final value. Sorting by the step gives the order of learning."""
    steps = sorted(fractions_by_step)
    out = {}
    for name in key:
        first, last = fractions_by_step[steps[0]][name], fractions_by_step[steps[-1]][name]
        mid = (first + last) / 2
        out[name] = next(s for s in steps if fractions_by_step[s][name] >= mid) if last > first else steps[-1]
    return out

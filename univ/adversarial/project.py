"""Where does an activation change go? Decompose deltas (perturbed - clean activations) in a basis.

A *basis* is either a matrix of directions (m, d) (rows; orthonormal or not, m may exceed d) or a
sparse autoencoder-like object with ``encode`` and ``decode`` (its decoder directions are taken as
``decode(I) - decode(0)``, i.e. in activation units). Three ways to get per-direction coefficients:

- ``"lstsq"``: least squares on the directions (for an orthonormal basis, plain dot products);
  optionally restricted to a per-sample ``support`` (e.g. the SAE latents active on either input);
- ``"omp"``: orthogonal matching pursuit, the best k-term approximation found greedily; defined for
  any dictionary, overcomplete ones included (for an orthonormal basis it equals ``"lstsq"``);
- ``"codes"``: an SAE's own reading: ``encode(clean + delta) - encode(clean)``.

Per sample, :func:`project` reports ``frac_top{k}``: the fraction of ||delta||^2 explained by the span of
the k largest-coefficient directions (the least-squares fit of delta on them; for an orthonormal basis
simply the top-k share of the squared coefficients), ``share_top{k}``: the top-k share of the
coefficient energies e_j = (a_j ||D_j||)^2, and ``participation_ratio`` (sum e)^2 / sum e^2, the
effective number of directions used. Scale-free, so deltas of any size compare.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from .._checks import as_labels, as_matrix, check_choice, check_int, check_positive, check_same_n, to_tensor

K_DEFAULT = (1, 5, 10)


# --------------------------------------------------------------------------------------------------
# bases


def neuron_basis(d: int) -> torch.Tensor:
    """The natural basis (d, d): one direction per neuron."""
    d = check_int(d, "d", low=1)
    return torch.eye(d, dtype=torch.float64)


def random_orthonormal(d: int, seed: int = 0) -> torch.Tensor:
    """A Haar-random orthonormal basis (d, d) (rows)."""
    d = check_int(d, "d", low=1)
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).T


def random_dictionary(m: int, d: int, seed: int = 0) -> torch.Tensor:
    """m random unit directions in R^d (m, d): the overcomplete null model for an SAE decoder."""
    m, d = check_int(m, "m", low=1), check_int(d, "d", low=1)
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    D = torch.randn(m, d, generator=g, dtype=torch.float64)
    return D / D.norm(dim=1, keepdim=True)


def pca_basis(acts) -> torch.Tensor:
    """Principal directions (d, d) of ``acts`` (n, d), by decreasing variance (rows)."""
    X = as_matrix(acts, "acts")
    # the full SVD is only needed to complete the basis when n < d; with n >= d it would build an n x n U for nothing
    _, _, vt = torch.linalg.svd(X - X.mean(0), full_matrices=X.shape[0] < X.shape[1])
    return vt


def is_sae(basis) -> bool:
    """Whether ``basis`` is an SAE-like object (has ``encode`` and ``decode``) rather than a matrix."""
    return hasattr(basis, "encode") and hasattr(basis, "decode")


def directions(basis, d: int | None = None) -> torch.Tensor:
    """The directions (m, d) of a basis: the matrix itself, or an SAE's decoder directions."""
    if is_sae(basis):
        m = int(basis.d_sae)
        with torch.no_grad():
            eye = torch.eye(m, dtype=torch.float64)
            D = (torch.as_tensor(basis.decode(eye)) - torch.as_tensor(basis.decode(eye[:1] * 0))).double()
    else:
        D = as_matrix(basis, "basis", min_rows=1)
    if d is not None and D.shape[1] != check_int(d, "d", low=1):
        raise ValueError(f"basis: directions have dimension {D.shape[1]}, but delta has {d} features")
    return D


# --------------------------------------------------------------------------------------------------
# coefficients


def _is_orthonormal(D: torch.Tensor, tol: float = 1e-6) -> bool:
    return D.shape[0] <= D.shape[1] and bool(
        torch.allclose(D @ D.T, torch.eye(D.shape[0], dtype=D.dtype), atol=tol))


def lstsq_coefficients(delta: torch.Tensor, D: torch.Tensor, support: torch.Tensor | None = None):
    """Coefficients a (n, m) minimising ||delta - a D||, min-norm when underdetermined.

    support: optional (n, m) bool mask; a sample's coefficients outside its support are 0.
    """
    if support is None:
        if _is_orthonormal(D):
            return delta @ D.T
        return torch.linalg.lstsq(D.T, delta.T, driver="gelsd").solution.T
    a = torch.zeros(len(delta), D.shape[0], dtype=delta.dtype)
    for i in range(len(delta)):
        idx = torch.nonzero(support[i])[:, 0]
        if len(idx):
            a[i, idx] = torch.linalg.lstsq(D[idx].T, delta[i:i + 1].T, driver="gelsd").solution[:, 0]
    return a


def omp(delta: torch.Tensor, D: torch.Tensor, k: int):
    """Orthogonal matching pursuit, batched: for each sample the indices (n, k) chosen greedily and the
    explained fraction of ||delta||^2 after 1..k atoms (n, k). delta: (n, d); D: (m, d) atoms as rows."""
    delta, D = as_matrix(delta, "delta", min_rows=1), as_matrix(D, "D", min_rows=1)
    if D.shape[1] != delta.shape[1]:
        raise ValueError(f"D: atoms have dimension {D.shape[1]}, but delta has {delta.shape[1]} features")
    k = check_int(k, "k", low=1)
    Dn = D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n, d = delta.shape
    k = min(k, d, D.shape[0])
    chosen = torch.zeros(n, k, dtype=torch.long)
    explained = torch.zeros(n, k, dtype=delta.dtype)
    Q = torch.zeros(n, d, k, dtype=delta.dtype)  # orthonormal basis of the chosen atoms' span
    resid = delta.clone()
    total = delta.pow(2).sum(1).clamp_min(1e-300)
    for s in range(k):
        corr = (resid @ Dn.T).abs()
        if s:
            corr.scatter_(1, chosen[:, :s], -1.0)
        j = corr.argmax(1)
        chosen[:, s] = j
        v = Dn[j]  # (n, d)
        v = v - torch.einsum("ndk,nk->nd", Q[:, :, :s], torch.einsum("ndk,nd->nk", Q[:, :, :s], v))
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        Q[:, :, s] = v
        resid = resid - (resid * v).sum(1, keepdim=True) * v
        explained[:, s] = 1 - resid.pow(2).sum(1) / total
    return chosen, explained


def _span_fraction(delta: torch.Tensor, D: torch.Tensor, order: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of ||delta||^2 explained by the span of each sample's first k directions in ``order``."""
    k = min(k, order.shape[1])
    A = D[order[:, :k]].transpose(1, 2)  # (n, d, k)
    sol = torch.linalg.lstsq(A, delta[:, :, None], driver="gelsd").solution
    resid = delta - (A @ sol)[:, :, 0]
    return 1 - resid.pow(2).sum(1) / delta.pow(2).sum(1).clamp_min(1e-300)


# --------------------------------------------------------------------------------------------------
# the public decomposition


def project(delta, basis, k=K_DEFAULT, *, method: str = "auto", clean=None, support=None) -> pd.DataFrame:
    """Per-sample concentration of activation changes ``delta`` (n, d) in ``basis``.

    basis: directions (m, d) or an SAE (``encode``/``decode``/``d_sae``). method: "auto" (SAE with
    ``clean`` -> "codes"; orthonormal matrix -> "lstsq"; otherwise "omp"), "lstsq", "omp", "codes".
    clean: (n, d) clean activations (required by "codes"). support: (n, m) bool mask for "lstsq", or
    "active" (with an SAE and ``clean``): the latents active on the clean or the perturbed input.
    With "omp", ``share_top{k}`` uses the squared normalised correlations <delta, D_j/||D_j||>^2 and
    ``participation_ratio`` is NaN (OMP has no coefficient vector over the whole dictionary).

    Returns a DataFrame, one row per sample: ``sample, norm, frac_top{k}..., share_top{k}...,
    participation_ratio, n_dirs, method``; "codes" adds ``n_changed`` (latents whose activation
    changes), ``jaccard`` (active sets clean vs perturbed), ``n_active_clean``.
    """
    delta = as_matrix(delta, "delta", min_rows=1)
    n, d = delta.shape
    ks = [check_int(v, "k", low=1) for v in (k if isinstance(k, (list, tuple, np.ndarray)) else [k])]
    if not ks:
        raise ValueError("k: expected at least one k")
    check_choice(method, "method", ("auto", "lstsq", "omp", "codes"))
    D = directions(basis, d)
    m = D.shape[0]
    if method == "auto":
        if is_sae(basis) and clean is not None and support is None:
            method = "codes"
        else:
            method = "lstsq" if support is not None or _is_orthonormal(D) else "omp"
    extra: dict = {}
    if method in ("codes",) or isinstance(support, str):
        if not is_sae(basis) or clean is None:
            raise ValueError(f"method={method!r}/support='active' need an SAE basis and clean activations")
        clean = as_matrix(clean, "clean", min_rows=1)
        check_same_n(delta, clean, ("delta", "clean"))
        changes = code_changes(basis, clean, clean + delta)
        extra = {c: changes.table[c].to_numpy() for c in ("n_changed", "jaccard", "n_active_clean")}
    if isinstance(support, str):
        check_choice(support, "support", ("active",))
        support = changes.active_union
    elif support is not None:
        support = to_tensor(support, "support")
        if support.dtype != torch.bool:
            raise TypeError(f"support: expected a bool mask, got dtype {support.dtype}")
        if support.shape != (n, m):
            raise ValueError(f"support: expected a bool mask of shape ({n}, {m}), got {tuple(support.shape)}")

    dn = D.norm(dim=1)
    if method == "omp":
        chosen, explained = omp(delta, D, max(ks))
        energy = (delta @ (D / dn[:, None].clamp_min(1e-12)).T).pow(2)
        fracs = {kk: explained[:, min(kk, explained.shape[1]) - 1] for kk in ks}
    else:
        a = changes.dz if method == "codes" else lstsq_coefficients(delta, D, support)
        energy = (a * dn).pow(2)
        order = energy.argsort(dim=1, descending=True)
        fracs = {kk: _span_fraction(delta, D, order, kk) for kk in ks}
    tot = energy.sum(1).clamp_min(1e-300)
    top = energy.sort(dim=1, descending=True).values.cumsum(1)
    out = {"sample": np.arange(n), "norm": delta.norm(dim=1).numpy()}
    for kk in ks:
        out[f"frac_top{kk}"] = fracs[kk].numpy()
    for kk in ks:
        out[f"share_top{kk}"] = (top[:, min(kk, m) - 1] / tot).numpy()
    pr = (tot.pow(2) / energy.pow(2).sum(1).clamp_min(1e-300)).numpy()
    # OMP has no coefficient vector over the whole dictionary, so no participation ratio
    out["participation_ratio"] = np.full(n, np.nan) if method == "omp" else pr
    out["n_dirs"] = m
    out["method"] = method
    df = pd.DataFrame({**out, **extra})
    zero = delta.norm(dim=1).numpy() == 0
    df.loc[zero, [c for c in df.columns if c.startswith(("frac_", "share_", "participation"))]] = np.nan
    return df


# --------------------------------------------------------------------------------------------------
# SAE code changes and class association


def _encode(sae, acts: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.as_tensor(sae.encode(acts.float())).double().cpu()


class CodeChanges(NamedTuple):
    """What :func:`code_changes` returns."""

    table: pd.DataFrame
    """Per sample: n_changed (latents with |dz| > tol * max|z_clean|), n_active_clean, n_active_perturbed,
    jaccard (of the active sets)."""
    dz: torch.Tensor
    """(n, m) float64: the code change z(perturbed) - z(clean)."""
    active_union: torch.Tensor
    """(n, m) bool: latents active on the clean or the perturbed input."""


def code_changes(sae, clean, perturbed, tol: float = 1e-6) -> CodeChanges:
    """How an SAE's codes change from clean (n, d) to perturbed (n, d) activations, per sample."""
    if not is_sae(sae):
        raise ValueError(f"sae: expected an SAE (with encode and decode), got {type(sae).__name__}")
    check_positive(tol, "tol", strict=False)
    clean = as_matrix(clean, "clean", min_rows=1)
    perturbed = as_matrix(perturbed, "perturbed", min_rows=1)
    check_same_n(clean, perturbed, ("clean", "perturbed"))
    z0, z1 = _encode(sae, clean), _encode(sae, perturbed)
    scale = z0.abs().amax(1, keepdim=True).clamp_min(1e-12)
    a0, a1 = z0 > 0, z1 > 0
    union = (a0 | a1).sum(1)
    df = pd.DataFrame({
        "n_changed": ((z1 - z0).abs() > tol * scale).sum(1).numpy(),
        "n_active_clean": a0.sum(1).numpy(), "n_active_perturbed": a1.sum(1).numpy(),
        "jaccard": torch.where(union > 0, (a0 & a1).sum(1) / union.clamp_min(1), 1.0).numpy(),
    })
    return CodeChanges(df, z1 - z0, a0 | a1)


def latent_class_association(codes, y, n_classes: int | None = None) -> pd.DataFrame:
    """Per latent: the class carrying most of its activation mass on clean data, and that share.

    codes: (n, m) non-negative codes; y: (n,) labels. Columns: latent, top_class, class_share,
    frequency (fraction of samples where it fires).
    """
    z = as_matrix(codes, "codes", min_rows=1).clamp_min(0)
    n_classes = None if n_classes is None else check_int(n_classes, "n_classes", low=1)
    y = as_labels(y, "y", n=len(z), n_classes=n_classes, device="cpu")
    C = n_classes or int(y.max()) + 1
    mass = torch.zeros(C, z.shape[1], dtype=z.dtype).index_add_(0, y, z)
    tot = mass.sum(0)
    return pd.DataFrame({
        "latent": np.arange(z.shape[1]), "top_class": mass.argmax(0).numpy(),
        "class_share": torch.where(tot > 0, mass.max(0).values / tot.clamp_min(1e-300), np.nan).numpy(),
        "frequency": (z > 0).double().mean(0).numpy(),
    })


def most_changed_latents(sae, clean, perturbed, y, y_adv=None, assoc: pd.DataFrame | None = None,
                         top: int = 10) -> pd.DataFrame:
    """The latents most raised and most lowered on average by a perturbation, with class association.

    y: (n,) true labels; y_adv: (n,) predictions on the perturbed inputs (optional). assoc: the output
    of :func:`latent_class_association` on reference clean data (default: on ``clean`` with y).
    Columns: direction ("raised"/"lowered"), rank, latent, mean_dz, frac_changed, top_class,
    class_share, frac_true_class (latent's class == true label among samples where it moved this way),
    frac_adv_class (== adversarial prediction, when y_adv is given).
    """
    dz = code_changes(sae, clean, perturbed).dz
    y = as_labels(y, "y", n=len(dz), device="cpu")
    ya = None if y_adv is None else as_labels(y_adv, "y_adv", n=len(dz), device="cpu")
    top = check_int(top, "top", low=1)
    if assoc is not None and (not isinstance(assoc, pd.DataFrame) or len(assoc) != dz.shape[1]
                              or not {"top_class", "class_share"} <= set(assoc.columns)):
        raise ValueError(f"assoc: expected latent_class_association's table with one row per latent "
                         f"({dz.shape[1]}), got {type(assoc).__name__}")
    if assoc is None:
        assoc = latent_class_association(_encode(sae, as_matrix(clean, "clean", min_rows=1)), y)
    mean = dz.mean(0)
    rows = []
    for direction, idx in (("raised", mean.argsort(descending=True)[:top]),
                           ("lowered", mean.argsort()[:top])):
        for rank, j in enumerate(idx.tolist()):
            moved = dz[:, j] > 0 if direction == "raised" else dz[:, j] < 0
            cls = int(assoc["top_class"].iloc[j])
            row = {"direction": direction, "rank": rank + 1, "latent": j, "mean_dz": float(mean[j]),
                   "frac_changed": float(moved.double().mean()), "top_class": cls,
                   "class_share": float(assoc["class_share"].iloc[j]),
                   "frac_true_class": float((y[moved] == cls).double().mean()) if moved.any() else np.nan}
            if ya is not None:
                row["frac_adv_class"] = float((ya[moved] == cls).double().mean()) if moved.any() else np.nan
            rows.append(row)
    return pd.DataFrame(rows)

"""Which models does each latent of a multi-model dictionary live in? Tags, checks, nulls and scores.

- :func:`latent_tags`: a latent lives in model m when its decoder norm there is at least ``threshold`` times
  its largest decoder norm (normalised space, where each model's activations have mean norm sqrt(d_m)).
  The default 1/9 is Lindsey et al.'s cut generalised: for two models they call a latent exclusive when its
  relative norm ||d_B|| / (||d_A|| + ||d_B||) is below 0.1 or above 0.9, i.e. when the smaller norm is under
  1/9 of the larger; the ratio to the largest norm keeps that meaning for any N.
- Latent Scaling (Minder et al. 2025), for every latent tagged as absent from some model: the closed-form
  least-squares vector v_m = argmin_v sum_x ||r_m(x) + z(x) d_m - z(x) v||^2, with r_m model m's residual
  x_m - x_hat_m and d_m the latent's own decoder block, i.e. how much of model m the latent's activation
  explains once the decoder is free. nu = max over the absent models of ||v_m|| / max over its models of
  ||v_m||; a latent with nu >= threshold would have been tagged as living there had its decoder not been
  shrunk: a false exclusive (``ls_flag``). (Minder et al. fit a scalar along the other model's decoder
  direction; with models of different widths there is no shared direction, so the vector is fitted.)
- :func:`seed_stability`: one-to-one matching of two dictionaries' decoders (different seeds); latents
  whose partner's cosine is below ``threshold`` are unstable and left out of counts.
- :func:`shuffle_pairing`: the null of the shuffled-pairing control (each model's rows permuted on their own).
- Counts per subset carry percentile bootstrap intervals over the counted latents.
- :func:`score_subsets`: precision/recall of subset tags and per-model MMCS against a known truth
  (:func:`univ.data.shared_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .._checks import as_matrix, check_int, check_real

DEFAULT_THRESHOLD = 1 / 9


@dataclass(frozen=True)
class LatentTags:
    """What :func:`latent_tags` returns.

    table: one row per latent: ``latent``, ``norm_<model>`` (decoder norm relative to the latent's largest),
    ``subset`` (model names joined by "+"), ``size``, ``live``, ``stable``, ``counted`` (live and stable),
    ``ls_nu`` and ``ls_flag`` (Latent Scaling, NaN/False for latents in every model).
    counts: one row per subset and per subset size (``subset`` "size=k") and "shared (size>=2)": count,
    fraction of counted latents, 95% bootstrap intervals of both.
    """

    table: pd.DataFrame
    counts: pd.DataFrame
    threshold: float
    model_names: list[str]

    def subsets(self) -> list[tuple[int, ...]]:
        """Every latent's subset as a tuple of model indices."""
        names = {n: i for i, n in enumerate(self.model_names)}
        return [tuple(names[p] for p in s.split("+")) for s in self.table["subset"]]


def _names(model_names, n: int) -> list[str]:
    if model_names is None:
        return [f"m{i}" for i in range(n)]
    names = [str(x) for x in model_names]
    if len(names) != n:
        raise ValueError(f"model_names: expected {n} names (one per model), got {len(names)}")
    if len(set(names)) != n or any("+" in x for x in names):
        raise ValueError(f"model_names: expected {n} distinct names without '+', got {names}")
    return names


@torch.no_grad()
def joint_codes(model, xs, batch_size: int = 4096) -> Tensor:
    """Codes (n, d_sae) of the N models' activations, in batches (a crosscoder's ``encode``; a universal
    SAE's codes from every model, averaged)."""
    x = model.check_inputs(xs)
    xs_j = model.split(x)
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model.encode([b[i:i + batch_size] for b in xs_j]))
    return torch.cat(out)


@torch.no_grad()
def latent_scaling(model, xs, codes: Tensor | None = None) -> Tensor:
    """(d_sae, N) float64: ||v_m|| of every latent in every model (see the module docstring), normalised units.
    NaN for latents that never fire."""
    x = model.check_inputs(xs) * model.norm_scale
    z = joint_codes(model, xs) if codes is None else codes
    z = z.double()
    x_hat = (z @ model.W_dec.double() + model.b_dec.double())
    resid = model.split(x.double() - x_hat)
    energy = z.pow(2).sum(0)  # (d_sae,)
    out = []
    for r, d in zip(resid, model.W_decs):
        v = (z.T @ r) / energy.clamp_min(1e-30)[:, None] + d.double()
        out.append(v.norm(dim=1))
    nu = torch.stack(out, 1)
    nu[energy <= 0] = float("nan")
    return nu


def latent_tags(model, xs=None, *, threshold: float = DEFAULT_THRESHOLD, model_names=None, stable=None,
                latent_scaling_test: bool = True, n_bootstrap: int = 1000, seed: int = 0) -> LatentTags:
    """Tag every latent of ``model`` (a Crosscoder or UniversalSAE) with the subset of models it lives in.

    xs: the N models' activations on the same inputs (a list of (n, d_ins[m]) arrays), used to find live
    latents (fire at least once) and for Latent Scaling; None: every latent counts as live, no test.
    threshold: relative decoder norm at which a latent counts as living in a model (1/9, see module doc).
    model_names: N names for the table (default m0, m1, ...). stable: optional (d_sae,) bool mask (from
    :func:`seed_stability`); unstable latents are tagged but not counted. n_bootstrap: resamples of the
    counted latents behind the intervals.
    """
    threshold = check_real(threshold, "threshold", 0.0, 1.0)
    n_bootstrap = check_int(n_bootstrap, "n_bootstrap", low=1)
    names = _names(model_names, model.n_models)
    norms = model.decoder_norms()
    rel = norms / norms.max(1, keepdim=True).values.clamp_min(1e-30)
    member = rel >= threshold
    table = pd.DataFrame({"latent": np.arange(model.d_sae)})
    for m, name in enumerate(names):
        table[f"norm_{name}"] = rel[:, m].numpy()
    table["subset"] = ["+".join(names[m] for m in range(model.n_models) if row[m]) for row in member.tolist()]
    table["size"] = member.sum(1).numpy()
    live = torch.ones(model.d_sae, dtype=torch.bool)
    nu = torch.full((model.d_sae,), float("nan"), dtype=torch.float64)
    if xs is not None:
        codes = joint_codes(model, xs)
        live = (codes > 0).any(0).cpu()
        if latent_scaling_test and getattr(model, "joint_code", False):
            v = latent_scaling(model, xs, codes)
            fitted_in = torch.where(member, v, torch.zeros_like(v)).max(1).values
            fitted_out = torch.where(~member, v, torch.zeros_like(v)).max(1).values
            nu = torch.where(member.all(1), nu, fitted_out / fitted_in.clamp_min(1e-30))
    table["live"] = live.numpy()
    if stable is None:
        stable = torch.ones(model.d_sae, dtype=torch.bool)
    stable = torch.as_tensor(stable, dtype=torch.bool).cpu()
    if stable.shape != (model.d_sae,):
        raise ValueError(f"stable: expected a bool mask of shape ({model.d_sae},), got {tuple(stable.shape)}")
    table["stable"] = stable.numpy()
    table["counted"] = table["live"] & table["stable"]
    table["ls_nu"] = nu.numpy()
    table["ls_flag"] = (table["ls_nu"] >= threshold).fillna(False).astype(bool)
    counts = subset_counts(table, names, n_bootstrap, seed)
    return LatentTags(table, counts, threshold, names)


def subset_counts(table: pd.DataFrame, names: list[str], n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Counts and fractions of the counted latents per subset, per subset size and shared (size >= 2), with
    95% percentile bootstrap intervals (resampling the counted latents)."""
    t = table[table["counted"]]
    subsets = t["subset"].to_numpy()
    sizes = t["size"].to_numpy()
    n = len(t)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, max(n, 1), size=(n_bootstrap, n))
    groups = {s: subsets == s for s in sorted(set(subsets), key=lambda s: (-s.count("+"), s))}
    for k in range(1, len(names) + 1):
        groups[f"size={k}"] = sizes == k
    groups["shared (size>=2)"] = sizes >= 2
    if "ls_flag" in t:
        groups["exclusive flagged by Latent Scaling"] = (sizes < len(names)) & t["ls_flag"].to_numpy()
    rows = []
    for key, hit in groups.items():
        count = int(hit.sum())
        boot = hit[idx].sum(1) if n else np.zeros(n_bootstrap)
        lo, hi = np.percentile(boot, [2.5, 97.5]) if n else (0.0, 0.0)
        rows.append({"subset": key, "count": count, "count_low": float(lo), "count_high": float(hi),
                     "fraction": count / n if n else float("nan"), "fraction_low": lo / n if n else float("nan"),
                     "fraction_high": hi / n if n else float("nan"), "n_counted": n})
    return pd.DataFrame(rows)


class Stability(NamedTuple):
    """stable: (d_sae_a,) bool; partner: (d_sae_a,) index of the matched latent of b; cosine: (d_sae_a,)."""

    stable: Tensor
    partner: Tensor
    cosine: Tensor


@torch.no_grad()
def seed_stability(model_a, model_b, threshold: float = 0.7) -> Stability:
    """Match the latents of two dictionaries over the same models (e.g. two seeds) one to one (Hungarian, on
    the cosine of the joined decoder rows, normalised space); stable: the partner's cosine >= threshold."""
    from scipy.optimize import linear_sum_assignment

    threshold = check_real(threshold, "threshold", -1.0, 1.0)
    if list(model_a.d_ins) != list(model_b.d_ins):
        raise ValueError(f"model_b: expected dictionaries over the same models, got d_ins {model_a.d_ins} and "
                         f"{model_b.d_ins}")
    a = model_a.W_dec.double()
    b = model_b.W_dec.double()
    c = (a / a.norm(dim=1, keepdim=True).clamp_min(1e-30)) @ (b / b.norm(dim=1, keepdim=True).clamp_min(1e-30)).T
    r, j = linear_sum_assignment(c.numpy(), maximize=True)
    partner = torch.full((model_a.d_sae,), -1, dtype=torch.long)
    cos = torch.full((model_a.d_sae,), float("nan"), dtype=torch.float64)
    partner[torch.as_tensor(r)] = torch.as_tensor(j)
    cos[torch.as_tensor(r)] = c[r, j]
    return Stability(cos >= threshold, partner, cos)


def shuffle_pairing(xs, seed: int = 0) -> list[Tensor]:
    """The N models' activations with the pairing of inputs broken: model 0 as given, every other model's rows
    permuted on their own (seeded). What is shared across models on these is an artefact."""
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    if not isinstance(xs, (list, tuple)) or len(xs) < 2:
        raise ValueError(f"xs: expected a list of at least 2 arrays (one per model), got {type(xs).__name__}"
                         + (f" of length {len(xs)}" if isinstance(xs, (list, tuple)) else ""))
    out = []
    for m, x in enumerate(xs):
        t = as_matrix(x, f"xs[{m}] (model {m})", min_rows=2, dtype=None)
        if len(t) != len(out[0] if out else t):
            raise ValueError(f"xs[{m}] (model {m}): has {len(t)} rows but model 0 has {len(out[0])}; every model's "
                             "activations must be on the same inputs, row for row")
        out.append(t if m == 0 else t[torch.randperm(len(t), generator=g)])
    return out


def _corr(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlations (a's columns x b's columns), float64; constant columns correlate 0."""
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    return (a / a.norm(dim=0).clamp_min(1e-12)).T @ (b / b.norm(dim=0).clamp_min(1e-12))


@torch.no_grad()
def score_subsets(truth, codes, subsets: list[tuple[int, ...]], decoders=None, min_correlation: float = 0.5,
                  live=None) -> dict:
    """Score subset tags against a known truth (:class:`univ.sae.ground_truth.SharedFeatures`).

    codes: (n, L) the latents' activations on truth's inputs; subsets: each latent's tagged subset (model
    indices). decoders: optional N tensors (L_m, d_ins[m]) of decoder rows in model m for MMCS.
    recall: fraction of true features whose best-correlated latent correlates >= min_correlation and carries
    the feature's true subset. precision: fraction of live latents whose best-correlated true feature
    correlates >= min_correlation and has the latent's subset. mmcs_<m>: mean over model m's true features
    of the best cosine between the feature's direction and a decoder row of model m.
    """
    c = _corr(truth.coefficients, codes)  # (F, L)
    true = truth.subsets()
    tags = [tuple(sorted(s)) for s in subsets]
    best_l, j = c.max(1)
    recall = np.mean([bool(best_l[f] >= min_correlation) and tags[int(j[f])] == true[f] for f in range(len(true))])
    live = (codes > 0).any(0) if live is None else torch.as_tensor(live, dtype=torch.bool)
    best_f, fidx = c.max(0)
    ok = [bool(best_f[i] >= min_correlation) and tags[i] == true[int(fidx[i])]
          for i in torch.nonzero(live).flatten().tolist()]
    out = {"precision": float(np.mean(ok)) if ok else float("nan"), "recall": float(recall),
           "n_live": int(live.sum()), "n_features": len(true)}
    if decoders is not None:
        for m, dec in enumerate(decoders):
            u = truth.directions[m][truth.membership[:, m]].double()
            d = dec.detach().double()
            cos = (u @ (d / d.norm(dim=1, keepdim=True).clamp_min(1e-30)).T).max(1).values
            out[f"mmcs_{m}"] = float(cos.mean())
    return out


@torch.no_grad()
def pairwise_subsets(saes, xs, threshold: float = 0.7) -> tuple[Tensor, list[tuple[int, ...]], list[Tensor]]:
    """Subset tags from one SAE per model and pairwise matching (the comparison a crosscoder replaces).

    saes: N univ SAEs, xs: the N models' activations on the same inputs. Latent j of model m's SAE lives in
    m and in every model m' whose SAE has a latent whose activations correlate with it >= threshold
    (Bricken et al.'s criterion, as ``univ.sae.match(method="correlation")``).
    Returns (codes (n, sum of d_sae) of all SAEs side by side, their subsets, N decoders (d_sae_m, d_ins[m])
    in input units) for :func:`score_subsets`.
    """
    threshold = check_real(threshold, "threshold", -1.0, 1.0)
    if len(saes) != len(xs):
        raise ValueError(f"xs: expected {len(saes)} arrays (one per SAE), got {len(xs)}")
    codes = [s.encode(x) for s, x in zip(saes, xs)]
    subsets = []
    for m, z in enumerate(codes):
        hits = [(_corr(z, other).max(1).values >= threshold) if o != m else torch.ones(z.shape[1], dtype=torch.bool)
                for o, other in enumerate(codes)]
        member = torch.stack(hits, 1)
        subsets += [tuple(int(i) for i in torch.nonzero(row).flatten()) for row in member]
    decoders = [(s.W_dec / s.norm_scale).detach() for s in saes]
    return torch.cat(codes, 1), subsets, decoders

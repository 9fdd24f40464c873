"""Match SAE features across models (or seeds): which latents of ``sae_a`` recur in ``sae_b``?

Three methods (the registry :data:`MATCH_METHODS`: one function and one line each), each with a shuffled
baseline so a fraction is never read without its chance level:

- ``correlation`` (Bricken et al. 2023): codes of both SAEs on the same inputs; each live latent of A is
  paired with the latent of B whose activations correlate most with it (Pearson over inputs). Shared:
  best correlation >= ``threshold`` (0.7). Baseline: the same after shuffling B's rows (inputs), which
  breaks the pairing of inputs and nothing else.
- ``hungarian`` (Paulo & Belrose 2025): one-to-one assignment (scipy's linear_sum_assignment) on the
  cosine similarities of the encoder directions and, separately, of the decoder directions. Shared: both
  assignments agree and both cosines >= ``threshold`` (0.7). Needs the same input space (d_in); no
  activations are used. Baseline: B's directions after a random rotation of the input space.
- ``svcca`` (Lan et al. 2024): pair each live latent of A with its most correlated latent of B, drop pairs
  with correlation <= 0.1, then compare the paired decoder matrices (rows: features) with SVCCA and RSA
  (``univ.similarity``), against ``n_permutations`` (100) random pairings of the same rows; p-value =
  (1 + #{shuffled >= observed}) / (1 + n_permutations).

Comparable nulls: every method's summary also carries the same four keys, ``score`` (its headline number:
the shared fraction, or the decoder SVCCA), ``baseline`` (the mean of that number under the method's own
null), ``calibrated`` = (score - baseline) / (1 - baseline) (0 at chance, 1 at the maximum) and ``p_value``
(1 + #{null >= score}) / (1 + draws), so the three can be set side by side on one scale.

Which to use when (the three answer different questions and can disagree on the same pair; e.g. on two
untrained networks of univ's zoo correlation found 53% of latents "shared", Hungarian 0% and decoder SVCCA
p = 0.99):

- Across architectures or widths, or whenever the claim is "the same feature fires on the same inputs":
  ``correlation``. Read it beside (1) its shuffled-input baseline, (2) the same number for untrained copies
  of the two networks (frequently active, input-driven latents correlate in any network) and (3) the
  seed-to-seed ceiling: the same method on two seeds of one architecture (Paulo & Belrose 2025 find only
  ~30% of latents recur across SAE seeds), since a cross-model fraction cannot exceed it.
- Seeds of one model, or one layer of fine-tuned variants (the same input space): ``hungarian``; it
  compares directions, not behaviour, and its random-rotation null is near 0, so compare it with the
  seed-to-seed value rather than with the null alone.
- ``svcca`` asks whether the geometry of the paired decoder directions agrees. It keeps only correlated
  pairs and SVCCA of few rows is inflated; in univ's main job it was no higher for trained than for
  untrained networks. Do not use it alone as evidence of shared features.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .._checks import check_int, check_real, check_same_n
from ..models import eval_mode
from ..registry import Registry
from .model import SAE

MATCH_METHODS = Registry("matching method")
"""Registry: method name -> function(sae_a, acts_a, sae_b, acts_b, *, gen, <options>) -> MatchResult.
The options a function declares among ``threshold``, ``min_correlation`` and ``n_permutations`` are passed on;
its default for ``n_permutations`` applies when the caller gives None."""


@dataclass(frozen=True)
class MatchResult:
    """What :func:`match` returns.

    method: the method used. table: tidy DataFrame (correlation/hungarian: one row per latent of A with
    its partner in B, the similarity and ``shared``; svcca: one row per metric with value, baseline mean
    and std, p-value). summary: the headline numbers, e.g. ``shared_fraction`` and
    ``baseline_shared_fraction`` (correlation, hungarian) or ``svcca``, ``svcca_p`` (svcca).
    """

    method: str
    table: pd.DataFrame
    summary: dict = field(default_factory=dict)


@torch.no_grad()
def _codes(sae: SAE, acts, name: str, batch_size: int = 4096) -> Tensor:
    x = sae.check_input(acts, name)
    with eval_mode(sae):
        return torch.cat([sae.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _standardise(z: Tensor) -> tuple[Tensor, Tensor]:
    """Columns centred and scaled to unit norm (float64); live: (d,) bool, the columns with variance."""
    z = z.double()
    z = z - z.mean(0)
    norm = z.norm(dim=0)
    live = norm > 1e-10
    return z / norm.clamp_min(1e-10), live


def _best_correlation(za: Tensor, zb: Tensor, live_b: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """For each column of za (standardised), the best Pearson correlation with a live column of zb."""
    vals, idx = [], []
    for i in range(0, za.shape[1], chunk):
        c = za[:, i:i + chunk].T @ zb  # (chunk, m_b)
        c[:, ~live_b] = -np.inf
        v, j = c.max(1)
        vals.append(v)
        idx.append(j)
    return torch.cat(vals), torch.cat(idx)


def _activation_pairs(sae_a, acts_a, sae_b, acts_b):
    za, zb = _codes(sae_a, acts_a, "acts_a"), _codes(sae_b, acts_b, "acts_b")
    check_same_n(za, zb, ("acts_a", "acts_b"))
    if len(za) < 3:
        raise ValueError(f"acts_a: needs at least 3 samples (rows) to correlate codes, got {len(za)}")
    sa, live_a = _standardise(za)
    sb, live_b = _standardise(zb)
    if not bool(live_b.any()) or not bool(live_a.any()):
        raise ValueError("acts_a/acts_b: every latent of one SAE is constant on these inputs (all dead)")
    return sa, live_a, sb, live_b


@MATCH_METHODS.register("correlation")
def match_correlation(sae_a, acts_a, sae_b, acts_b, *, threshold: float, n_permutations: int = 5,
                      gen: torch.Generator) -> MatchResult:
    """Bricken et al. 2023: each live latent of A paired with its most correlated latent of B."""
    sa, live_a, sb, live_b = _activation_pairs(sae_a, acts_a, sae_b, acts_b)
    best, partner = _best_correlation(sa, sb, live_b)
    base_vals = []
    for _ in range(n_permutations):
        perm = torch.randperm(len(sb), generator=gen)
        base_vals.append(_best_correlation(sa, sb[perm], live_b)[0])
    base = torch.stack(base_vals).mean(0) if base_vals else torch.full_like(best, float("nan"))
    table = pd.DataFrame({
        "feature_a": np.arange(sae_a.d_sae), "feature_b": partner.numpy(), "correlation": best.numpy(),
        "baseline_correlation": base.numpy(), "live": live_a.numpy(),
    })
    table.loc[~table["live"], ["feature_b", "correlation", "baseline_correlation"]] = [-1, np.nan, np.nan]
    table["shared"] = table["correlation"] >= threshold
    live = table[table["live"]]
    shuffled_shared = [float((v[live_a] >= threshold).double().mean()) for v in base_vals]
    summary = {
        "n_features_a": sae_a.d_sae, "n_live_a": int(live_a.sum()), "threshold": threshold,
        "mean_max_correlation": float(live["correlation"].mean()),
        "shared_fraction": float(live["shared"].mean()),
        "baseline_mean_max_correlation": float(live["baseline_correlation"].mean()),
        "baseline_shared_fraction": float(np.mean(shuffled_shared)) if shuffled_shared else float("nan"),
    }
    for t in (0.5, 0.9):
        summary[f"fraction_above_{t}"] = float((live["correlation"] >= t).mean())
    summary.update(_comparable(summary["shared_fraction"], shuffled_shared))
    return MatchResult("correlation", table, summary)


def _comparable(score: float, null) -> dict:
    """The keys every method's summary shares (see the module docstring)."""
    z = np.asarray(null, dtype=float)
    if not len(z):
        return {"score": score, "baseline": float("nan"), "calibrated": float("nan"), "p_value": float("nan")}
    base = float(z.mean())
    cal = (score - base) / (1 - base) if base < 1 else float("nan")
    return {"score": score, "baseline": base, "calibrated": float(cal),
            "p_value": (1 + int((z >= score - 1e-12).sum())) / (1 + len(z))}


def _unit_rows(W: Tensor) -> Tensor:
    W = W.detach().double()
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _hungarian_pairs(Ea, Da, Eb, Db, threshold):
    from scipy.optimize import linear_sum_assignment

    ce, cd = (Ea @ Eb.T).numpy(), (Da @ Db.T).numpy()  # (m_a, m_b) cosines
    m_a = ce.shape[0]
    out = {}
    for key, c in (("encoder", ce), ("decoder", cd)):
        r, j = linear_sum_assignment(c, maximize=True)
        partner = np.full(m_a, -1)
        partner[r] = j
        cos = np.full(m_a, np.nan)
        cos[r] = c[r, j]
        out[key] = (partner, cos)
    pe, ce_ = out["encoder"]
    pd_, cd_ = out["decoder"]
    shared = (pe == pd_) & (pe >= 0) & (ce_ >= threshold) & (cd_ >= threshold)
    return pe, ce_, pd_, cd_, shared


@MATCH_METHODS.register("hungarian")
def match_hungarian(sae_a, acts_a, sae_b, acts_b, *, threshold: float, n_permutations: int = 5,
                    gen: torch.Generator) -> MatchResult:
    """Paulo & Belrose 2025: one-to-one assignments of encoder and of decoder directions (acts unused)."""
    if sae_a.d_in != sae_b.d_in:
        raise ValueError(f"sae_b: method 'hungarian' compares directions in one input space, but d_in is "
                         f"{sae_a.d_in} for sae_a and {sae_b.d_in} for sae_b; use method='correlation'")
    Ea, Da = _unit_rows(sae_a.W_enc.T), _unit_rows(sae_a.W_dec)
    Eb, Db = _unit_rows(sae_b.W_enc.T), _unit_rows(sae_b.W_dec)
    pe, ce, pdc, cd, shared = _hungarian_pairs(Ea, Da, Eb, Db, threshold)
    base = []
    for _ in range(n_permutations):
        q, _r = torch.linalg.qr(torch.randn(sae_a.d_in, sae_a.d_in, generator=gen, dtype=torch.float64))
        base.append(_hungarian_pairs(Ea, Da, Eb @ q, Db @ q, threshold)[4].mean())
    table = pd.DataFrame({"feature_a": np.arange(sae_a.d_sae), "feature_b_encoder": pe, "cos_encoder": ce,
                          "feature_b_decoder": pdc, "cos_decoder": cd, "shared": shared})
    summary = {
        "n_features_a": sae_a.d_sae, "threshold": threshold, "shared_fraction": float(shared.mean()),
        "agree_fraction": float((pe == pdc).mean()),
        "mean_cos_encoder": float(np.nanmean(ce)), "mean_cos_decoder": float(np.nanmean(cd)),
        "baseline_shared_fraction": float(np.mean(base)) if base else float("nan"),
    }
    summary.update(_comparable(summary["shared_fraction"], [float(b) for b in base]))
    return MatchResult("hungarian", table, summary)


@MATCH_METHODS.register("svcca")
def match_svcca(sae_a, acts_a, sae_b, acts_b, *, min_correlation: float, n_permutations: int = 100,
                gen: torch.Generator) -> MatchResult:
    """Lan et al. 2024: SVCCA and RSA of the decoder rows of correlated latent pairs, against shuffles."""
    from univ.similarity import rsa, svcca

    sa, live_a, sb, live_b = _activation_pairs(sae_a, acts_a, sae_b, acts_b)
    best, partner = _best_correlation(sa, sb, live_b)
    keep = live_a & (best > min_correlation)
    ia, ib = torch.nonzero(keep).flatten(), partner[keep]
    n_pairs = len(ia)
    if n_pairs < 3:
        raise ValueError(f"acts_a/acts_b: only {n_pairs} feature pairs correlate above {min_correlation}; "
                         "SVCCA needs at least 3")
    Da = sae_a.W_dec.detach().double()[ia]  # (p, d_in_a)
    Db = sae_b.W_dec.detach().double()[ib]  # (p, d_in_b)
    observed = {"svcca": float(svcca(Da, Db)), "rsa": float(rsa(Da, Db))}
    null = {k: [] for k in observed}
    for _ in range(n_permutations):
        Dp = Db[torch.randperm(n_pairs, generator=gen)]
        null["svcca"].append(float(svcca(Da, Dp)))
        null["rsa"].append(float(rsa(Da, Dp)))
    rows, summary = [], {"n_pairs": n_pairs, "n_features_a": sae_a.d_sae, "min_correlation": min_correlation,
                         "n_permutations": n_permutations}
    for k, v in observed.items():
        z = np.asarray(null[k])
        p = (1 + int((z >= v).sum())) / (1 + len(z)) if len(z) else float("nan")
        mean, std = (float(z.mean()), float(z.std())) if len(z) else (float("nan"), float("nan"))
        rows.append({"metric": k, "value": v, "baseline_mean": mean, "baseline_std": std, "p_value": p,
                     "n_pairs": n_pairs})
        summary.update({k: v, f"{k}_baseline": mean, f"{k}_p": p})
    summary.update(_comparable(observed["svcca"], null["svcca"]))
    return MatchResult("svcca", pd.DataFrame(rows), summary)


def match(sae_a: SAE, acts_a, sae_b: SAE, acts_b, method: str = "correlation", *, threshold: float = 0.7,
          min_correlation: float = 0.1, n_permutations: int | None = None, seed: int = 0) -> MatchResult:
    """Which latents of ``sae_a`` recur in ``sae_b``? Returns a :class:`MatchResult` (table + summary).

    acts_a: (n, d_in_a) and acts_b: (n, d_in_b): activations of the two models on the SAME n inputs, row
    for row (unused by ``hungarian``, which may get None). method: a name in :data:`MATCH_METHODS`
    ("correlation", "hungarian", "svcca"; see the module docstring). threshold: the similarity at which a
    latent counts as shared. min_correlation: svcca's pair filter. n_permutations: baseline repetitions
    (default: the method's, 5 or 100 for svcca).
    """
    if not isinstance(method, str):
        raise TypeError(f"method: expected a matching method name, got {type(method).__name__} {method!r}")
    fn = MATCH_METHODS[method]
    for name, s in (("sae_a", sae_a), ("sae_b", sae_b)):
        if not isinstance(s, SAE):
            raise ValueError(f"{name}: expected a univ.sae.SAE, got {type(s).__name__}")
    options = {"threshold": check_real(threshold, "threshold", -1.0, 1.0),
               "min_correlation": check_real(min_correlation, "min_correlation", -1.0, 1.0)}
    if n_permutations is not None:
        options["n_permutations"] = check_int(n_permutations, "n_permutations", low=0)
    seed = check_int(seed, "seed")
    accepted = inspect.signature(fn).parameters
    options = {k: v for k, v in options.items() if k in accepted}
    return fn(sae_a, acts_a, sae_b, acts_b, gen=torch.Generator().manual_seed(seed), **options)

"""Inference for similarity tables: permutation p-values that can be small, Benjamini-Hochberg q-values,
BCa bootstrap intervals, the null-calibrated score and the seed-ceiling ratio.

Definitions (one layer pair X: (n, d1), Y: (n, d2), one measure s, observed value s0):

- Permutation null: s(X, Y[p]) for B uniformly random row permutations p of Y (shared by every cell of a
  table, seeded by ``seed``), computed cheaply by :mod:`univ.similarity.resampling`. p-value with
  Besag & Clifford's (1991) sequential rule: draws stop at the h-th (``stop_after``) draw with
  s(X, Y[p]) >= s0, at draw l, giving p = h / l; without h exceedances among all B draws,
  p = (1 + #{s(X, Y[p]) >= s0}) / (1 + B). Exact under the null (P(p <= u) = u at every attainable u, for a
  continuous s); the smallest reachable p is p_min = 1 / (1 + B). At least ``min_draws`` draws are made
  (for the null mean) even when the rule would stop earlier; the p-value only uses the draws up to the stop.
- q-value: Benjamini & Hochberg (1995) over every p-value of the table (all layer pairs x measures):
  q_(i) = min_{j >= i} m p_(j) / j, capped at 1 (p sorted ascending, m tests).
- calibrated = (s0 - null_mean) / (1 - null_mean): 0 at chance, 1 at the measure's maximum 1 (Gröger et al.'s
  permutation-calibrated score in its mean form); NaN without a null.
- Interval: bootstrap over inputs (the same resampled rows on both sides, shared by the table), BCa (Efron
  1987) with the acceleration from a grouped jackknife (``n_groups`` groups of inputs left out in turn), or
  the percentile interval. BCa contains s0 whenever |z0| < z_{(1+ci)/2}, i.e. unless nearly every resample
  lies on one side of s0; then (CKA of unrelated layers, whose resamples duplicate rows and so inflate it)
  the interval is widened to s0 and ``ci_widened`` is True, so the point estimate lies in every interval.
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .._checks import check_int
from ..utils import stable_hash

_N = NormalDist()


class CellStats(NamedTuple):
    """The statistics of one (layer_a, layer_b, metric) cell; NaN where not computed."""

    baseline_mean: float = math.nan
    p_value: float = math.nan
    p_min: float = math.nan
    n_null: int = 0
    calibrated: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_widened: bool = False


class CeilingScore(NamedTuple):
    """value / ceiling with an interval (see :func:`ceiling_score`)."""

    ratio: float
    ci_low: float
    ci_high: float


def besag_clifford(observed: float, null: np.ndarray, n_total: int, stop_after: int | None) -> tuple[float, int]:
    """(p-value, draws used) of ``observed`` against the null draws ``null``: (k,), the first k of at most
    ``n_total`` draws (k < n_total only when the h = ``stop_after`` rule stopped early; see module docstring)."""
    exceed = np.asarray(null) >= observed - 1e-12 * max(1.0, abs(observed))
    if stop_after is not None:
        hits = np.flatnonzero(exceed)
        if len(hits) >= stop_after:
            used = int(hits[stop_after - 1]) + 1
            return stop_after / used, used
    if len(exceed) < n_total:
        raise ValueError(f"null: {len(exceed)} draws of {n_total} without {stop_after} exceedances")
    return (1 + int(exceed.sum())) / (1 + n_total), n_total


def bh_qvalues(p) -> np.ndarray:
    """Benjamini-Hochberg q-values of p-values ``p``: (m,) (NaNs stay NaN and are not counted in m)."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    raw = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(1.0, np.minimum.accumulate(raw[::-1])[::-1])
    return q


def calibrated(value: float, null_mean: float) -> float:
    """(value - null_mean) / (1 - null_mean): the share of the distance from chance to 1 that is reached."""
    if not (math.isfinite(value) and math.isfinite(null_mean)) or null_mean >= 1:
        return math.nan
    return (value - null_mean) / (1.0 - null_mean)


def bca_interval(theta: float, boots, jack, ci: float = 0.95) -> tuple[float, float]:
    """BCa interval: theta the estimate, boots: (B,) bootstrap values, jack: (G,) leave-a-group-out values.

    z0 = Phi^-1((#{boot < theta} + #{boot = theta} / 2) / B), a = sum d^3 / (6 (sum d^2)^1.5) with
    d = mean(jack) - jack; bounds: the Phi(z0 + (z0 + z) / (1 - a (z0 + z))) quantiles of boots for
    z = Phi^-1((1 -+ ci) / 2). Non-finite draws are dropped; NaNs when fewer than 2 remain."""
    b = np.asarray(boots, dtype=float)
    b = b[np.isfinite(b)]
    if len(b) < 2 or not math.isfinite(theta):
        return math.nan, math.nan
    frac = (np.sum(b < theta) + 0.5 * np.sum(b == theta)) / len(b)
    z0 = _N.inv_cdf(min(max(frac, 0.5 / len(b)), 1 - 0.5 / len(b)))
    j = np.asarray(jack, dtype=float)
    j = j[np.isfinite(j)]
    d = j.mean() - j if len(j) > 2 else np.zeros(1)
    ss = float((d * d).sum())
    a = float((d ** 3).sum()) / (6 * ss ** 1.5) if ss > 0 else 0.0
    out = []
    for z in (_N.inv_cdf((1 - ci) / 2), _N.inv_cdf((1 + ci) / 2)):
        denom = 1 - a * (z0 + z)
        out.append(_N.cdf(z0 + (z0 + z) / denom) if denom > 0 else (0.0 if z < 0 else 1.0))
    lo, hi = np.quantile(b, out)
    return float(lo), float(hi)


def percentile_interval(boots, ci: float = 0.95) -> tuple[float, float]:
    """The (1 -+ ci) / 2 quantiles of the finite bootstrap values ``boots``: (B,)."""
    b = np.asarray(boots, dtype=float)
    b = b[np.isfinite(b)]
    if len(b) < 2:
        return math.nan, math.nan
    lo, hi = np.quantile(b, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def ceiling_score(value: float, ci_low: float, ci_high: float, ceiling: float, ceiling_low: float,
                  ceiling_high: float, ci: float = 0.95) -> CeilingScore:
    """value / ceiling for a cross-model value and the same-architecture seed-to-seed value (the ceiling),
    each with its ``ci`` interval -> CeilingScore(ratio, ci_low, ci_high).

    The interval treats the two estimates as independent on the log scale: each interval's log-width gives a
    standard error se = (log hi - log lo) / (2 z), and log ratio +- z sqrt(se_v^2 + se_c^2). Estimates from the
    same inputs are usually positively correlated, which makes this interval conservative (too wide). Needs
    positive values and bounds (NaN otherwise)."""
    for v, name in ((ci, "ci"),):
        if not 0 < v < 1:
            raise ValueError(f"{name}: must be in (0, 1), got {v!r}")
    vals = (value, ci_low, ci_high, ceiling, ceiling_low, ceiling_high)
    if not all(math.isfinite(v) and v > 0 for v in vals):
        return CeilingScore(value / ceiling if ceiling else math.nan, math.nan, math.nan)
    z = _N.inv_cdf((1 + ci) / 2)
    se = math.hypot((math.log(ci_high) - math.log(ci_low)) / (2 * z),
                    (math.log(ceiling_high) - math.log(ceiling_low)) / (2 * z))
    r = value / ceiling
    return CeilingScore(r, r * math.exp(-z * se), r * math.exp(z * se))


def draws(seed: int, n: int, n_permutations: int = 0, n_bootstrap: int = 0, n_groups: int = 0, device=None):
    """The table's shared random draws for n inputs: (permutations (P, n), bootstrap counts (B, n),
    jackknife counts (G, n)); depend only on (seed, n), so any sub-table reproduces the same numbers."""
    gen = torch.Generator().manual_seed(int(stable_hash([seed, "permutation", n]), 16))
    perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(n_permutations)]) \
        if n_permutations else torch.zeros(0, n, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(stable_hash([seed, "bootstrap", n]), 16))
    idx = torch.randint(0, n, (n_bootstrap, n), generator=gen)
    counts = torch.zeros(n_bootstrap, n, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
    groups = torch.randperm(n, generator=gen) % max(n_groups, 1)
    jack = torch.stack([(groups != g).long() for g in range(n_groups)]) if n_groups else counts[:0]
    return perms.to(device), counts.to(device), jack.to(device)


def infer(A: dict, B: dict, cells: list, plans: list, values: dict, *, n_permutations: int | None,
          n_bootstrap: int | None, ci: float = 0.95, ci_method: str = "bca", stop_after: int | None = 20,
          min_draws: int = 100, n_groups: int = 50, seed: int = 0, progress: bool | None = None) -> dict:
    """Statistics of every cell of a table -> {(layer_a, layer_b, metric): CellStats}.

    A, B: {layer: (n, d) tensor}; cells: [(layer_a, layer_b)]; plans: from
    :func:`univ.similarity.resampling.plans_for`; values: {(layer_a, layer_b, metric): reported value}
    (the interval is widened to contain it). n_permutations / n_bootstrap: None skips the null / interval.
    """
    n = next(iter(A.values())).shape[0]
    device = next(iter(A.values())).device
    n_groups = min(n, n_groups) if n_bootstrap else 0
    perms, counts, jack = draws(seed, n, n_permutations or 0, n_bootstrap or 0, n_groups, device)
    out: dict = {}
    la_used, lb_used = list(dict.fromkeys(a for a, _ in cells)), list(dict.fromkeys(b for _, b in cells))
    bar = tqdm(total=len(plans) * ((len(cells) if n_permutations else 0) + len(counts) + len(jack)),
               desc="similarity statistics", disable=progress is False if progress is not None else None,
               leave=False)
    with warnings.catch_warnings():  # degenerate-input warnings were given once for the full data
        warnings.simplefilter("ignore", RuntimeWarning)
        for plan in plans:
            sa = {k: plan.prepare(A[k]) for k in la_used}
            sb = {k: plan.prepare(B[k]) for k in lb_used}
            theta = {c: plan.values(sa[c[0]], sb[c[1]]) for c in cells}
            stats = {(a, b, m): {} for a, b in cells for m in plan.names}
            if n_permutations:
                for a, b in cells:
                    stats.update(_null(plan, sa[a], sb[b], (a, b), theta[a, b], perms, stop_after, min_draws))
                    bar.update()
            if n_bootstrap:
                boots = _bootstrap(plan, A, B, sa, sb, cells, torch.cat([counts, jack]), bar)
                for (a, b, m), v in boots.items():
                    bt, jk = v[:len(counts)], v[len(counts):]
                    lo, hi = (bca_interval(theta[a, b][m], bt, jk, ci) if ci_method == "bca"
                              else percentile_interval(bt, ci))
                    s0 = values[a, b, m]
                    widened = bool(math.isfinite(lo) and not lo <= s0 <= hi)
                    stats[a, b, m].update(ci_low=min(lo, s0) if widened else lo,
                                          ci_high=max(hi, s0) if widened else hi, ci_widened=widened)
            for key, kw in stats.items():
                if "baseline_mean" in kw:
                    kw["calibrated"] = calibrated(values[key], kw["baseline_mean"])
                out[key] = CellStats(**kw)
    bar.close()
    return out


def _null(plan, sx, sy, cell, theta, perms, stop_after, min_draws) -> dict:
    total = len(perms)
    n = perms.shape[1]
    chunk = max(1, min(100, int(4e6 // (n * n))))
    got: dict[str, list] = {m: [] for m in plan.names}
    done = 0
    while done < total:
        step = perms[done:done + chunk]
        for m, v in plan.null(sx, sy, step).items():
            got[m].append(v)
        done += len(step)
        if stop_after is not None and done >= min_draws and all(
                (np.concatenate(got[m]) >= theta[m] - 1e-12 * max(1.0, abs(theta[m]))).sum() >= stop_after
                for m in plan.names):
            break
    res = {}
    for m in plan.names:
        null = np.concatenate(got[m])
        p, used = besag_clifford(theta[m], null, total, stop_after)
        fin = null[np.isfinite(null)]
        res[(*cell, m)] = dict(baseline_mean=float(fin.mean()) if len(fin) else math.nan, p_value=p,
                               p_min=1.0 / (1 + total), n_null=len(null))
    return res


def _bootstrap(plan, A, B, sa, sb, cells, counts, bar) -> dict:
    vals = {(a, b, m): np.full(len(counts), np.nan) for a, b in cells for m in plan.names}
    for i, c in enumerate(counts):
        ra = {k: _try(plan.resample, s, A[k], c) for k, s in sa.items()}
        rb = {k: _try(plan.resample, s, B[k], c) for k, s in sb.items()}
        for a, b in cells:
            if ra[a] is not None and rb[b] is not None:
                for m, v in (_try(plan.boot, ra[a], rb[b]) or {}).items():
                    vals[a, b, m][i] = v
        bar.update()
    return vals


def _try(fn, *args):
    """fn(*args), or None when a resample is degenerate (e.g. too few distinct rows for the measure)."""
    try:
        return fn(*args)
    except (ValueError, torch.linalg.LinAlgError, np.linalg.LinAlgError):
        return None


def check_stop_after(stop_after) -> int | None:
    """``stop_after``: None (no sequential stopping) or an int >= 1."""
    return None if stop_after is None else check_int(stop_after, "stop_after", 1)

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
  PWCCA's null computes its first ``min_draws`` draws in full, for the null mean (its standard error at the
  default 100, the null's sd / 10, was below 0.001 on the main job's layers, whose null sd is 0.006-0.008); a
  later draw whose largest canonical correlation lies below s0 cannot exceed it (PWCCA is a weighted mean of
  the correlations) and skips the rest of the computation, so the p-value is the same as from every draw in
  full.
- q-value: Benjamini & Hochberg (1995) over every p-value of the table (all layer pairs x measures):
  q_(i) = min_{j >= i} m p_(j) / j, capped at 1 (p sorted ascending, m tests).
- calibrated = (s0 - null_mean) / (1 - null_mean): 0 at chance, 1 at the measure's maximum 1 (Gröger et al.'s
  permutation-calibrated score in its mean form); NaN without a null.
- Interval: bootstrap over inputs (the same resampled rows on both sides, shared by the table): BCa (Efron
  1987) with the acceleration from a grouped jackknife (``n_groups`` groups of inputs left out in turn), the
  percentile interval, or the basic (reverse-percentile) interval [2 s0 - q_hi, 2 s0 - q_lo]. ``"auto"`` (the
  default) takes BCa for the CKA family and the basic interval for the CCA family (:data:`BASIC_METRICS`):
  sample canonical correlations are biased upwards (SVCCA at n = 150, d = 5: +0.04 over the population value),
  the bootstrap reproduces the bias, and BCa cannot move its bounds outside the range of the resamples, which
  all lie above the truth: in the coverage simulation of tests/similarity/test_statistics.py (100 draws, 400
  resamples) the nominal 95% intervals covered SVCCA's population value in 31% (BCa), 7% (percentile) and 91%
  (basic) of draws; linear CKA 94% / 93% / 92%; debiased CKA 95% / 94% / 92%. Whatever the method, an interval
  not containing s0 (nearly every resample on one side of it) is widened to s0 and ``ci_widened`` is True, so
  the point estimate lies in every interval.
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


BASIC_METRICS = frozenset({"cca", "cca_r2", "svcca", "pwcca"})
"""Measures whose ``ci_method="auto"`` interval is the basic bootstrap interval (see the module docstring)."""
CI_METHODS = ("auto", "bca", "percentile", "basic")


def basic_interval(theta: float, boots, ci: float = 0.95) -> tuple[float, float]:
    """The basic bootstrap interval [2 theta - q_hi, 2 theta - q_lo] (q: the (1 -+ ci) / 2 quantiles of the
    finite ``boots``): it carries the bootstrap's bias of the estimate over to the estimate's own bias."""
    lo, hi = percentile_interval(boots, ci)
    return 2 * theta - hi, 2 * theta - lo


def _method(method: str, metric: str) -> str:
    """The interval method ``method`` resolves to for ``metric`` ("auto": basic or BCa, by metric)."""
    if method == "auto":
        return "basic" if metric in BASIC_METRICS else "bca"
    return method


def interval(method: str, metric: str, theta: float, boots, jack, ci: float = 0.95) -> tuple[float, float]:
    """The ``ci`` interval of ``metric``'s estimate ``theta`` by ``method`` (one of :data:`CI_METHODS`)."""
    method = _method(method, metric)
    if method == "bca":
        return bca_interval(theta, boots, jack, ci)
    if method == "basic":
        return basic_interval(theta, boots, ci)
    return percentile_interval(boots, ci)


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
          n_bootstrap: int | None, ci: float = 0.95, ci_method: str = "auto", stop_after: int | None = 20,
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
            sb = {k: sa[k] if B is A and k in sa else plan.prepare(B[k]) for k in lb_used}  # one grid: once
            theta = {c: plan.values(sa[c[0]], sb[c[1]]) for c in cells}
            stats = {(a, b, m): {} for a, b in cells for m in plan.names}
            if n_permutations:
                for a, b in cells:
                    stats.update(_null(plan, sa[a], sb[b], (a, b), theta[a, b], perms, stop_after, min_draws))
                    bar.update()
            if n_bootstrap:
                # the jackknife only serves BCa's acceleration: a plan whose intervals are all basic or
                # percentile skips it
                need_jack = any(_method(ci_method, m) == "bca" for m in plan.names)
                boots = _bootstrap(plan, A, B, sa, sb, cells, torch.cat([counts, jack]) if need_jack else counts,
                                   bar)
                if not need_jack:
                    bar.update(len(jack))
                for (a, b, m), v in boots.items():
                    bt, jk = v[:len(counts)], v[len(counts):]
                    lo, hi = interval(ci_method, m, theta[a, b][m], bt, jk, ci)
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
    chunk = getattr(plan, "null_chunk", None) or max(1, min(100, int(4e6 // (n * n))))
    got: dict[str, list] = {m: [] for m in plan.names}
    done, exact = 0, total
    bounded = getattr(plan, "bounded", False)
    while done < total:
        step = perms[done:done + chunk]
        # a plan that can bound its measure (``plan.bounded``, PWCCA) computes its first min_draws draws in full,
        # for the null mean; later draws only decide whether they exceed the observed value (exact p-value)
        if bounded and done >= min_draws:
            exact = min(exact, done)
            vals = plan.null(sx, sy, step, below={m: theta[m] - 1e-12 * max(1.0, abs(theta[m]))
                                                   for m in plan.names})
            # a bound that settles few draws (a null near the observed value) costs more than it saves
            bounded = all((v == -np.inf).mean() >= 0.5 for v in vals.values())
        else:
            vals = plan.null(sx, sy, step)
        for m, v in vals.items():
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
        fin = null[:exact][np.isfinite(null[:exact])]  # a bounded plan's null mean: its fully computed draws
        res[(*cell, m)] = dict(baseline_mean=float(fin.mean()) if len(fin) else math.nan, p_value=p,
                               p_min=1.0 / (1 + total), n_null=len(null))
    return res


BOOT_CHUNK = 32
"""Resamples prepared at once by a plan with a batched bootstrap (memory: chunk x n x width per layer)."""


def _bootstrap(plan, A, B, sa, sb, cells, counts, bar) -> dict:
    if hasattr(plan, "boot_batch"):  # closed form in the counts: all resamples at once
        out = {}
        for a, b in cells:
            for m, v in plan.boot_batch(sa[a], sb[b], counts).items():
                out[a, b, m] = np.asarray(v, dtype=float)
        bar.update(len(counts))
        return out
    vals = {(a, b, m): np.full(len(counts), np.nan) for a, b in cells for m in plan.names}
    if hasattr(plan, "boot_prepare"):  # chunks of resamples at once, each layer prepared once per chunk
        start = 0
        for chunk in counts.split(BOOT_CHUNK):
            ra = {k: plan.boot_prepare(s, A[k], chunk) for k, s in sa.items()}
            rb = {k: ra[k] if B is A and k in ra else plan.boot_prepare(s, B[k], chunk) for k, s in sb.items()}
            for a, b in cells:
                for m, v in plan.boot_pair(ra[a], rb[b]).items():
                    vals[a, b, m][start:start + len(chunk)] = v
            start += len(chunk)
            bar.update(len(chunk))
        return vals
    for i, c in enumerate(counts):
        ra = {k: _try(plan.resample, s, A[k], c) for k, s in sa.items()}
        rb = {k: ra[k] if B is A and k in ra else _try(plan.resample, s, B[k], c) for k, s in sb.items()}
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


class Difference(NamedTuple):
    """An effect with its bootstrap interval and permutation p-value (see :func:`difference_test`)."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    n_a: int
    n_b: int
    p_min: float = math.nan
    """The smallest p-value the test can give with these group sizes (> 0.05: too few units to decide)."""


def _label_draws(n: int, k: int, limit: int, rng) -> np.ndarray:
    """Boolean (m, n) masks of k 'a' labels among n: every subset when there are at most ``limit``, else
    ``limit`` random ones (the observed labelling is not among them; the p-value adds it)."""
    if math.comb(n, k) <= limit:
        import itertools

        masks = np.zeros((math.comb(n, k), n), dtype=bool)
        for i, idx in enumerate(itertools.combinations(range(n), k)):
            masks[i, list(idx)] = True
        return masks
    return np.argsort(rng.random((limit, n)), axis=1) < k


def difference_test(a, b=None, *, ci: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> Difference:
    """mean(a) - mean(b) for two groups of values (e.g. a measure on trained and on untrained model pairs), or
    mean(a) for paired differences when ``b`` is None -> Difference(effect, ci_low, ci_high, p_value, n_a, n_b).

    Interval: percentile bootstrap (each group resampled on its own; ``n_resamples``). p-value (two-sided):
    the permutation test of the group labels (paired: of the signs of a), exact over every relabelling when
    there are at most ``n_resamples`` of them, else from ``n_resamples`` random ones, with
    p = (1 + #{|effect*| >= |effect|}) / (1 + draws) (exact: #{...} / draws). NaN values are dropped; fewer
    than 2 values in a group give NaNs. ``p_min``: the smallest attainable p-value (exact tests: 2 / the number
    of relabellings, as the mirror labelling ties; random draws: 1 / (1 + draws)). The units (pairs of models)
    are treated as independent; pairs that share a model are not, which makes the interval and p-value
    optimistic: say so where they are used."""
    rng = np.random.default_rng(seed)
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    if b is not None:
        b = np.asarray(b, dtype=float)
        b = b[np.isfinite(b)]
    nb = 0 if b is None else len(b)
    if len(a) < 2 or (b is not None and nb < 2):
        return Difference(math.nan, math.nan, math.nan, math.nan, len(a), nb)
    if b is None:
        n_labels = 2 ** len(a)
        effect = float(a.mean())
        boots = a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
        if 2 ** len(a) <= n_resamples:
            signs = ((np.arange(2 ** len(a))[:, None] >> np.arange(len(a))) & 1) * 2 - 1
            exact = True
        else:
            signs, exact = rng.choice([-1, 1], (n_resamples, len(a))), False
        null = (signs * a).mean(1)
    else:
        effect = float(a.mean() - b.mean())
        boots = (a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
                 - b[rng.integers(0, nb, (n_resamples, nb))].mean(1))
        pooled = np.concatenate([a, b])
        n_labels = math.comb(len(pooled), len(a))
        exact = math.comb(len(pooled), len(a)) <= n_resamples
        masks = _label_draws(len(pooled), len(a), n_resamples, rng)
        null = (masks @ pooled) / len(a) - (~masks @ pooled) / nb
    hits = int((np.abs(null) >= abs(effect) - 1e-12 * max(1.0, abs(effect))).sum())
    p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
    p_min = min(1.0, (2 if b is None or len(a) == nb else 1) / n_labels) if exact else 1 / (1 + len(null))
    return Difference(effect, float(lo), float(hi), float(p), len(a), nb, p_min)

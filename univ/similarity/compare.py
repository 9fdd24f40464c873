"""All-pairs comparison of two models' activations: tidy tables, permutation baselines, bootstrap CIs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .._checks import as_matrix, check_int, unknown_name_error
from ..registry import Registry
from .cca import cca, pwcca, svcca
from .cka import linear_cka, rbf_cka
from .geometry import mutual_knn, procrustes, rsa
from .resampling import plans_for
from .statistics import CI_METHODS, CellStats, bh_qvalues, check_stop_after, infer

Metric = Callable[..., float]

METRICS: Registry = Registry("metric", {
    "linear_cka": linear_cka,
    "linear_cka_debiased": lambda X, Y, device=None: linear_cka(X, Y, debiased=True, device=device),
    "rbf_cka": rbf_cka,
    "rbf_cka_debiased": lambda X, Y, device=None: rbf_cka(X, Y, debiased=True, device=device),
    "cca": lambda X, Y, device=None: cca(X, Y, device=device).mean,
    "cca_r2": lambda X, Y, device=None: cca(X, Y, device=device).r2,
    "svcca": svcca,
    "pwcca": pwcca,
    "procrustes": procrustes,
    "rsa": rsa,
    "mutual_knn": mutual_knn,
})
"""Registry: name -> ``f(X, Y, device=None) -> float``. A new measure is one function and one line:
``register_metric("rbf_cka_0.4", lambda X, Y, device=None: rbf_cka(X, Y, 0.4, device=device))``."""


def register_metric(name: str, fn: Metric | None = None, *, replace: bool = False):
    """Add a measure ``fn(X, Y, device=None) -> float`` under ``name`` (a decorator without ``fn``); it then
    works everywhere a metric name does (``compare``, ``get_metric``, analyses' ``--metrics``)."""
    return METRICS.register(name, fn, replace=replace)


COLUMNS = ["layer_a", "layer_b", "metric", "value", "baseline_mean", "p_value", "ci_low", "ci_high", "q_value",
           "calibrated", "p_min", "n_null", "ci_widened"]
"""compare()'s columns (the first eight as before; the statistics' definitions: :mod:`univ.similarity.statistics`)."""

_BUILTIN = dict(METRICS)  # the built-in definitions, which have cheap permutation and bootstrap paths


def get_metric(name: str) -> Metric:
    """The metric function registered as ``name`` (ValueError listing the valid names otherwise)."""
    if not isinstance(name, str):
        raise TypeError(f"metric: expected a metric name (str), got {type(name).__name__} {name!r}")
    return METRICS[name]


def _acts(acts: dict, name: str, device) -> dict[str, torch.Tensor]:
    if not isinstance(acts, dict) or not acts:
        raise ValueError(f"{name}: expected a non-empty dict {{layer_name: (n, d) array}}, "
                         f"got {type(acts).__name__}")
    return {k: as_matrix(v, f"{name}[{k!r}]", device=device) for k, v in acts.items()}


def compare(acts_a: dict, acts_b: dict, metrics: Iterable[str] = ("linear_cka",),
            baseline: str | None = None, n_permutations: int = 1000, ci: float | None = None,
            n_bootstrap: int = 1000, seed: int = 0, device=None, pairs: str = "all", *,
            ci_method: str = "auto", stop_after: int | None = 20, progress: bool | None = None) -> pd.DataFrame:
    """Compare every layer of A with every layer of B -> tidy DataFrame (one row per pair and metric).

    acts_a, acts_b: {layer_name: (n, d)} with the same n (the same inputs, in the same order).
    metrics: names in :data:`METRICS`.
    baseline="permutation": the metric on up to ``n_permutations`` shufflings of B's rows (which destroys the
        sample correspondence and keeps each side's geometry), computed from per-layer statistics and one
        cross term per draw (:mod:`univ.similarity.resampling`). ``p_value``: Besag-Clifford's sequential
        p-value (draws stop at the ``stop_after``-th null value >= value: p = stop_after / draws; otherwise
        (1 + #{null >= value}) / (1 + n_permutations); ``stop_after=None``: always all draws); ``p_min`` =
        1 / (1 + n_permutations), the smallest reachable p (< 0.001 by default); ``n_null``: draws made;
        ``baseline_mean``: their mean (PWCCA: of its first 100, see :mod:`univ.similarity.statistics`);
        ``calibrated`` = (value - baseline_mean) / (1 - baseline_mean);
        ``q_value``: Benjamini-Hochberg over every p-value of this table (all layer pairs and metrics).
    ci (e.g. 0.95): bootstrap interval over ``n_bootstrap`` resamplings of the inputs (the same rows on both
        sides), ``ci_method`` "auto" (BCa for the CKA family, the basic interval for the CCA family, whose
        sample values are biased upwards), "bca" (bias-corrected and accelerated, jackknife acceleration),
        "basic" or "percentile", in ``ci_low``, ``ci_high``; widened to contain ``value`` where the bootstrap lies
        almost wholly on one side of it (``ci_widened``: resampling duplicates rows, which inflates CKA/CCA-type
        values of weakly related layers): use the permutation p-value, not the interval, to decide whether two
        layers are related at all.
    pairs: "all" (every layer_a x layer_b) or "matching" (only layers with the same name).
    progress: a tqdm bar over the statistics (None: only on a terminal).
    Columns: :data:`COLUMNS` (NaN where not requested); ``df.attrs`` names the baseline and the q-value family.
    Permutations and resamples depend only on (seed, n) and are shared by every cell: any subset of the table
    reproduces the same numbers. Definitions: :mod:`univ.similarity.statistics`.
    """
    fns, opts = _options(metrics, baseline, ci, n_permutations, n_bootstrap, ci_method, stop_after, progress, seed)
    if pairs not in ("all", "matching"):
        raise ValueError(f"pairs: unknown value {pairs!r}; choose 'all' or 'matching'")
    A, B = _acts(acts_a, "acts_a", device), _acts(acts_b, "acts_b", device)
    n_a = {t.shape[0] for t in A.values()} | {t.shape[0] for t in B.values()}
    if len(n_a) > 1:
        sizes = {f"acts_a[{k!r}]": t.shape[0] for k, t in A.items()}
        sizes.update({f"acts_b[{k!r}]": t.shape[0] for k, t in B.items()})
        raise ValueError(f"acts_a and acts_b must all have the same number of samples (rows): {sizes}")
    cells = [(la, lb) for la in A for lb in B if pairs == "all" or la == lb]
    rows = _table(A, B, cells, set(cells), fns, opts, device,
                  lambda la, lb: f"acts_a[{la!r}] (X) and acts_b[{lb!r}] (Y)")
    df = pd.DataFrame([dict(layer_a=la, layer_b=lb, **r) for (la, lb), r in rows], columns=COLUMNS)
    return _finish(df, opts)


def compare_grid(acts: dict, model_pairs, metrics: Iterable[str] = ("linear_cka",), *, statistics=None,
                 layers: dict | None = None, baseline: str | None = "permutation", n_permutations: int = 1000,
                 ci: float | None = 0.95, n_bootstrap: int = 1000, seed: int = 0, device=None,
                 ci_method: str = "auto", stop_after: int | None = 20, progress: bool | None = None) -> pd.DataFrame:
    """:func:`compare` over many models at once: every layer pair of every model pair -> one tidy table.

    acts: {model: {layer: (n, d)}}, all on the same n inputs; model_pairs: [(model_a, model_b)];
    statistics: the pairs that get the permutation null and the interval (None: all pairs; e.g. only trained
    pairs); layers: {model: [layer, ...]} to compare a subset (default: every layer of acts[model]).
    The other options are :func:`compare`'s. Columns: ``model_a``, ``model_b`` and :data:`COLUMNS`; ``q_value``
    is Benjamini-Hochberg over every p-value of the whole table.

    The numbers are those of :func:`compare` on each pair (the permutations and resamples depend only on
    (seed, n)), but each layer's per-draw statistics (its bootstrap resample's bases, Grams, moments) are
    computed once per draw for all the pairs it takes part in, instead of once per pair.
    """
    fns, opts = _options(metrics, baseline, ci, n_permutations, n_bootstrap, ci_method, stop_after, progress, seed)
    if not isinstance(acts, dict) or not acts:
        raise ValueError(f"acts: expected a non-empty dict {{model: {{layer: (n, d) array}}}}, got "
                         f"{type(acts).__name__}")
    model_pairs = [tuple(p) for p in model_pairs]
    for p in model_pairs:
        if len(p) != 2 or any(m not in acts for m in p):
            bad = [m for m in p if m not in acts] if len(p) == 2 else p
            raise ValueError(f"model_pairs: {p!r} is not a pair of models in acts ({bad!r} missing); acts has "
                             f"{sorted(acts)}")
    layers = layers or {}
    used = list(dict.fromkeys(m for p in model_pairs for m in p))
    F = {}
    for m in used:
        names = layers.get(m, list(acts[m]))
        for name in names:
            if name not in acts[m]:
                raise unknown_name_error(f"layers[{m!r}]", name, list(acts[m]))
        F.update({(m, k): v for k, v in _acts({k: acts[m][k] for k in names}, f"acts[{m!r}]", device).items()})
    sizes = {f"acts[{m!r}][{k!r}]": t.shape[0] for (m, k), t in F.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"acts: every layer must have the same number of samples (rows): {sizes}")
    by_model = {m: [k for k in F if k[0] == m] for m in used}
    cells = [(ka, kb) for a, b in model_pairs for ka in by_model[a] for kb in by_model[b]]
    stat_pairs = set(model_pairs) if statistics is None else {tuple(p) for p in statistics}
    with_stats = {(ka, kb) for ka, kb in cells if (ka[0], kb[0]) in stat_pairs}
    rows = _table(F, F, cells, with_stats, fns, opts, device,
                  lambda ka, kb: f"acts[{ka[0]!r}][{ka[1]!r}] (X) and acts[{kb[0]!r}][{kb[1]!r}] (Y)")
    df = pd.DataFrame([dict(model_a=ka[0], model_b=kb[0], layer_a=ka[1], layer_b=kb[1], **r) for (ka, kb), r in rows],
                      columns=["model_a", "model_b", *COLUMNS])
    return _finish(df, opts)


def _options(metrics, baseline, ci, n_permutations, n_bootstrap, ci_method, stop_after, progress, seed):
    """The checked metric functions and statistics options shared by compare and compare_grid."""
    fns = {m: get_metric(m) for m in ([metrics] if isinstance(metrics, str) else metrics)}
    if not fns:
        raise ValueError("metrics: give at least one metric name")
    if baseline not in (None, "permutation"):
        raise ValueError(f"baseline: unknown value {baseline!r}; choose None or 'permutation'")
    if ci is not None and not (isinstance(ci, (float, np.floating)) and 0 < ci < 1):
        raise ValueError(f"ci: must be a confidence level in (0, 1) such as 0.95, got {ci!r}")
    if baseline:
        n_permutations = check_int(n_permutations, "n_permutations", 1)
    if ci is not None:
        n_bootstrap = check_int(n_bootstrap, "n_bootstrap", 1)
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method: unknown value {ci_method!r}; choose one of {list(CI_METHODS)}")
    stop_after = check_stop_after(stop_after)
    if progress not in (None, True, False):
        raise TypeError(f"progress: expected None, True or False, got {progress!r}")
    return fns, dict(baseline=baseline, ci=ci, n_permutations=n_permutations, n_bootstrap=n_bootstrap,
                     ci_method=ci_method, stop_after=stop_after, progress=progress, seed=seed)


def _table(A, B, cells, with_stats, fns, opts, device, where) -> list:
    """[(cell, {metric, value, statistics...})] for every cell and metric (cells in with_stats get statistics)."""
    values = {}
    for la, lb in cells:
        for mname, fn in fns.items():
            try:
                values[la, lb, mname] = fn(A[la], B[lb], device=device)
            except ValueError as e:  # say which layers the metric's X and Y were
                raise ValueError(f"{mname} of {where(la, lb)}: {e}") from None
    stats = {}
    stat_cells = [c for c in cells if c in with_stats]
    if stat_cells and (opts["baseline"] or opts["ci"] is not None):
        stats = infer(A, B, stat_cells, plans_for(fns, _BUILTIN, device), values,
                      n_permutations=opts["n_permutations"] if opts["baseline"] else None,
                      n_bootstrap=opts["n_bootstrap"] if opts["ci"] is not None else None, ci=opts["ci"] or 0.95,
                      ci_method=opts["ci_method"], stop_after=opts["stop_after"], seed=opts["seed"],
                      progress=opts["progress"])
    return [((la, lb), dict(metric=m, value=values[la, lb, m], **stats.get((la, lb, m), CellStats())._asdict()))
            for la, lb in cells for m in fns]


def _finish(df: pd.DataFrame, opts: dict) -> pd.DataFrame:
    df["q_value"] = bh_qvalues(df["p_value"].to_numpy(dtype=float))
    n_perm, stop, ci = opts["n_permutations"], opts["stop_after"], opts["ci"]
    df.attrs.update(
        baseline=(f"permutation of acts_b's rows: up to {n_perm} draws, Besag-Clifford stop after "
                  f"{stop} exceedances, p_min = 1/{n_perm + 1}") if opts["baseline"] else "none",
        q_family=f"Benjamini-Hochberg over the {int(df['p_value'].notna().sum())} p-values of this table",
        interval=(f"{opts['ci_method']} bootstrap, {opts['n_bootstrap']} resamples of the inputs, level {ci}"
                  if ci else "none"))
    return df


def grid(df: pd.DataFrame, metric: str, value: str = "value") -> pd.DataFrame:
    """compare()'s table as a layer_a x layer_b matrix of ``value`` for one metric (layer order kept)."""
    if not isinstance(df, pd.DataFrame) or not {"layer_a", "layer_b", "metric", value} <= set(df.columns):
        raise ValueError(f"df: expected compare()'s DataFrame with columns layer_a, layer_b, metric and "
                         f"{value!r}, got {type(df).__name__}")
    sub = df[df["metric"] == metric]
    if sub.empty:
        raise unknown_name_error("metric", metric, sorted(df["metric"].unique()))
    mat = sub.pivot_table(index="layer_a", columns="layer_b", values=value, aggfunc="mean", sort=False)
    return mat.reindex(index=pd.unique(sub["layer_a"]), columns=pd.unique(sub["layer_b"]))

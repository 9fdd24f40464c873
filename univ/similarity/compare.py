"""All-pairs comparison of two models' activations: tidy tables, permutation baselines, bootstrap CIs."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .._checks import as_matrix, check_int, unknown_name_error
from ..registry import Registry
from ..utils import stable_hash
from .cca import cca, pwcca, svcca
from .cka import linear_cka, rbf_cka
from .geometry import mutual_knn, procrustes, rsa

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

COLUMNS = ["layer_a", "layer_b", "metric", "value", "baseline_mean", "p_value", "ci_low", "ci_high"]


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
            baseline: str | None = None, n_permutations: int = 100, ci: float | None = None,
            n_bootstrap: int = 200, seed: int = 0, device=None, pairs: str = "all") -> pd.DataFrame:
    """Compare every layer of A with every layer of B -> tidy DataFrame (one row per pair and metric).

    acts_a, acts_b: {layer_name: (n, d)} with the same n (the same inputs, in the same order).
    metrics: names in :data:`METRICS`.
    baseline="permutation": the metric on ``n_permutations`` shufflings of B's rows (which destroys
        the sample correspondence and keeps each side's geometry): ``baseline_mean`` is their mean and
        ``p_value`` = (1 + #{permuted >= value}) / (1 + n_permutations).
    ci (e.g. 0.95): percentile bootstrap interval over ``n_bootstrap`` resamplings of the samples
        (the same rows on both sides) in ``ci_low``, ``ci_high``. Caveat: resampling duplicates rows,
        which inflates every CKA/CCA-type value on weakly related data (the bootstrap centres near the
        biased full-sample statistic plus its own bias), so for near-independent layers the interval
        can lie above ``value``; read it as the spread of the estimate, and use the permutation
        baseline, not the CI, to decide whether two layers are related at all.
    pairs: "all" (every layer_a x layer_b) or "matching" (only layers with the same name).
    Columns: layer_a, layer_b, metric, value, baseline_mean, p_value, ci_low, ci_high (NaN where not
    requested). Seeded per (seed, layer names, metric): any subset of the table reproduces the same numbers.
    """
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
    if pairs not in ("all", "matching"):
        raise ValueError(f"pairs: unknown value {pairs!r}; choose 'all' or 'matching'")
    A, B = _acts(acts_a, "acts_a", device), _acts(acts_b, "acts_b", device)
    n_a = {t.shape[0] for t in A.values()} | {t.shape[0] for t in B.values()}
    if len(n_a) > 1:
        sizes = {f"acts_a[{k!r}]": t.shape[0] for k, t in A.items()}
        sizes.update({f"acts_b[{k!r}]": t.shape[0] for k, t in B.items()})
        raise ValueError(f"acts_a and acts_b must all have the same number of samples (rows): {sizes}")
    n = n_a.pop()
    rows = []
    for la, X in A.items():
        for lb, Y in B.items():
            if pairs == "matching" and la != lb:
                continue
            for mname, fn in fns.items():
                try:
                    value = fn(X, Y, device=device)
                except ValueError as e:  # say which layers the metric's X and Y were
                    raise ValueError(f"{mname} of acts_a[{la!r}] (X) and acts_b[{lb!r}] (Y): {e}") from None
                row = dict(layer_a=la, layer_b=lb, metric=mname, value=value, baseline_mean=np.nan,
                           p_value=np.nan, ci_low=np.nan, ci_high=np.nan)
                gen = torch.Generator().manual_seed(int(stable_hash([seed, la, lb, mname]), 16))
                if baseline:
                    perm = np.array([fn(X, Y[torch.randperm(n, generator=gen).to(Y.device)], device=device)
                                     for _ in range(n_permutations)])
                    row["baseline_mean"] = float(perm.mean())
                    row["p_value"] = float((1 + np.sum(perm >= value)) / (1 + n_permutations))
                if ci is not None:
                    boots = []
                    for _ in range(n_bootstrap):
                        idx = torch.randint(0, n, (n,), generator=gen).to(X.device)
                        boots.append(fn(X[idx], Y[idx], device=device))
                    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2])
                    row["ci_low"], row["ci_high"] = float(lo), float(hi)
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


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

"""The report of ``univ compare``: the models table, the summary, the sentences read from the numbers and the
layer x layer heatmaps (one figure per model pair and metric, with its baselines beside it)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

import univ
from univ.report import Report, heatmap
from univ.report import panels as panel_grid

STATS = ("models", "same model")
"""Pair categories that get the permutation baseline, the bootstrap interval and a figure (the others are
their baselines)."""


def models_table(loaded) -> pd.DataFrame:
    """One row per compared network (models, then their untrained twins)."""
    rows = []
    for e in loaded.entries + loaded.twins:
        tok = getattr(e.model, "tokenizer", None)
        rows.append({"model": e.id, "spec": e.spec, "untrained": not e.trained,
                     "init_seed": e.seed if e.seed is not None else np.nan,
                     "n_params": univ.models.n_params(e.model), "n_layers": len(e.layers),
                     "layers": ", ".join(e.layers),
                     "tokenizer": getattr(tok, "name_or_path", None) or (type(tok).__name__ if tok else "")})
    return pd.DataFrame(rows)


def summary(sim: pd.DataFrame) -> pd.DataFrame:
    """Per compared pair and metric: ``best_match`` (mean over A's layers of its best-matching layer of B),
    ``mean`` (over all layer pairs), ``last_layers`` (A's last layer vs B's last layer) and the largest
    permutation p-value among the best matches (NaN without a permutation baseline)."""
    rows = []
    for (cat, a, b, metric), g in sim.groupby(["category", "model_a", "model_b", "metric"], sort=False):
        best = g.loc[g.groupby("layer_a", sort=False)["value"].idxmax()]
        last = g[(g.layer_a == g.layer_a.iloc[-1]) & (g.layer_b == g.layer_b.iloc[-1])]
        rows.append({"category": cat, "model_a": a, "model_b": b, "metric": metric, "n_layer_pairs": len(g),
                     "best_match": best["value"].mean(), "mean": g["value"].mean(),
                     "last_layers": float(last["value"].iloc[0]), "best_match_max_p": best["p_value"].max()})
    return pd.DataFrame(rows)


def _value(summ: pd.DataFrame, a: str, b: str, metric: str) -> float | None:
    row = summ[(summ.model_a == a) & (summ.model_b == b) & (summ.metric == metric)]
    return None if row.empty else float(row["best_match"].iloc[0])


def summary_sentence(summ: pd.DataFrame, loaded) -> str:
    twin = {e.id: t.id for e, t in zip(loaded.entries, loaded.twins)}
    parts = []
    for r in summ[summ.category.isin(STATS)].itertuples():
        bits = []
        tw = _value(summ, twin.get(r.model_a, ""), twin.get(r.model_b, ""), r.metric)
        if tw is not None:
            bits.append(f"untrained twins {tw:.2f}")
        for m in dict.fromkeys((r.model_a, r.model_b)):
            own = _value(summ, m, twin.get(m, ""), r.metric)
            if own is not None:
                bits.append(f"{m} vs its twin {own:.2f}")
        vs = "itself" if r.model_a == r.model_b else r.model_b
        parts.append(f"{r.model_a} vs {vs}, {r.metric}: {r.best_match:.2f}" + (f" ({'; '.join(bits)})" if bits else ""))
    return ("Per compared pair and metric: `best_match`, the mean over A's layers of its best-matching layer of B; "
            "`mean` over all layer pairs; `last_layers`, A's last layer against B's; `best_match_max_p`, the largest "
            "permutation p-value among the best matches. The rows of untrained twins are the random-init baseline "
            "the model rows are read against. Best matches in this run: " + "; ".join(parts) + ".")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def pair_figure(sim: pd.DataFrame, panels: list[tuple[str, str]], metric: str):
    """One heatmap per (model_a, model_b) in ``panels`` (rows: A's layers, columns: B's), side by side."""
    shown = [(a, b) for a, b in panels if ((sim.model_a == a) & (sim.model_b == b)).any()]
    fig, axes = panel_grid(len(shown), 2, (4.6, 3.8))
    for ax, (a, b) in zip(axes, shown):
        sub = sim[(sim.model_a == a) & (sim.model_b == b)]
        heatmap(univ.similarity.grid(sub, metric), title=f"{a} vs {b}", ax=ax, vmin=min(0.0, sub.value.min()))
        ax.set_xlabel(b, fontsize=7)
        ax.set_ylabel(a, fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{metric}: layer x layer", fontsize=10)
    fig.tight_layout()
    return fig


def report(cfg, loaded, sim: pd.DataFrame, cap, compared) -> Report:
    """The Report of a compare run (``compared``: the (A, B, category) pairs in ``sim``)."""
    rep = Report("compare", summary="summary")
    models = models_table(loaded)
    where = (f"through the on-disk activation store ({cap.rows} rows x the summed widths x 4 bytes = "
             f"{cap.bytes / 2**20:.0f} MiB > max_memory_mb {cfg.max_memory_mb}), compared in one streamed pass "
             "per pair (exact values; no permutation baseline or bootstrap interval there)" if cap.on_disk else
             f"in memory ({cap.bytes / 2**20:.1f} MiB <= max_memory_mb {cfg.max_memory_mb})")
    stats = []
    if not cap.on_disk and cfg.n_permutations:
        stats.append(f"`baseline_mean`/`p_value`: the metric with one side's rows shuffled ({cfg.n_permutations} "
                     "permutations)")
    if not cap.on_disk and cfg.n_bootstrap:
        stats.append(f"`ci_low`/`ci_high`: 95% bootstrap interval over rows ({cfg.n_bootstrap} resamples)")
    twins = (f"Untrained twins (same architecture, fresh init seeded by seed + position: "
             f"{', '.join(str(t.seed) for t in loaded.twins)}) are compared with each other and with their own "
             "model: the random-init baseline." if loaded.twins else "No untrained twins (untrained=False).")
    rep.add_text("Setup", f"Models: {', '.join(f'{e.id} ({e.spec})' for e in loaded.entries)}. Data: "
                 f"{loaded.data_text} Activations of {cap.rows} rows were captured {where}. {twins}")
    rep.add_table("models", models, "The compared networks (untrained twins included), their parameter counts, "
                  "the layers compared and the tokenizer.")
    summ = summary(sim)
    rep.add_table("summary", summ, summary_sentence(summ, loaded))
    rep.add_table("similarity", sim, "Every layer pair of every compared pair, one row per metric (tidy). "
                  "`category`: models, same model (a model with itself: 1 on the diagonal), untrained twins, model "
                  "vs its untrained twin. " + ("; ".join(stats) + ", computed for the model rows (the others are "
                                               "baselines themselves)." if stats else
                                               "No permutation baseline or bootstrap interval in this run."),
                  inline=False)
    twin_of = {e.id: t.id for e, t in zip(loaded.entries, loaded.twins)}
    for a, b, category in compared:
        if category not in STATS:
            continue
        panels = [(a.id, b.id), (twin_of.get(a.id), twin_of.get(b.id)), (a.id, twin_of.get(a.id))]
        if b.id != a.id:
            panels.append((b.id, twin_of.get(b.id)))
        for metric in cfg.metrics:
            name = f"heatmap_{metric}_{_slug(a.id)}_vs_{_slug(b.id)}"
            rep.add_figure(name, pair_figure(sim, panels, metric),
                           f"{metric}, layer x layer: {a.id} vs {'itself' if a.id == b.id else b.id} (rows: "
                           f"{a.id}'s layers), beside the untrained baselines (twins against each other, each model "
                           "against its own twin).")
    rep.meta["data"] = loaded.data_meta
    rep.meta["capture"] = {"on_disk": cap.on_disk, "rows": cap.rows, "bytes": cap.bytes, "reduce": loaded.reduce}
    return rep

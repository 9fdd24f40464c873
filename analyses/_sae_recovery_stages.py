"""The work of ``univ run sae_recovery``; its settings and entry point are in
``analyses/sae_recovery.py``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd

import univ.sae as S
from univ.data import sparse_coding
from univ.report import Report

if TYPE_CHECKING:
    from .sae_recovery import Config


def make_sae(kind: str, d: int, width: int, active: int, seed: int) -> S.SAE:
    """An SAE of ``kind`` with default hyperparameters; kinds with a ``k`` get the data's mean active count."""
    cls = S.SAE_KINDS[kind]
    return cls(d, width, seed=seed, **({"k": active} if "k" in cls.hparam_names() else {}))


def run(cfg: Config) -> Report:
    """Train every kind at every sparsity level; one table row per (kind, level), plus a figure."""
    rows = []
    for a in cfg.active:
        ds = sparse_coding(cfg.n_samples, cfg.d, cfg.n_atoms, k=(a - 1, a + 1), noise=cfg.noise,
                           seed=cfg.seed)
        M = ds.extra["dictionary"]
        for kind in cfg.kinds:
            t0 = time.perf_counter()
            sae = make_sae(kind, cfg.d, cfg.width, a, cfg.seed).fit(ds.x_train, progress=False)
            secs = time.perf_counter() - t0
            mmcs, rec = S.dictionary_recovery(sae, M, cfg.threshold)
            m = S.evaluate(sae, ds.x_test)
            rows.append({"kind": kind, "active": f"{a - 1}-{a + 1}", "mmcs": mmcs, "recovered": rec,
                         "l0": m.l0, "fvu": m.fvu, "dead": m.dead_fraction, "steps": sae.n_steps_,
                         "converged": sae.converged_, "seconds": secs})
    table = pd.DataFrame(rows)
    report = Report("sae_recovery")
    report.add_table(
        "recovery", table,
        f"SAEs (width {cfg.width}) on sparse-coding data ({cfg.d} dims, {cfg.n_atoms} atoms, "
        f"{cfg.n_samples} samples), trained with fit's defaults. mmcs: mean over true atoms of the best "
        f"|cosine| with a decoder row; recovered: fraction of atoms with best cosine >= {cfg.threshold}; "
        "l0, fvu, dead: on the held-out 20%. TopK/BatchTopK use k = the mean number of active atoms.")
    report.add_text("acceptance", _acceptance(table))
    report.add_figure("recovery_bars", _figure(table, cfg.threshold),
                      "MMCS and fraction of atoms recovered per SAE kind and sparsity level.")
    report.summary = "recovery"
    return report


def _acceptance(table: pd.DataFrame) -> str:
    lines = []
    for r in table.itertuples():
        if r.kind in ("topk", "relu"):
            ok = r.mmcs >= 0.95 and r.recovered >= 0.9
            lines.append(f"- {r.kind}, {r.active} active: MMCS {r.mmcs:.3f}, recovered {r.recovered:.1%} "
                         f"-> {'meets' if ok else 'MISSES'} the target (MMCS >= 0.95, >= 90% recovered)")
    return "\n".join(lines) or "No TopK or ReLU SAE in this run."


def _figure(table: pd.DataFrame, threshold: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, col, title in ((axes[0], "mmcs", "MMCS"), (axes[1], "recovered", f"recovered (cos >= {threshold})")):
        sns.barplot(data=table, x="kind", y=col, hue="active", ax=ax)
        ax.axhline(0.95 if col == "mmcs" else 0.9, color="k", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


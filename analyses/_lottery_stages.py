"""The work of ``univ run lottery``; its settings and entry point are in
``analyses/lottery.py``."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment
from tqdm.auto import tqdm

import univ
from univ.models import build_model
from univ.report import Report
from univ.repro import lottery as pruning
from univ.train import TrainConfig

if TYPE_CHECKING:
    from .lottery import Config

KINDS = ("ticket", "ticket_late", "reinit", "random")


def _data(name: str):
    return univ.data.digits() if name == "digits" else univ.data.mnist1d()


def _acts(model, masks, state, x, layers) -> dict[str, torch.Tensor]:
    pruning.rewind(model, state, masks)
    return univ.capture(model, x, names=layers, batch_size=1024)


def _run_seed(name, data, val, cfg: Config, seed: int, layers, x_sim):
    """All trained networks of one seed: {(kind, round): (masks, state, run)} and their activations."""
    mk = dict(input_shape=data.input_shape, widths=list(cfg.widths), n_classes=data.n_classes)
    make = lambda s=seed: build_model("mlp", seed=s, **mk)  # noqa: E731
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
    rates = pruning.layer_rates(make(), cfg.hidden_rate, cfg.output_rate)
    init = pruning.snapshot(make())
    common = dict(rates=rates, val=val, eval_every=cfg.eval_every)
    nets = {}
    if cfg.late_rewind:
        late, late_state = pruning.iterative_magnitude_pruning(make, data, tcfg, cfg.n_rounds,
                                                              rewind_step=cfg.late_rewind, **common)
        nets.update({("ticket_late", r.round): r for r in late})
        dense = late[0]
    else:
        dense = None
    rounds, _ = pruning.iterative_magnitude_pruning(make, data, tcfg, cfg.n_rounds, dense=dense,
                                                    rewind_state=init if dense else None, **common)
    nets.update({("ticket", r.round): r for r in rounds})
    model = make()
    for r in rounds[1:]:
        for kind in ("reinit", "random"):
            if kind == "reinit":
                masks, start = r.masks, pruning.snapshot(make(seed + 1000))
            else:
                masks, start = pruning.random_masks(r.masks, seed=seed * 100 + r.round), init
            pruning.rewind(model, start, masks)
            run = pruning.train_masked(model, data, tcfg, masks, val, cfg.eval_every)
            nets[kind, r.round] = pruning.PruneRound(r.round, masks, pruning.snapshot(run.model), run, r.remaining)
    for kind in KINDS:  # round 0 (the dense parent) is shared by every kind
        nets.setdefault((kind, 0), rounds[0])
    acts = {key: _acts(model, p.masks, p.state, x_sim, layers) for key, p in nets.items()}
    return nets, acts


def _unit_perm(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Permutation of b's units that best matches a's (Hungarian on activation correlations)."""
    za = (a - a.mean(0)) / a.std(0).clamp_min(1e-8)
    zb = (b - b.mean(0)) / b.std(0).clamp_min(1e-8)
    corr = (za.T @ zb / len(a)).numpy()
    _, col = linear_sum_assignment(-np.nan_to_num(corr))
    return col


def _aligned_masks(masks: dict, perms: list[np.ndarray]) -> dict:
    """Masks of a 2-hidden-layer MLP with hidden units reordered by ``perms`` (one per hidden layer)."""
    names = list(masks)
    out = {}
    for i, n in enumerate(names):
        m = masks[n]
        if i < len(perms):
            m = m[torch.as_tensor(perms[i])]
        if i > 0:
            m = m[:, torch.as_tensor(perms[i - 1])]
        out[n] = m
    return out


def _similarity_rows(ds, nets_by_seed, acts_by_seed, layers, n_rounds):
    rows, mask_rows = [], []
    seeds = sorted(nets_by_seed)
    for r in range(n_rounds + 1):
        remaining = nets_by_seed[seeds[0]]["ticket", r].remaining
        pairs = []  # (comparison, label, acts_a, acts_b)
        for kind in KINDS:
            for s1, s2 in itertools.combinations(seeds, 2):
                if (kind, r) in acts_by_seed[s1]:
                    pairs.append((f"{kind} vs {kind} (seeds)", f"{s1}-{s2}", acts_by_seed[s1][kind, r],
                                  acts_by_seed[s2][kind, r]))
            for s in seeds:
                if r > 0 and (kind, r) in acts_by_seed[s]:
                    pairs.append((f"{kind} vs dense parent", str(s), acts_by_seed[s][kind, r],
                                  acts_by_seed[s]["ticket", 0]))
        for comp, label, A, B in pairs:
            for layer in layers:
                for metric, fn in (("linear_cka", univ.similarity.linear_cka), ("svcca", univ.similarity.svcca)):
                    rows.append({"dataset": ds, "round": r, "remaining": remaining, "comparison": comp,
                                 "pair": label, "layer": layer, "metric": metric, "value": fn(A[layer], B[layer])})
        if r == 0:
            continue
        for kind in ("ticket", "ticket_late", "random"):
            if (kind, r) not in nets_by_seed[seeds[0]]:
                continue
            for s1, s2 in itertools.combinations(seeds, 2):
                ma, mb = nets_by_seed[s1][kind, r].masks, nets_by_seed[s2][kind, r].masks
                perms = [_unit_perm(acts_by_seed[s1][kind, r][la], acts_by_seed[s2][kind, r][la])
                         for la in layers]
                raw, ali = pruning.mask_jaccard(ma, mb), pruning.mask_jaccard(ma, _aligned_masks(mb, perms))
                p = {n: float(m.float().mean()) for n, m in ma.items()}
                for n in list(ma) + ["all"]:
                    q = p.get(n, remaining)
                    mask_rows.append({"dataset": ds, "round": r, "remaining": remaining, "kind": kind,
                                      "pair": f"{s1}-{s2}", "layer": n, "jaccard": raw[n], "jaccard_aligned": ali[n],
                                      "chance": q * q / (2 * q - q * q)})
        for s in seeds:  # the same seed's two tickets: does the rewind point change the mask?
            if ("ticket_late", r) in nets_by_seed[s]:
                j = pruning.mask_jaccard(nets_by_seed[s]["ticket", r].masks, nets_by_seed[s]["ticket_late", r].masks)
                mask_rows.append({"dataset": ds, "round": r, "remaining": remaining, "kind": "ticket vs ticket_late",
                                  "pair": str(s), "layer": "all", "jaccard": j["all"], "jaccard_aligned": j["all"],
                                  "chance": remaining**2 / (2 * remaining - remaining**2)})
    return rows, mask_rows


def _mean_sd(df: pd.DataFrame, by: list[str], col: str) -> pd.DataFrame:
    g = df.groupby(by, sort=False)[col]
    return g.agg(mean="mean", sd="std", n="count").reset_index()


def _figures(report: Report, acc: pd.DataFrame, sim: pd.DataFrame, ds: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    a = acc[acc.dataset == ds]
    ticks = sorted(100 * a.remaining.unique(), reverse=True)[::2]
    for kind, g in a.groupby("kind", sort=False):
        s = g.groupby("remaining").agg(m=("test_acc_at_best", "mean"), sd=("test_acc_at_best", "std"),
                                       it=("best_step", "mean"), itsd=("best_step", "std")).reset_index()
        axes[0].errorbar(100 * s.remaining, s.m, yerr=s.sd, label=kind, marker="o", capsize=3)
        axes[1].errorbar(100 * s.remaining, s.it, yerr=s.itsd, label=kind, marker="o", capsize=3)
    for ax, yl in ((axes[0], "test accuracy at early stop"), (axes[1], "early-stopping iteration"),
                   (axes[2], "")):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("% weights remaining")
        ax.set_ylabel(yl)
    s = sim[(sim.dataset == ds) & (sim.metric == "linear_cka") & (sim.layer == sim.layer.iloc[-1])]
    for comp, g in s.groupby("comparison", sort=False):
        t = g.groupby("remaining")["value"].agg(["mean", "std"]).reset_index()
        axes[2].errorbar(100 * t.remaining, t["mean"], yerr=t["std"], label=comp, marker=".", capsize=2)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    axes[2].set_ylabel(f"linear CKA ({s.layer.iloc[0] if len(s) else ''})")
    axes[2].legend(fontsize=6)
    fig.suptitle(f"lottery tickets on {ds}")
    fig.tight_layout()
    report.add_figure(f"lottery_{ds}", fig, "Left: accuracy at the early-stopping iteration; middle: that "
                      "iteration; right: linear CKA of the last hidden layer (mean ± sd over pairs).")


def run(cfg: Config) -> Report:
    layers = [f"act{i}" for i in range(1, len(cfg.widths) + 1)]
    acc_rows, sim_rows, mask_rows = [], [], []
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    for ds in cfg.datasets:
        full = _data(ds)
        data, val = pruning.split_validation(full, cfg.n_val, seed=cfg.seed)
        x_sim = data.x_test
        nets_by_seed, acts_by_seed = {}, {}
        for s in tqdm(seeds, desc=f"lottery {ds}"):
            nets_by_seed[s], acts_by_seed[s] = _run_seed(ds, data, val, cfg, s, layers, x_sim)
            for (kind, r), p in nets_by_seed[s].items():
                per_layer = {f"remaining_{k.split('.')[0]}": v for k, v in pruning.layer_remaining(p.masks).items()}
                acc_rows.append({"dataset": ds, "kind": kind, "round": r, "remaining": p.remaining, "seed": s,
                                 "test_acc_final": p.run.metrics["test_acc"],
                                 "test_acc_at_best": p.run.test_acc_at_best, "best_step": p.run.best_step,
                                 "best_val_loss": p.run.best_val_loss, **per_layer})
        rows, mrows = _similarity_rows(ds, nets_by_seed, acts_by_seed, layers, cfg.n_rounds)
        sim_rows += rows
        mask_rows += mrows
    acc = pd.DataFrame(acc_rows).sort_values(["dataset", "kind", "round", "seed"]).reset_index(drop=True)
    sim = pd.DataFrame(sim_rows)
    masks = pd.DataFrame(mask_rows)
    report = Report("lottery")
    acc_sum = acc.groupby(["dataset", "kind", "round", "remaining"], sort=False).agg(
        acc_mean=("test_acc_at_best", "mean"), acc_sd=("test_acc_at_best", "std"),
        final_acc_mean=("test_acc_final", "mean"), best_step_mean=("best_step", "mean"),
        best_step_sd=("best_step", "std"), n=("seed", "count")).reset_index()
    sim_sum = sim.groupby(["dataset", "round", "remaining", "layer", "metric", "comparison"], sort=False)[
        "value"].agg(mean="mean", sd="std", min="min", max="max", n="count").reset_index()
    mask_sum = masks.groupby(["dataset", "round", "remaining", "kind", "layer"], sort=False).agg(
        jaccard=("jaccard", "mean"), jaccard_sd=("jaccard", "std"), jaccard_aligned=("jaccard_aligned", "mean"),
        aligned_sd=("jaccard_aligned", "std"), chance=("chance", "mean")).reset_index()
    headline = _headline(acc_sum, sim_sum, layers[-1])
    report.add_table("summary", headline, "Per sparsity: accuracy at the early-stopping iteration (mean ± sd over "
                     "seeds) and linear CKA of the last hidden layer between networks of different seeds "
                     "(mean ± sd over seed pairs), for tickets (rewound to init) and randomly pruned networks.")
    report.add_text("notes", _notes(headline))
    report.add_table("accuracy", acc_sum, "Test accuracy at the early-stopping iteration (minimum validation "
                     "loss) and at the end, and that iteration, vs the fraction of weights remaining.")
    report.add_table("similarity", sim_sum, "Linear CKA and SVCCA (test inputs) per comparison, over seed pairs "
                     "(cross-seed) or seeds (vs the dense parent).")
    report.add_table("mask_overlap", mask_sum, "Jaccard overlap of kept weights between seeds, raw and after "
                     "matching hidden units (Hungarian on activation correlations); chance = p^2 / (2p - p^2).")
    report.add_table("accuracy_per_seed", acc)
    report.add_table("similarity_per_pair", sim)
    for ds in cfg.datasets:
        _figures(report, acc, sim, ds)
    report.summary = "summary"
    return report


def _headline(acc_sum: pd.DataFrame, sim_sum: pd.DataFrame, layer: str) -> pd.DataFrame:
    idx = ["dataset", "round", "remaining"]
    a = acc_sum.pivot_table(index=idx, columns="kind", values=["acc_mean", "acc_sd"], dropna=False)
    a.columns = [f"{k}_{v}" for v, k in a.columns]
    s = sim_sum[(sim_sum.layer == layer) & (sim_sum.metric == "linear_cka")]
    s = s[s.comparison.isin(["ticket vs ticket (seeds)", "random vs random (seeds)", "ticket vs dense parent"])]
    s = s.pivot_table(index=idx, columns="comparison", values=["mean", "sd"], dropna=False)
    short = {"ticket vs ticket (seeds)": "cka_ticket_pairs", "random vs random (seeds)": "cka_random_pairs",
             "ticket vs dense parent": "cka_ticket_parent"}
    s.columns = [f"{short[c]}_{v}" for v, c in s.columns]
    out = a.join(s).reset_index()
    out = out.dropna(subset=[c for c in out.columns if c.endswith("_acc_mean")], how="all")  # dropna=False's fill
    keep = ["dataset", "round", "remaining"] + [c for c in (
        "ticket_acc_mean", "ticket_acc_sd", "ticket_late_acc_mean", "reinit_acc_mean", "random_acc_mean",
        "random_acc_sd", "cka_ticket_pairs_mean", "cka_ticket_pairs_sd", "cka_random_pairs_mean",
        "cka_random_pairs_sd", "cka_ticket_parent_mean") if c in out]
    return out[keep]


def _notes(h: pd.DataFrame) -> str:
    lines = []
    for ds, g in h.groupby("dataset", sort=False):
        g = g[g["round"] > 0]
        if "cka_random_pairs_mean" not in g or g.empty:
            continue
        diff = g.cka_ticket_pairs_mean - g.cka_random_pairs_mean
        pooled = np.sqrt((g.cka_ticket_pairs_sd**2 + g.cka_random_pairs_sd**2) / 2)
        lines.append(
            f"- {ds}: tickets of different seeds vs random-pruned networks of different seeds, linear CKA of the "
            f"last hidden layer: ticket minus random = {diff.mean():+.3f} on average over {len(g)} sparsities "
            f"(range {diff.min():+.3f} to {diff.max():+.3f}; tickets higher at {int((diff > 0).sum())}/{len(g)}; "
            f"typical pair sd {pooled.mean():.3f}). At the sparsest level ({100 * g.remaining.iloc[-1]:.1f}% left): "
            f"ticket {g.cka_ticket_pairs_mean.iloc[-1]:.3f} ± {g.cka_ticket_pairs_sd.iloc[-1]:.3f}, random "
            f"{g.cka_random_pairs_mean.iloc[-1]:.3f} ± {g.cka_random_pairs_sd.iloc[-1]:.3f}; accuracy ticket "
            f"{g.ticket_acc_mean.iloc[-1]:.3f} vs random {g.random_acc_mean.iloc[-1]:.3f} vs reinit "
            f"{g.reinit_acc_mean.iloc[-1]:.3f}.")
    return "\n".join(lines)

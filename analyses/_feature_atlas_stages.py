"""The stages of ``univ run feature_atlas``: the zoo's activations, the crosscoder atlas with its nulls, the
pairwise SAE comparison, and the figures and sentences of the report."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ.cache import cached_sae, zoo
from univ.report import panels
from univ.sae import tags as T
from univ.train import TrainConfig

from .universality import ARCH_CFGS

CATEGORIES = ("all trained models", "across architectures", "one architecture, several seeds", "one model",
              "trained with untrained twins", "untrained only")
SHARED_CORR = 0.7


def _layer(entry) -> str:
    return entry.model.layers[-2]  # the last hidden layer


def zoo_activations(cfg):
    """(zoo entries, {"train": [...], "test": [...]}): every model's last hidden layer (patch-averaged) on the
    same inputs, in zoo order."""
    device = univ.utils.resolve_device(cfg.device)
    data = univ.data.load(cfg.data)
    entries = zoo(cfg.archs, [cfg.seed + i for i in range(cfg.seeds)], data,
                  TrainConfig(epochs=cfg.epochs, seed=cfg.seed), model_cfgs=ARCH_CFGS[cfg.data], device=device)
    acts = {"train": [], "test": []}
    for e in tqdm(entries, desc="capture"):
        e.model.cpu()
        for split, x in (("train", data.x_train), ("test", data.x_test)):
            acts[split].append(univ.capture(e.model, x, [_layer(e)], reduce="mean", cache=True)[_layer(e)].float())
    return entries, acts


def category(models: list) -> str:
    """The category of a subset of zoo entries (see CATEGORIES)."""
    trained = [e for e in models if e.trained]
    if len(trained) < len(models):
        return "trained with untrained twins" if trained else "untrained only"
    if len(trained) == 1:
        return "one model"
    return "across architectures" if len({e.arch for e in trained}) > 1 else "one architecture, several seeds"


def category_counts(table: pd.DataFrame, n_bootstrap: int, seed: int) -> pd.DataFrame:
    t = table[table["counted"]]
    cats = t["category"].to_numpy()
    n = len(t)
    idx = np.random.default_rng(seed).integers(0, max(n, 1), size=(n_bootstrap, n))
    rows = []
    for c in CATEGORIES:
        hit = cats == c
        boot = hit[idx].sum(1) if n else np.zeros(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        rows.append({"category": c, "count": int(hit.sum()), "count_low": float(lo), "count_high": float(hi),
                     "fraction": hit.mean() if n else np.nan, "n_counted": n})
    return pd.DataFrame(rows)


class Atlas(NamedTuple):
    names: list
    tags: object  # LatentTags of the first crosscoder (stable latents counted)
    null_tags: object  # LatentTags on shuffled pairings
    stability: object
    categories: pd.DataFrame
    subsets: pd.DataFrame
    ceiling: pd.DataFrame
    fvu: list


def _fit(cfg, xs, seed):
    cc = univ.sae.Crosscoder([x.shape[1] for x in xs], cfg.d_sae, kind="batchtopk", k=cfg.k, seed=seed)
    return cc.fit(xs, max_steps=cfg.steps, progress=True)


def atlas_stage(cfg, entries, acts) -> Atlas:
    names = [e.id for e in entries]
    train, test = acts["train"], acts["test"]
    cc_a, cc_b = _fit(cfg, train, cfg.seed), _fit(cfg, train, cfg.seed + 1)
    stab = univ.sae.seed_stability(cc_a, cc_b, cfg.stable_cosine)
    kw = {"threshold": cfg.threshold, "model_names": names, "n_bootstrap": cfg.n_bootstrap, "seed": cfg.seed}
    tags = univ.sae.latent_tags(cc_a, test, stable=stab.stable, **kw)
    # the null: the same pipeline (two seeds, stability filter) on pairings shuffled across models
    shuffled = univ.sae.shuffle_pairing(train, cfg.seed)
    null_a, null_b = _fit(cfg, shuffled, cfg.seed), _fit(cfg, shuffled, cfg.seed + 1)
    null_stab = univ.sae.seed_stability(null_a, null_b, cfg.stable_cosine)
    null = univ.sae.latent_tags(null_a, univ.sae.shuffle_pairing(test, cfg.seed + 1), stable=null_stab.stable, **kw)
    by_name = dict(zip(names, entries))
    for t in (tags, null):
        t.table["category"] = [category([by_name[m] for m in s.split("+")]) for s in t.table["subset"]]
    cats = category_counts(tags.table, cfg.n_bootstrap, cfg.seed)
    ncats = category_counts(null.table, cfg.n_bootstrap, cfg.seed)
    for col in ("count", "count_low", "count_high", "fraction"):
        cats[f"null_{col}"] = ncats[col].to_numpy()
    sub = tags.counts.merge(null.counts[["subset", "count", "count_low", "count_high"]].add_prefix("null_"),
                            left_on="subset", right_on="null_subset", how="left").drop(columns="null_subset")
    rows = []
    for what, t, st in (("paired inputs", tags, stab), ("shuffled pairing (null)", null, null_stab)):
        live = torch.tensor(t.table["live"].to_numpy())
        rows.append({"inputs": what, "n_latents": cc_a.d_sae, "n_live": int(live.sum()),
                     "stable_fraction": float(st.stable[live].double().mean()),
                     "mean_cosine": float(st.cosine[live].mean()), "stable_cosine": cfg.stable_cosine})
    ceiling = pd.DataFrame(rows)
    with torch.no_grad():
        recon = cc_a.decode(T.joint_codes(cc_a, test))
    fvu = [float(((x - r) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()) for x, r in zip(test, recon)]
    return Atlas(names, tags, null, stab, cats, sub, ceiling, fvu)


def models_table(entries, atlas: Atlas) -> pd.DataFrame:
    return pd.DataFrame([{"model": e.id, "arch": e.arch, "seed": e.seed, "trained": e.trained,
                          "layer": _layer(e), "test_acc": e.metrics["test_acc"], "crosscoder_fvu": f}
                         for e, f in zip(entries, atlas.fvu)])


def setup_text(cfg, entries, atlas: Atlas) -> str:
    return (f"Data: {cfg.data}. Zoo: {list(cfg.archs)} x {cfg.seeds} seeds, {cfg.epochs} epochs, each with its "
            f"untrained twin ({len(entries)} models), last hidden layer averaged over positions. One BatchTopK "
            f"crosscoder over all of them (d_sae={cfg.d_sae}, k={cfg.k}, at most {cfg.steps} steps), fitted twice "
            f"(seeds {cfg.seed}, {cfg.seed + 1}) on the training inputs and read on the test inputs. A latent lives "
            f"in a model when its decoder norm there is >= {cfg.threshold:.3g} x its largest; counted when it fires "
            "on the test inputs and recurs in the second crosscoder.")


def categories_text(atlas: Atlas) -> str:
    c = atlas.categories.set_index("category")
    parts = [f"{k}: {int(r['count'])} [{r['count_low']:.0f}, {r['count_high']:.0f}] (null {int(r['null_count'])})"
             for k, r in c.iterrows()]
    n = int(c["n_counted"].iloc[0])
    flagged = int(atlas.tags.table.loc[atlas.tags.table["counted"], "ls_flag"].sum())
    return (f"Of {n} counted latents: " + "; ".join(parts) + f". Latent Scaling flags {flagged} counted exclusive "
            "tags as possibly false (the latent's activation explains as much of a model it is tagged absent "
            "from). Intervals: 95% bootstrap over counted latents; null: shuffled pairings across models.")


def upset_figure(atlas: Atlas):
    fig, (ax,) = panels(1, 1, (8, 3.5))
    c = atlas.categories
    x = np.arange(len(c))
    for off, pre, label in ((-0.2, "", "paired inputs"), (0.2, "null_", "shuffled pairing")):
        y = c[f"{pre}count"].to_numpy(float)
        err = np.vstack([y - c[f"{pre}count_low"], c[f"{pre}count_high"] - y]).clip(0)
        ax.bar(x + off, y, 0.4, yerr=err, label=label, capsize=3)
    ax.set_xticks(x, c["category"], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("counted latents")
    ax.legend()
    fig.tight_layout()
    return fig


def norm_histograms(atlas: Atlas):
    t = atlas.tags.table[atlas.tags.table["live"]]
    fig, axes = panels(len(atlas.names), 4, (2.6, 2.0))
    for ax, name in zip(axes, atlas.names):
        ax.hist(t[f"norm_{name}"], bins=np.linspace(0, 1, 21))
        ax.axvline(atlas.tags.threshold, ls="--", c="k", lw=0.8)
        ax.set_title(name, fontsize=8)
    fig.tight_layout()
    return fig


def cosine_figure(atlas: Atlas):
    t = atlas.tags.table
    cos = atlas.stability.cosine.numpy()
    fig, (ax,) = panels(1, 1, (5, 3))
    bins = np.linspace(-0.2, 1, 25)
    for label, mask in (("shared (size>=2)", (t["size"] >= 2) & t["live"]),
                        ("exclusive", (t["size"] == 1) & t["live"])):
        ax.hist(cos[mask.to_numpy()], bins=bins, alpha=0.6, label=label)
    ax.set_xlabel("decoder cosine with the second seed's partner")
    ax.legend()
    fig.tight_layout()
    return fig


def pairwise_stage(cfg, entries, acts) -> pd.DataFrame:
    """One TopK SAE per trained model (4x its width, k <= cfg.k), matched pairwise by activation correlation."""
    saes = {}
    for i, e in enumerate(tqdm(entries, desc="SAEs")):
        if not e.trained:
            continue
        tr = acts["train"][i]
        d = tr.shape[1]
        saes[i] = cached_sae("topk", tr, key={"model": e.id, "layer": _layer(e)}, d_sae=4 * d, k=min(cfg.k, 4 * d),
                             seed=cfg.seed, fit_progress=False, fit_seed=cfg.seed, fit_max_steps=cfg.sae_steps)
    rows = []
    for i, j in itertools.combinations(sorted(saes), 2):
        a, b = entries[i], entries[j]
        r = univ.sae.match(saes[i], acts["test"][i], saes[j], acts["test"][j], method="correlation",
                           threshold=SHARED_CORR, seed=cfg.seed).summary
        rows.append({"model_a": a.id, "model_b": b.id,
                     "pair": "same architecture" if a.arch == b.arch else "across architectures",
                     "shared_fraction": r["shared_fraction"], "shared_fraction_shuffled": r["baseline_shared_fraction"],
                     "mean_best_corr": r["mean_max_correlation"]})
    return pd.DataFrame(rows)


def pairwise_text(pw: pd.DataFrame) -> str:
    if pw.empty:
        return "No pair of trained models."
    g = pw.groupby("pair")[["shared_fraction", "shared_fraction_shuffled"]].mean()
    parts = [f"{k}: {r['shared_fraction']:.2f} (shuffled {r['shared_fraction_shuffled']:.2f})" for k, r in g.iterrows()]
    return (f"Pairwise SAE matching (Bricken et al.: a latent is shared when its best activation correlation in the "
            f"other model's SAE is >= {SHARED_CORR}), mean shared fraction by pair: " + "; ".join(parts) + ".")


SEED_SHARED = 0.3
"""Paulo & Belrose (2026): about 30% of SAE latents recur across seeds of one model; a seed ceiling far below it
means the dictionary itself is not reproducible."""


def findings_text(categories: pd.DataFrame, ceiling: pd.DataFrame, pairwise: pd.DataFrame | None) -> str:
    """The Findings paragraph, from the tables: the seed ceiling, the shared categories against their null, how
    much of the sharing the untrained twins carry, and the pairwise SAE matching beside it."""
    c = categories.set_index("category")
    ceil = ceiling.set_index("inputs")
    paired, null = ceil.loc["paired inputs"], ceil.loc["shuffled pairing (null)"]
    n = int(c["n_counted"].iloc[0])
    lines = [f"- **Seed ceiling.** {paired['stable_fraction']:.1%} of the {int(paired['n_live'])} live latents "
             f"recur in the second crosscoder (decoder cosine >= {paired['stable_cosine']:.2g}); "
             f"{null['stable_fraction']:.1%} on shuffled pairings."
             + (f" That is far below the ~{SEED_SHARED:.0%} Paulo & Belrose find across SAE seeds: this "
                "crosscoder's latents are mostly not reproducible, so the counts below rest on few latents and cannot "
                "carry a claim about shared or exclusive features." if paired["stable_fraction"] < SEED_SHARED / 3
                else "")]

    def verdict(cat):
        r = c.loc[cat]
        if r["count_low"] > r["null_count_high"]:
            word = "more than"
        elif r["count_high"] < r["null_count_low"]:
            word = "fewer than"
        else:
            word = "not distinguishable from"
        return (f"{int(r['count'])} [{r['count_low']:.0f}, {r['count_high']:.0f}], {word} the shuffled-pairing null "
                f"({int(r['null_count'])} [{r['null_count_low']:.0f}, {r['null_count_high']:.0f}])")

    lines.append(f"- **Shared by trained networks.** Of {n} counted latents, across architectures: "
                 f"{verdict('across architectures')}; within one architecture's seeds: "
                 f"{verdict('one architecture, several seeds')}; in all trained models: "
                 f"{verdict('all trained models')}.")
    shared = int(c.loc[["all trained models", "across architectures", "one architecture, several seeds",
                        "trained with untrained twins", "untrained only"], "count"].sum())
    twins = int(c.loc[["trained with untrained twins", "untrained only"], "count"].sum())
    if shared:
        lines.append(f"- **Untrained twins.** {twins} of the {shared} counted latents that live in more than one "
                     f"model involve an untrained network"
                     + (": most of the shared structure is there before training (the inputs and the architecture "
                        "make it), so it is not evidence that training converges on the same features."
                        if twins * 2 >= shared else "; most shared latents are specific to trained networks."))
    else:
        lines.append("- **Untrained twins.** No counted latent lives in more than one model.")
    if pairwise is not None and len(pairwise):
        g = pairwise.groupby("pair")[["shared_fraction", "shared_fraction_shuffled"]].mean()
        parts = [f"{k} {r['shared_fraction']:.2f} (shuffled {r['shared_fraction_shuffled']:.2f})"
                 for k, r in g.iterrows()]
        across = g["shared_fraction"].get("across architectures", np.nan)
        cc_across = int(c.loc["across architectures", "count"])
        lines.append("- **Pairwise SAE matching** (best activation correlation >= "
                     f"{SHARED_CORR}), mean shared fraction: " + "; ".join(parts) + "."
                     + (f" It reads far more sharing across architectures than the crosscoder counts ({cc_across}): "
                        "it has no seed-stability filter and matches each latent to its best partner among many, "
                        "so read it as an upper bound." if np.isfinite(across) and across > 0.1 and n
                        and cc_across < 0.1 * n else ""))
    return "\n".join(lines)

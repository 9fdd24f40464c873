"""The work of analyses/group_universality.py: training, irrep measures, the paper's numbers, the measure benchmark."""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ import group_measures as gm
from univ.data import group_composition
from univ.group_models import GroupTrainConfig, cached_group_model
from univ.groups import Group, irreps, parse_group
from univ.report import Report, panels

PAPER = {  # Chughtai, Chan & Nanda 2023, the mainline S5 MLP (and its spread over seeds)
    "trace similarity, standard irrep": 0.767,
    "embedding variance in key irreps": 1.00,
    "unembedding variance in key irreps": 0.940,
    "hidden variance in key irreps": 0.889,
    "logit variance in key irreps": 0.848,
    "restricted loss (train)": 6.7e-7,
    "excluded loss (train)": 7.6,
}


class Trained(NamedTuple):
    id: str
    arch: str
    seed: int
    model: torch.nn.Module
    metrics: dict
    checkpoints: dict


def train_stage(cfg, data) -> list[Trained]:
    tcfg = GroupTrainConfig(max_steps=cfg.max_steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                            checkpoint_every=cfg.checkpoint_every, patience=cfg.patience)
    out = []
    jobs = [(a, cfg.seed + i) for a in cfg.archs for i in range(cfg.seeds)]
    for arch, seed in tqdm(jobs, desc="train"):
        r = cached_group_model(arch, data, seed, tcfg, width=cfg.width)
        out.append(Trained(f"{arch}-s{seed}", arch, seed, r.model, r.metrics, r.checkpoints))
    return out


# --------------------------------------------------------------------------------------------------
# what each network computes, as arrays over the group


def embedding(model) -> torch.Tensor:
    """(|G|, d) input embedding as a function of the element (left and right side by side for the MLP)."""
    if hasattr(model, "W_left"):
        return torch.cat([model.W_left, model.W_right], 1).detach()
    return model.bridge.W_E.detach()


def unembedding(model) -> torch.Tensor:
    """(|G|, d) unembedding as a function of the output element c."""
    if hasattr(model, "out"):
        return model.out.weight.detach()
    return model.bridge.W_U.detach().T


def hidden_layer(model) -> str:
    return "hidden" if hasattr(model, "W_left") else "blocks.0.hook_resid_post"


def grid_arrays(model, G: Group) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden activations (|G|^2, d) and logits (|G|^2, |G|) on every pair, row a * |G| + b."""
    n = len(G)
    a, b = np.divmod(np.arange(n * n), n)
    x = torch.tensor(np.stack([a, b], 1))
    h = univ.capture(model, x, [hidden_layer(model)], batch_size=4096, reduce="last")[hidden_layer(model)]
    return h.double(), univ.models.logits(model, x, batch_size=4096).double()


def _load(model, state):
    model.load_state_dict(state)
    return model


def irrep_stage(cfg, trained: list[Trained], G: Group, train_rows) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                             pd.DataFrame, dict]:
    """Per (model, irrep) table, per-model summary, learning order, and each model's grid activations."""
    names = [f.name for f in irreps(G) if f.name != "trivial"]
    dims = {f.name: f.dim for f in irreps(G)}
    rows, summary, order, acts = [], [], [], {}
    for t in tqdm(trained, desc="irreps"):
        H, L = grid_arrays(t.model, G)
        acts[t.id] = H
        E, U = embedding(t.model), unembedding(t.model)
        emb = {n: gm.element_fraction(E, G, [n]) for n in names}
        logit = {n: gm.logit_fraction(L, G, [n]) for n in names}
        key = gm.key_irreps(logit, cfg.key_threshold)
        sim = gm.trace_similarity(L, G, names)
        for n in names:
            rows.append({"model": t.id, "arch": t.arch, "seed": t.seed, "irrep": n, "dim": dims[n], "key": n in key,
                         "embed_frac": emb[n], "unembed_frac": gm.element_fraction(U, G, [n]),
                         "hidden_frac": gm.pair_fraction(H, G, [n]), "logit_frac": logit[n],
                         "trace_similarity": sim[n], "excluded_loss": gm.excluded_loss(L, G, n, train_rows)})
        excl = L.numpy() - L.numpy().mean(1, keepdims=True) - gm.logit_components(L, G, key) if key else L.numpy()
        summary.append({
            "model": t.id, "arch": t.arch, "seed": t.seed, "test_acc": t.metrics["test_acc"],
            "steps": t.metrics["steps"], "train_seconds": t.metrics.get("seconds", float("nan")),
            "key_irreps": "+".join(key) or "(none)", "n_key": len(key),
            "embed_frac_key": gm.element_fraction(E, G, key), "unembed_frac_key": gm.element_fraction(U, G, key),
            "hidden_frac_key": gm.pair_fraction(H, G, key), "logit_frac_key": gm.logit_fraction(L, G, key),
            "trace_sim_standard": sim.get("standard", float("nan")),
            "max_trace_sim": max((sim[n] for n in key), default=float("nan")),
            "restricted_loss": gm.restricted_loss(L, G, key, train_rows) if key else float("nan"),
            "excluded_loss": gm._loss(excl, G.table.reshape(-1), np.asarray(train_rows)),
            "full_loss": gm._loss(L.numpy(), G.table.reshape(-1), np.asarray(train_rows)),
        })
        if key:
            model = t.model
            saved = {k: v.clone() for k, v in model.state_dict().items()}
            by_step = {}
            for s, sd in t.checkpoints.items():
                L_s = grid_arrays(_load(model, sd), G)[1]
                by_step[s] = {n: gm.logit_fraction(L_s, G, [n]) for n in key}
            model.load_state_dict(saved)
            learned = gm.learning_order(by_step, key)
            for rank, (n, s) in enumerate(sorted(learned.items(), key=lambda kv: (kv[1], kv[0])), start=1):
                order.append({"model": t.id, "arch": t.arch, "seed": t.seed, "irrep": n, "learned_step": s,
                              "rank": rank, "final_logit_frac": by_step[max(by_step)][n]})
            acts[t.id + "/curve"] = by_step
    return pd.DataFrame(rows), pd.DataFrame(summary), pd.DataFrame(order), acts


def paper_table(summary: pd.DataFrame, group: str) -> pd.DataFrame:
    cols = {"trace similarity, standard irrep": "trace_sim_standard",
            "embedding variance in key irreps": "embed_frac_key", "unembedding variance in key irreps":
            "unembed_frac_key", "hidden variance in key irreps": "hidden_frac_key",
            "logit variance in key irreps": "logit_frac_key", "restricted loss (train)": "restricted_loss",
            "excluded loss (train)": "excluded_loss"}
    mlp = summary[summary["arch"] == "mlp"] if (summary["arch"] == "mlp").any() else summary
    uses_standard = mlp[mlp["key_irreps"].str.split("+").apply(lambda k: "standard" in k)]
    rows = []
    for label, col in cols.items():
        # the paper's trace similarity is that of a network whose key irrep is the standard one: compare like
        # with like (networks keyed on other irreps have ~0 similarity with the standard irrep by orthogonality)
        v = (uses_standard if col == "trace_sim_standard" else mlp)[col].astype(float)
        rows.append({"measure": label, "paper_S5_mlp": PAPER[label], "group": group, "ours_median": v.median(),
                     "ours_min": v.min(), "ours_max": v.max(), "n_seeds": int(v.notna().sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------
# the benchmark of univ's measures


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance that a random "same" pair scores above a random "different" pair (ties 1/2)."""
    pos, neg = scores[truth], scores[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def bootstrap_auc(scores, truth, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of the AUC over pairs resampled within each class (same / different)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        vals.append(auc(scores[idx], truth[idx]))
    return float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def bootstrap_spearman(scores, overlap, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Spearman correlation of the scores with the key-irrep overlap, and its 95% bootstrap interval over pairs."""
    from scipy.stats import spearmanr

    def rho(i):
        if np.ptp(scores[i]) == 0 or np.ptp(overlap[i]) == 0:
            return float("nan")
        return float(spearmanr(scores[i], overlap[i])[0])

    rng = np.random.default_rng(seed)
    n = len(scores)
    vals = np.array([rho(rng.integers(0, n, n)) for _ in range(n_boot)])
    vals = vals[~np.isnan(vals)]
    if len(vals) == 0:
        return rho(np.arange(n)), float("nan"), float("nan")
    return rho(np.arange(n)), float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def fit_saes(cfg, trained, acts, rows) -> dict:
    from univ.cache import cached_sae

    saes = {}
    for t in tqdm(trained, desc="SAEs"):
        X = acts[t.id][rows].float()
        saes[t.id] = cached_sae("topk", X, key={"model": t.id, "group": cfg.group, "layer": hidden_layer(t.model)},
                                d_sae=cfg.sae_expansion * X.shape[1], k=cfg.sae_k, seed=cfg.seed,
                                fit_max_steps=cfg.sae_steps, fit_progress=False, fit_seed=cfg.seed)
    return saes


def sae_alignment(cfg, trained, acts, saes, summary: pd.DataFrame, G: Group) -> pd.DataFrame:
    """Per model: how much of each live SAE latent's activation (a function of (a, b)) one irrep explains."""
    names = [f.name for f in irreps(G) if f.name != "trivial"]
    keys = dict(zip(summary["model"], summary["key_irreps"]))
    out = []
    for t in trained:
        codes = saes[t.id].encode(acts[t.id].float()).detach().double()
        live = codes.abs().sum(0) > 0
        fr = np.nan_to_num(np.stack([gm.pair_fraction(codes[:, live], G, [n], per_column=True) for n in names]))
        best = fr.max(0) if fr.size else np.array([])
        in_key = [names[i] in keys[t.id].split("+") for i in fr.argmax(0)] if fr.size else []
        out.append({"model": t.id, "key_irreps": keys[t.id], "live_latents": int(live.sum()),
                    "mean_best_irrep_frac": float(np.mean(best)) if len(best) else float("nan"),
                    "latents_best_irrep_is_key": float(np.mean(in_key)) if in_key else float("nan")})
    return pd.DataFrame(out)


def benchmark_stage(cfg, trained, acts, summary: pd.DataFrame, G: Group):
    """Pair scores (one row per model pair and measure) and the AUC table."""
    n = len(G) ** 2
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n, min(cfg.n_rows, n), replace=False))
    keys = dict(zip(summary["model"], summary["key_irreps"]))
    pairs = [(a, b) for a, b in itertools.combinations(trained, 2) if a.arch == b.arch]
    saes = fit_saes(cfg, trained, acts, rows) if cfg.sae else {}
    scores = []
    for a, b in tqdm(pairs, desc="pairs"):
        Xa, Xb = acts[a.id][rows], acts[b.id][rows]
        ka, kb = set(keys[a.id].split("+")) - {"(none)"}, set(keys[b.id].split("+")) - {"(none)"}
        base = {"model_a": a.id, "model_b": b.id, "keys_a": keys[a.id], "keys_b": keys[b.id],
                "same_irreps": keys[a.id] == keys[b.id], "share_irrep": bool(ka & kb),
                "jaccard": len(ka & kb) / len(ka | kb) if ka | kb else 1.0}
        for m in cfg.metrics:
            scores.append({**base, "measure": m, "score": float(univ.similarity.METRICS[m](Xa, Xb))})
        if cfg.sae:
            r = univ.sae.match(saes[a.id], Xa.float(), saes[b.id], Xb.float(), method="correlation", seed=cfg.seed)
            scores.append({**base, "measure": "sae_match_correlation", "score": r.summary["mean_max_correlation"]})
            scores.append({**base, "measure": "sae_shared_fraction", "score": r.summary["shared_fraction"]})
    scores = pd.DataFrame(scores)
    table = []
    for m, d in scores.groupby("measure", sort=False):
        s, tr, sh = d["score"].to_numpy(float), d["same_irreps"].to_numpy(bool), d["share_irrep"].to_numpy(bool)
        lo, hi = bootstrap_auc(s, tr, cfg.n_bootstrap, cfg.seed)
        lo2, hi2 = bootstrap_auc(s, sh, cfg.n_bootstrap, cfg.seed)
        rho, rlo, rhi = bootstrap_spearman(s, d["jaccard"].to_numpy(float), cfg.n_bootstrap, cfg.seed)
        table.append({"measure": m, "auc": auc(s, tr), "ci_low": lo, "ci_high": hi, "n_same": int(tr.sum()),
                      "n_different": int((~tr).sum()), "mean_same": float(s[tr].mean()) if tr.any() else np.nan,
                      "mean_different": float(s[~tr].mean()) if (~tr).any() else np.nan,
                      "auc_share": auc(s, sh), "share_ci_low": lo2, "share_ci_high": hi2, "n_share": int(sh.sum()),
                      "spearman_jaccard": rho, "spearman_ci_low": rlo, "spearman_ci_high": rhi})
    alignment = sae_alignment(cfg, trained, acts, saes, summary, G) if cfg.sae else None
    return scores, pd.DataFrame(table), alignment


def verdict(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    out = []
    for col, lo, what in (("auc", "ci_low", "same key irreps"), ("auc_share", "share_ci_low", "a shared key irrep"),
                          ("spearman_jaccard", "spearman_ci_low", "key-irrep overlap (Spearman > 0)")):
        if table[col].isna().all():
            out.append(f"{what}: not computable (one class of pairs is empty).")
            continue
        cut = 0.5 if col.startswith("auc") else 0.0
        good = table[table[lo] > cut]["measure"].tolist()
        out.append(f"{what}: detected (interval above {cut}) by {good or 'none'}.")
    return " ".join(out) + (" Pairs share seeds, so intervals that resample pairs are optimistic.")


# --------------------------------------------------------------------------------------------------
# figures


def irrep_figure(per_irrep: pd.DataFrame, column: str, title: str):
    from univ.report import heatmap

    M = per_irrep.pivot(index="model", columns="irrep", values=column)
    fig, axes = panels(1, 1, (1.0 + 0.7 * M.shape[1], 1.0 + 0.4 * M.shape[0]))
    heatmap(M, title=title, ax=axes[0])
    return fig


def curves_figure(curves: dict, max_models: int = 6):
    ids = list(curves)[:max_models]
    fig, axes = panels(len(ids), min(3, len(ids)), (4.0, 3.0))
    for ax, mid in zip(axes, ids):
        by_step = curves[mid]
        steps = sorted(by_step)
        for n in by_step[steps[0]]:
            ax.plot(steps, [by_step[s][n] for s in steps], label=n)
        ax.set_title(mid)
        ax.set_xlabel("step")
        ax.set_ylabel("logit variance fraction")
        ax.legend(fontsize=7)
    return fig


def auc_figure(table: pd.DataFrame):
    fig, axes = panels(1, 1, (7.0, 3.5))
    ax = axes[0]
    x = np.arange(len(table))
    err = np.array([table["auc"] - table["ci_low"], table["ci_high"] - table["auc"]])
    ax.bar(x, table["auc"], yerr=np.nan_to_num(err), capsize=3)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, table["measure"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("AUC (same vs different key irreps)")
    ax.set_ylim(0, 1)
    return fig


# --------------------------------------------------------------------------------------------------


def run(cfg) -> Report:
    t0 = time.perf_counter()
    G = parse_group(cfg.group)
    data = group_composition(G, cfg.train_fraction, cfg.seed)
    train_rows = data.extra["train_index"].numpy()
    trained = train_stage(cfg, data)
    per_irrep, summary, order, acts = irrep_stage(cfg, trained, G, train_rows)
    curves = {k[:-6]: v for k, v in acts.items() if k.endswith("/curve")}
    report = Report("group_universality", summary="measure_benchmark")
    dims = ", ".join(f"{f.name} ({f.dim})" for f in irreps(G))
    report.add_text("Setup", f"Group {G.name} (order {len(G)}; real irreps constructed: {dims}). All {len(G) ** 2} "
                    f"pairs, {cfg.train_fraction:.0%} for training (split seed {cfg.seed}). Models {list(cfg.archs)} x "
                    f"{cfg.seeds} seeds (width {cfg.width}), full-batch AdamW (lr {cfg.lr}, weight decay "
                    f"{cfg.weight_decay}, betas 0.9/0.98) for at most {cfg.max_steps} steps, stopping once the test "
                    f"accuracy settles above 0.99. Training time (this run or the cached one): "
                    f"{summary['train_seconds'].sum():.0f} s in all.")
    report.add_table("per_seed", summary, "One row per trained network: its key irreps (each holding >= "
                     f"{cfg.key_threshold} of the logit variance in its rho(abc^-1) subspace), the fraction of "
                     "variance of embeddings, unembedding, hidden "
                     "activations and logits in the key irreps' subspaces, the logit trace similarity with the "
                     "standard irrep and the best key irrep, and the train loss of the logits restricted to the key "
                     "irreps' rho(abc^-1) components vs with them excluded.")
    report.add_table("per_irrep", per_irrep, "Every network x irrep: the variance fractions, trace similarity and "
                     "excluded loss (train pairs) of each irrep alone.", inline=False)
    report.add_figure("embedding_irreps", irrep_figure(per_irrep, "embed_frac", "embedding variance by irrep"),
                      "Fraction of each network's embedding variance per irrep (chance: d^2 / (|G| - 1)).")
    report.add_figure("logit_irreps", irrep_figure(per_irrep, "logit_frac", "logit variance by irrep"),
                      "Fraction of each network's logit variance in each irrep's rho(abc^-1) subspace (chance ~0); "
                      "the key irreps are those above the threshold.")
    report.add_table("learning_order", order, "Order in which each network's key irreps are learned: the first "
                     "checkpoint at which an irrep's logit fraction has covered half the way from its value at "
                     f"initialisation to its final value (checkpoints every {cfg.checkpoint_every} steps).")
    if curves:
        report.add_figure("learning_curves", curves_figure(curves), "Logit variance of each key irrep along "
                          "training (the first networks).")
    report.add_table("paper_vs_ours", paper_table(summary, G.name), PAPER_TEXT)
    scores, table, alignment = benchmark_stage(cfg, trained, acts, summary, G)
    report.add_table("measure_benchmark", table, "For every pair of seeds (same architecture), the truth is whether "
                     "they use the same key irreps (auc), whether they share at least one (auc_share), and the Jaccard "
                     "overlap of their key sets (spearman_jaccard). AUC: how well each measure's score on the hidden "
                     "activations "
                     f"({min(cfg.n_rows, len(G) ** 2)} input pairs) separates same from different pairs; "
                     f"interval: 95% bootstrap over pairs ({cfg.n_bootstrap} resamples, within class). "
                     + verdict(table))
    report.add_table("pair_scores", scores, "Every model pair and measure.", inline=False)
    if len(table):
        report.add_figure("benchmark_auc", auc_figure(table), "AUC per measure with its interval (0.5 = chance).")
    if alignment is not None:
        report.add_table("sae_irrep_alignment", alignment, "Do SAE latents align with irrep subspaces? For each live "
                         "latent, the largest fraction of its activation variance (a function of (a, b)) that one "
                         "irrep's subspace explains, averaged; and how often that irrep is one of the network's key "
                         "irreps.")
    report.add_text("Findings", findings(summary, table, cfg))
    report.meta["seconds"] = time.perf_counter() - t0
    return report


def findings(summary: pd.DataFrame, table: pd.DataFrame, cfg) -> str:
    """A short paragraph drawn from the tables (what a reader should take away)."""
    sets = summary["key_irreps"].value_counts()
    grokked = int((summary["test_acc"] >= 0.99).sum())
    text = (f"{grokked} of {len(summary)} networks reach >= 99% test accuracy within {cfg.max_steps} steps. Key-irrep "
            f"sets over seeds: {', '.join(f'{k} ({v})' for k, v in sets.items())}: the algorithm family is shared, "
            "which irreps carry it varies with the seed. ")
    if len(table) and table["auc"].notna().any():
        best = table.sort_values("auc", ascending=False).iloc[0]
        text += (f"The measure that best separates same-irrep from different-irrep pairs is {best['measure']} "
                 f"(AUC {best['auc']:.2f}, interval {best['ci_low']:.2f}-{best['ci_high']:.2f}).")
    return text


PAPER_TEXT = ("The paper's mainline S5 MLP (embedding 256, hidden 128, 40% of pairs, AdamW lr 1e-3, weight decay 1, "
              "250k full-batch steps; over its seeds: embeddings 99-100% and MLP 86-96% in the key irreps) beside our "
              "networks (median, min and max over seeds; the trace similarity over the seeds whose key irreps include "
              "the standard one). Our definitions: "
              "variance fractions are of centred arrays; hidden: the span of rho_ij(a) sigma_kl(b) with rho, sigma "
              "key or trivial; logits: the span of rho_ij(a b c^-1); restricted/excluded loss keep/remove the key "
              "irreps' rho(a b c^-1) components of the logits, on the train pairs.")

"""Universality across architectures: representation similarity, shared SAE features, adversarial directions.

The main job (``univ run universality``): an MLP, a CNN and a TransformerLens transformer, several seeds
each, trained on the same task, plus their untrained initialisations as the baseline. Stages:
1. similarity: layer x layer linear CKA, debiased CKA, SVCCA and PWCCA for every model pair, with
   permutation baselines and bootstrap intervals; summaries by pair category.
2. features: an SAE per model at its last hidden layer, matched across models against shuffled baselines.
3. adversarial: PGD examples per model, the transfer matrix, and whether the SAE latents an attack moves
   most are ones the other models share.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import univ
from univ.cache import ZooEntry, zoo
from univ.report import Report, heatmap
from univ.train import TrainConfig

from ._universality_stages import adversarial_stage, feature_stage

ARCH_CFGS = {
    "digits": {"mlp": {"widths": [128, 64]}, "cnn": {"channels": [8, 16], "hidden": 64},
               "transformer": {"patch": [2, 2], "d_model": 48, "n_layers": 2, "n_heads": 4}},
    "mnist1d": {"mlp": {"widths": [128, 64]}, "cnn": {"channels": [8, 16], "hidden": 64},
                "transformer": {"patch": [4], "d_model": 48, "n_layers": 2, "n_heads": 4}},
}


@dataclass(frozen=True)
class Config:
    """Settings of the universality run (every field is a command-line flag: --field value)."""

    quick: bool = False
    """Shrink everything (2 seeds, few epochs, small baselines) for CI and a first look."""
    data: Literal["digits", "mnist1d"] = "digits"
    """Embedded dataset: sklearn digits (8x8 images) or MNIST-1D (generated locally)."""
    archs: tuple[str, ...] = ("mlp", "cnn", "transformer")
    """Architectures of the zoo (registry names of univ.models)."""
    seeds: int = 3
    """Trained networks per architecture (different initialisation and batch order)."""
    epochs: int = 30
    """Training epochs per network."""
    metrics: tuple[str, ...] = ("linear_cka", "linear_cka_debiased", "svcca", "pwcca")
    """Similarity metrics (names of univ.similarity.METRICS)."""
    n_permutations: int = 10
    """Row-shuffled permutations per similarity value (the permutation baseline)."""
    n_bootstrap: int = 10
    """Bootstrap resamples per similarity value (the confidence interval)."""
    sae: bool = True
    """Stage 2: train an SAE per model and match features across models."""
    sae_expansion: int = 4
    """SAE width as a multiple of the layer width."""
    sae_k: int = 8
    """Active latents per sample of the TopK SAEs."""
    sae_steps: int = 2000
    """Optimizer steps per SAE (a cap: the fit stops earlier once its loss plateaus; --quick uses 400)."""
    adversarial: bool = True
    """Stage 3: PGD attacks, transfer matrix and projections onto the SAE bases."""
    eps: float = 0.1
    """L-inf radius of the PGD attacks (inputs live in [0, 1] for digits; scaled by the data's std otherwise)."""
    n_attack: int = 300
    """Test inputs attacked per model."""
    device: str = "cpu"
    """Where the zoo trains: "cpu", "cuda" or "auto" (the analysis itself runs on the CPU: its tensors are small)."""
    seed: int = 0
    """Offset of the model seeds (seeds used: seed, seed+1, ...)."""

    def __post_init__(self):
        from univ.models import MODELS
        from univ.similarity import METRICS

        for a in self.archs:
            if a not in MODELS or a == "token_transformer":
                raise univ._checks.unknown_name_error("architecture", a, ["mlp", "cnn", "transformer"])
        if self.data not in ARCH_CFGS:
            raise univ._checks.unknown_name_error("dataset", self.data, list(ARCH_CFGS))
        for m in self.metrics:
            if m not in METRICS:
                raise univ._checks.unknown_name_error("metric", m, METRICS)
        if self.seeds < 1 or self.epochs < 0:
            raise ValueError(f"seeds must be >= 1 and epochs >= 0, got seeds={self.seeds}, epochs={self.epochs}")
        if self.seeds < 2 and len(self.archs) < 2:
            raise ValueError("need two models to compare: seeds >= 2 or at least two archs")

    def effective(self) -> dict:
        """The sizes actually used (``quick`` shrinks them)."""
        if self.quick:
            return {"seeds": min(self.seeds, 2), "epochs": min(self.epochs, 6), "n_permutations": min(
                self.n_permutations, 3), "n_bootstrap": min(self.n_bootstrap, 3), "n_attack": min(self.n_attack, 100),
                "sae_steps": 400, "n_test": 300}
        return {"seeds": self.seeds, "epochs": self.epochs, "n_permutations": self.n_permutations,
                "n_bootstrap": self.n_bootstrap, "n_attack": self.n_attack, "sae_steps": self.sae_steps,
                "n_test": None}


def _category(a: ZooEntry, b: ZooEntry) -> str:
    if a.trained and b.trained:
        return "same arch, different seed" if a.arch == b.arch else "different arch"
    if not a.trained and not b.trained:
        return "random init, same arch" if a.arch == b.arch else "random init, different arch"
    return "trained vs its own init"


def model_pairs(entries: list[ZooEntry]) -> list[tuple[ZooEntry, ZooEntry]]:
    """Pairs compared: same-arch seed pairs, cross-arch pairs at equal seed index, the same pairs of
    untrained copies (baseline), and each trained model against its own initialisation."""
    by = {(e.arch, e.seed, e.trained): e for e in entries}
    archs = list(dict.fromkeys(e.arch for e in entries))
    seeds = sorted({e.seed for e in entries})
    pairs = []
    for trained in (True, False):
        for a in archs:
            for s1, s2 in itertools.combinations(seeds, 2):
                if (a, s1, trained) in by and (a, s2, trained) in by:
                    pairs.append((by[a, s1, trained], by[a, s2, trained]))
        for a1, a2 in itertools.combinations(archs, 2):
            for s in seeds:
                if (a1, s, trained) in by and (a2, s, trained) in by:
                    pairs.append((by[a1, s, trained], by[a2, s, trained]))
    pairs += [(by[k], by[k[0], k[1], False]) for k in by if k[2] and (k[0], k[1], False) in by]
    return pairs


def hidden_layers(entry: ZooEntry) -> list[str]:
    """Representation layers without the logits."""
    return entry.model.layers[:-1]


def similarity_stage(cfg: Config, entries, acts, eff, report: Report) -> pd.DataFrame:
    rows = []
    pairs = model_pairs(entries)
    for a, b in tqdm(pairs, desc="similarity"):
        trained_pair = a.trained and b.trained
        df = univ.similarity.compare(
            {k: v for k, v in acts[a.id].items() if k in hidden_layers(a)},
            {k: v for k, v in acts[b.id].items() if k in hidden_layers(b)},
            metrics=list(cfg.metrics),
            baseline="permutation" if trained_pair else None, n_permutations=eff["n_permutations"],
            ci=0.95 if trained_pair else None, n_bootstrap=eff["n_bootstrap"], seed=cfg.seed)
        df.insert(0, "model_b", b.id)
        df.insert(0, "model_a", a.id)
        df.insert(0, "category", _category(a, b))
        rows.append(df)
    sim = pd.concat(rows, ignore_index=True)
    report.add_table("similarity", sim, "Every layer pair of every compared model pair (hidden layers; logits "
                     "excluded). `baseline_mean`/`p_value`: the same metric with the rows of one side shuffled "
                     f"({eff['n_permutations']} permutations); `ci_low`/`ci_high`: 95% bootstrap interval over "
                     f"test inputs ({eff['n_bootstrap']} resamples). Computed for trained pairs.", inline=False)
    return sim


def _last_hidden(df: pd.DataFrame, entries) -> pd.DataFrame:
    last = {e.id: hidden_layers(e)[-1] for e in entries}
    keep = [last[r.model_a] == r.layer_a and last[r.model_b] == r.layer_b for r in df.itertuples()]
    return df[keep]


def similarity_summary(sim: pd.DataFrame, entries, report: Report) -> pd.DataFrame:
    """Per category and metric: the last-hidden-layer similarity and the mean best-match over layers."""
    best = (sim.groupby(["category", "model_a", "model_b", "metric", "layer_a"])["value"].max()
            .groupby(["category", "model_a", "model_b", "metric"]).mean().rename("best_match"))
    last = _last_hidden(sim, entries).set_index(["category", "model_a", "model_b", "metric"])
    per_pair = last[["value", "baseline_mean", "p_value"]].join(best)
    g = per_pair.groupby(["category", "metric"])
    summary = pd.DataFrame({
        "n_pairs": g.size(), "last_hidden": g["value"].mean(), "last_hidden_sd": g["value"].std(),
        "permutation_baseline": g["baseline_mean"].mean(), "max_p_value": g["p_value"].max(),
        "best_match": g["best_match"].mean()}).reset_index()
    rand = {("different arch", m): v for m, v in summary[summary.category == "random init, different arch"]
            .set_index("metric")["last_hidden"].items()}
    rand.update({("same arch, different seed", m): v for m, v in summary[
        summary.category == "random init, same arch"].set_index("metric")["last_hidden"].items()})
    summary.insert(5, "random_init_baseline", [rand.get((c, m), np.nan) for c, m in
                                               zip(summary.category, summary.metric)])
    order = ["same arch, different seed", "different arch", "trained vs its own init", "random init, same arch",
             "random init, different arch"]
    summary["category"] = pd.Categorical(summary.category, order, ordered=True)
    summary = summary.sort_values(["metric", "category"]).reset_index(drop=True)
    summary["category"] = summary["category"].astype(str)
    return summary


def similarity_figures(sim: pd.DataFrame, entries, metric: str, report: Report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = [e for e in entries if e.trained]
    firsts = {}
    for e in trained:
        firsts.setdefault(e.arch, e)
    reps = list(firsts.values())
    pairs = [(a, b) for a, b in itertools.combinations_with_replacement(reps, 2)]
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.axis("off")
    for ax, (a, b) in zip(axes.flat, pairs):
        if a.id == b.id:  # a model against another seed of the same architecture
            b = next((e for e in trained if e.arch == a.arch and e.id != a.id), None)
            if b is None:
                ax.axis("off")
                continue
        sub = sim[(sim.model_a == a.id) & (sim.model_b == b.id) & (sim.metric == metric)]
        if sub.empty:
            sub = sim[(sim.model_a == b.id) & (sim.model_b == a.id) & (sim.metric == metric)]
            a, b = b, a
        grid = sub.pivot(index="layer_a", columns="layer_b", values="value")
        grid = grid.loc[[l for l in hidden_layers(a) if l in grid.index], [l for l in hidden_layers(b)
                                                                              if l in grid.columns]]
        heatmap(grid, title=f"{a.id} vs {b.id}", ax=ax)
        ax.set_xlabel(b.id)
        ax.set_ylabel(a.id)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{metric}: layer x layer (hidden layers)", fontsize=10)
    fig.tight_layout()
    report.add_figure(f"heatmap_{metric}", fig, f"Layer x layer {metric} between the first seed of each "
                      "architecture (and two seeds of the same architecture on the diagonal panels).")


def run(cfg: Config) -> Report:
    eff = cfg.effective()
    device = univ.utils.resolve_device(cfg.device)
    data = univ.data.load(cfg.data)
    if eff["n_test"]:
        data = data.subset(n_test=eff["n_test"])
    report = Report("universality", summary="similarity_summary")
    report.add_text("Setup", f"Data: {cfg.data} ({len(data.x_train)} train / {len(data.x_test)} test). "
                    f"Architectures {list(cfg.archs)} x {eff['seeds']} seeds, {eff['epochs']} epochs; untrained "
                    "copies of every network serve as the random-init baseline.")
    entries = zoo(cfg.archs, [cfg.seed + i for i in range(eff["seeds"])], data,
                  TrainConfig(epochs=eff["epochs"], seed=cfg.seed), model_cfgs=ARCH_CFGS[cfg.data], device=device)
    for e in entries:
        e.model.cpu()
    models = pd.DataFrame([{"model": e.id, "arch": e.arch, "seed": e.seed, "trained": e.trained,
                            "params": univ.models.n_params(e.model), "layers": ", ".join(hidden_layers(e)),
                            "train_acc": e.metrics["train_acc"], "test_acc": e.metrics["test_acc"]} for e in entries])
    report.add_table("models", models, "The zoo. Untrained copies (`-init`) are the baseline every similarity "
                     "and matching number is compared with.")
    acts = {e.id: univ.capture(e.model, data.x_test, e.model.layers, reduce="mean", cache=True) for e in
            tqdm(entries, desc="capture")}
    sim = similarity_stage(cfg, entries, acts, eff, report)
    summary = similarity_summary(sim, entries, report)
    report.tables["similarity_summary"] = summary
    report.sections.insert(2, ("similarity_summary", _summary_sentence(summary)))
    for metric in cfg.metrics:
        similarity_figures(sim, entries, metric, report)
    if cfg.sae:
        sae_models = feature_stage(cfg, eff, entries, data, report)
    if cfg.adversarial:
        adversarial_stage(cfg, eff, entries, data, report, sae_models if cfg.sae else None)
    return report


def _summary_sentence(summary: pd.DataFrame) -> str:
    parts = []
    for metric, g in summary.groupby("metric", sort=False):
        v = g.set_index("category")["last_hidden"]
        same, diff = v.get("same arch, different seed"), v.get("different arch")
        r_same, r_diff = v.get("random init, same arch"), v.get("random init, different arch")
        bits = []
        if same is not None and not np.isnan(same):
            bits.append(f"same-arch {same:.2f} (random-init baseline {r_same:.2f})" if r_same is not None
                        else f"same-arch {same:.2f}")
        if diff is not None and not np.isnan(diff):
            bits.append(f"cross-arch {diff:.2f} (random-init baseline {r_diff:.2f})" if r_diff is not None
                        else f"cross-arch {diff:.2f}")
        parts.append(f"{metric}: " + ", ".join(bits))
    return ("Last-hidden-layer similarity per pair category, against two baselines: the same pairs of "
            "untrained networks (`random_init_baseline`) and the row-permutation baseline "
            "(`permutation_baseline`, with the largest p-value). `best_match`: mean over layers of A of the "
            "best-matching layer of B. In this run: " + "; ".join(parts) + ".")

"""Universality across architectures: representation similarity, shared SAE features, adversarial directions.

The main job (``univ run universality``): an MLP, a CNN and a TransformerLens transformer, several seeds
each, trained on the same task, plus their untrained initialisations as the baseline. Stages
(``analyses/_universality_stages.py``; each returns tables, ``run`` builds the report):
1. similarity: layer x layer linear CKA, debiased CKA, SVCCA and PWCCA for every model pair, with
   permutation baselines and bootstrap intervals; summaries by pair category.
2. features: an SAE per model at its last hidden layer, matched across models against shuffled baselines.
3. adversarial: PGD examples per model, the transfer matrix, and whether the SAE latents an attack moves
   most are ones the other models share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_choices, check_device, check_range

ARCH_CFGS = {
    "digits": {"mlp": {"widths": [128, 64]}, "cnn": {"channels": [8, 16], "hidden": 64},
               "transformer": {"patch": [2, 2], "d_model": 48, "n_layers": 2, "n_heads": 4}},
    "mnist1d": {"mlp": {"widths": [128, 64]}, "cnn": {"channels": [8, 16], "hidden": 64},
                "transformer": {"patch": [4], "d_model": 48, "n_layers": 2, "n_heads": 4}},
}


def last_hidden_width(data: str, arch: str) -> int:
    """Width of the layer the SAE of ``arch`` is trained on (its last hidden layer)."""
    c = ARCH_CFGS[data][arch]
    return {"mlp": lambda: c["widths"][-1], "cnn": lambda: c["hidden"], "transformer": lambda: c["d_model"]}[arch]()


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the universality run (every field is a command-line flag: --field value)."""

    QUICK: ClassVar[dict] = {"seeds": 2, "epochs": 6, "n_permutations": 200, "n_bootstrap": 200, "n_attack": 100,
                             "sae_steps": 400, "n_test": 300, "pgd_steps": 10, "match_permutations": 20}
    data: Literal["digits", "mnist1d"] = "digits"
    """Embedded dataset: sklearn digits (8x8 images) or MNIST-1D (generated locally)."""
    archs: tuple[str, ...] = ("mlp", "cnn", "transformer")
    """Architectures of the zoo (registry names of univ.models: mlp, cnn, transformer)."""
    seeds: int = 3
    """Trained networks per architecture (different initialisation and batch order)."""
    epochs: int = 30
    """Training epochs per network."""
    n_test: int | None = None
    """Test inputs used for every comparison and attack (None: the whole test split)."""
    metrics: tuple[str, ...] = ("linear_cka", "linear_cka_debiased", "svcca", "pwcca")
    """Similarity metrics (names of univ.similarity.METRICS)."""
    n_permutations: int = 1000
    """Row-shuffled permutations per similarity value (the permutation baseline; at most: draws stop once 20
    exceed the value). The smallest reachable p-value is 1 / (1 + n_permutations)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples per similarity value (the 95% interval: BCa for CKA, basic for SVCCA/PWCCA)."""
    sae: bool = True
    """Stage 2: train an SAE per model and match features across models."""
    sae_expansion: int = 4
    """SAE width as a multiple of the layer width."""
    sae_k: int = 8
    """Active latents per sample of the TopK SAEs (at most sae_expansion x the narrowest layer's width)."""
    sae_steps: int = 2000
    """Optimizer steps per SAE (a cap: the fit stops earlier once its loss plateaus)."""
    match_permutations: int = 100
    """Permutations (shuffled pairings) behind the decoder-SVCCA baseline of each matched SAE pair."""
    adversarial: bool = True
    """Stage 3: PGD attacks, transfer matrix and projections onto the SAE bases."""
    eps: float = 0.1
    """L-inf radius of the PGD attacks (inputs live in [0, 1] for digits; scaled by the data's std otherwise)."""
    pgd_steps: int = 20
    """PGD iterations per attack."""
    n_attack: int = 300
    """Test inputs attacked per model."""
    device: str = "cpu"
    """Where every stage runs: zoo training, capture, SAE training, attacks and the similarity grid ("cpu", "cuda",
    "cuda:N", "mps" or "auto"); results equal the CPU's within the tolerances benchmarks/gpu.py checks."""
    seed: int = 0
    """Offset of the model seeds (seeds used: seed, seed+1, ...)."""

    def validate(self):
        check_choices(self, "archs", ARCH_CFGS[self.data])
        for name in ("seeds", "n_permutations", "n_bootstrap", "sae_expansion", "sae_k", "sae_steps",
                     "match_permutations", "pgd_steps", "n_attack"):
            check_range(self, name, low=1)
        check_range(self, "epochs", low=0)
        check_range(self, "eps", low=0)
        if self.n_test is not None:
            check_range(self, "n_test", low=10)
        if self.seeds < 2 and len(set(self.archs)) < 2:
            raise SettingError("seeds", f"need two models to compare: seeds >= 2 or two archs, got seeds={self.seeds} "
                               f"and archs={list(self.archs)}")
        narrowest = min(self.archs, key=lambda a: last_hidden_width(self.data, a))
        d_sae = self.sae_expansion * last_hidden_width(self.data, narrowest)
        if self.sae and self.sae_k > d_sae:
            raise SettingError("sae_k", f"must be <= {d_sae} (sae_expansion {self.sae_expansion} x {narrowest}'s "
                               f"last hidden width {last_hidden_width(self.data, narrowest)}), got {self.sae_k}")
        check_device(self)
        import univ.similarity  # the metric registry needs torch: checked last, so range errors come at once

        check_choices(self, "metrics", univ.similarity.METRICS)


def run(cfg: Config):
    import pandas as pd

    import univ
    from univ.cache import zoo
    from univ.report import Report
    from univ.train import TrainConfig

    from . import _universality_stages as S

    device = univ.utils.resolve_device(cfg.device)
    data = univ.data.load(cfg.data)
    if cfg.n_test:
        data = data.subset(n_test=cfg.n_test)
    entries = zoo(cfg.archs, [cfg.seed + i for i in range(cfg.seeds)], data,
                  TrainConfig(epochs=cfg.epochs, seed=cfg.seed), model_cfgs=ARCH_CFGS[cfg.data], device=device)
    for e in entries:
        e.model.cpu()
    models = pd.DataFrame([{"model": e.id, "arch": e.arch, "seed": e.seed, "trained": e.trained,
                            "params": univ.models.n_params(e.model), "layers": ", ".join(S.hidden_layers(e)),
                            "train_acc": e.metrics["train_acc"], "test_acc": e.metrics["test_acc"]} for e in entries])
    acts = S.capture_stage(entries, data.x_test, device)
    warnings_seen: list[str] = []
    sim = S.similarity_stage(cfg, entries, acts, warnings_seen, device)
    summary = S.similarity_summary(sim, entries)

    report = Report("universality", summary="similarity_summary")
    report.add_text("Setup", f"Data: {cfg.data} ({len(data.x_train)} train / {len(data.x_test)} test). "
                    f"Architectures {list(cfg.archs)} x {cfg.seeds} seeds, {cfg.epochs} epochs; untrained "
                    "copies of every network serve as the random-init baseline.")
    report.add_table("models", models, "The zoo. Untrained copies (`-init`) are the baseline every similarity "
                     "and matching number is compared with.")
    report.add_table("similarity_summary", summary, S.summary_sentence(summary))
    report.add_table("similarity", sim, "Every layer pair of every compared model pair (hidden layers; logits "
                     "excluded). `baseline_mean`/`p_value`: the same metric with the rows of one side shuffled "
                     f"(up to {cfg.n_permutations} permutations, stopping after 20 exceed the value; smallest "
                     f"reachable p = 1/{cfg.n_permutations + 1} = {1 / (cfg.n_permutations + 1):.2g}, `p_min`); "
                     "`q_value`: Benjamini-Hochberg over every p-value of this table; `calibrated`: (value - "
                     "baseline_mean) / (1 - baseline_mean); `ci_low`/`ci_high`: 95% bootstrap interval over test "
                     f"inputs ({cfg.n_bootstrap} resamples; BCa for CKA, the basic interval for SVCCA/PWCCA, "
                     "whose sample values are biased upwards), widened to contain the value where flagged "
                     "`ci_widened`. Computed for trained pairs.", inline=False)
    for metric in cfg.metrics:
        report.add_figure(f"heatmap_{metric}", S.similarity_figure(sim, entries, metric),
                          f"Layer x layer {metric} between the first seed of each architecture (and two seeds of "
                          "the same architecture on the diagonal panels).")
    saes = None
    if cfg.sae:
        saes, quality, matching = S.feature_stage(cfg, entries, data, device)
        report.add_table("sae_quality", quality, S.QUALITY_TEXT)
        report.add_table("feature_matching", matching, S.MATCHING_TEXT)
        match_summary = S.matching_summary(matching)
        report.add_table("feature_matching_summary", match_summary, S.matching_sentence(match_summary))
        report.add_dashboard("feature_dashboard", S.feature_dashboard(saes, entries, data), S.DASHBOARD_TEXT)
    if cfg.adversarial:
        adv = S.adversarial_stage(cfg, entries, data, saes, device)
        report.add_table("attacks", adv.attacks, S.attacks_text(adv.eps, cfg.pgd_steps, adv.n))
        report.add_table("transfer", adv.transfer, "Transfer rate: among test inputs that the source's PGD example "
                         "fools and that both models classify correctly when clean, the fraction that also fools the "
                         "target (diagonal = 1 by construction). Shown as the figure below.", inline=False)
        report.add_figure("transfer_matrix", S.transfer_figure(adv.transfer),
                          "Transfer matrix; blocks of one architecture show whether attacks transfer more within "
                          "architectures than across them.")
        if adv.projection is not None:
            report.add_table("projection", adv.projection, S.projection_sentence(adv.projection))
            report.add_table("adversarial_shared_latents", adv.shared, S.shared_sentence(adv.shared))
    from ._universality_findings import findings

    text, table = findings(sim, {e.id: S.hidden_layers(e)[-1] for e in entries},
                           matching if cfg.sae else None,
                           adv.projection if cfg.adversarial else None, adv.shared if cfg.adversarial else None,
                           warnings_seen, seed=cfg.seed)
    report.add_findings(text, table)
    return report

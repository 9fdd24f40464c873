"""Feature atlas: which features does each subset of models share? One crosscoder over the whole zoo.

``univ run feature_atlas``: an MLP, a CNN and a transformer, several seeds each, plus their untrained twins,
on the same inputs (last hidden layer, patch-averaged). Stages (``analyses/_feature_atlas_stages.py``):
1. one BatchTopK crosscoder over all models, twice (two seeds): latents tagged with the subset of models they
   live in (relative decoder norms, ``univ.sae.latent_tags``), Latent Scaling on every exclusive tag, only
   latents stable across the two seeds counted; counts per category (all trained models, across
   architectures, one architecture's seeds, one model, with untrained twins) with bootstrap intervals;
2. nulls: the same pipeline (two seeds, stability filter) on inputs whose pairing across models is
   shuffled, and the untrained twins inside the crosscoder; the seed ceiling (the fraction of latents that
   recur across the two seeds at all);
3. pairwise SAE matching on the same models (one TopK SAE each, activation correlation) for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_choices, check_device, check_range

from .universality import ARCH_CFGS


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the feature-atlas run (every field is a command-line flag: --field value)."""

    QUICK: ClassVar[dict] = {"seeds": 2, "epochs": 4, "d_sae": 256, "k": 8, "steps": 250, "n_bootstrap": 200,
                             "sae_steps": 200}
    data: Literal["digits", "mnist1d"] = "digits"
    """Embedded dataset: sklearn digits (8x8 images) or MNIST-1D (generated locally)."""
    archs: tuple[str, ...] = ("mlp", "cnn", "transformer")
    """Architectures of the zoo (registry names of univ.models: mlp, cnn, transformer)."""
    seeds: int = 3
    """Trained networks per architecture (each with its untrained twin)."""
    epochs: int = 30
    """Training epochs per network."""
    d_sae: int = 1024
    """Crosscoder latents."""
    k: int = 16
    """Mean active latents per input of the BatchTopK crosscoder (at most d_sae)."""
    steps: int = 3000
    """Optimizer steps per crosscoder (a cap: the fit stops once its loss plateaus)."""
    threshold: float = 1 / 9
    """Relative decoder norm at which a latent counts as living in a model (Lindsey et al.'s 0.1/0.9 cut)."""
    stable_cosine: float = 0.7
    """Decoder cosine with its partner in the second seed's crosscoder at which a latent counts as stable."""
    n_bootstrap: int = 1000
    """Bootstrap resamples behind every interval."""
    pairwise: bool = True
    """Stage 3: one TopK SAE per trained model, matched pairwise, for comparison."""
    sae_steps: int = 2000
    """Optimizer steps per pairwise SAE."""
    device: str = "cpu"
    """Where the zoo trains: "cpu", "cuda" or "auto" (the dictionaries train on the CPU: they are small)."""
    seed: int = 0
    """Offset of the model seeds, and the first crosscoder's seed (the second uses seed + 1)."""

    def validate(self):
        check_choices(self, "archs", ARCH_CFGS[self.data])
        for name in ("seeds", "d_sae", "k", "steps", "n_bootstrap", "sae_steps"):
            check_range(self, name, low=1)
        check_range(self, "epochs", low=0)
        check_range(self, "threshold", low=0, high=1, low_open=True)
        check_range(self, "stable_cosine", low=-1, high=1)
        if self.k > self.d_sae:
            raise SettingError("k", f"must be <= d_sae ({self.d_sae}), got {self.k}")
        if self.seeds < 2 and len(set(self.archs)) < 2:
            raise SettingError("seeds", f"need models to compare: seeds >= 2 or two archs, got seeds={self.seeds} "
                               f"and archs={list(self.archs)}")
        check_device(self)


def run(cfg: Config):
    from univ.report import Report

    from . import _feature_atlas_stages as S

    zoo, acts = S.zoo_activations(cfg)
    atlas = S.atlas_stage(cfg, zoo, acts)
    report = Report("feature_atlas", summary="categories")
    report.add_text("Setup", S.setup_text(cfg, zoo, atlas))
    report.add_table("models", S.models_table(zoo, atlas), "The zoo (untrained twins `-init` are part of the "
                     "crosscoder) and the crosscoder's fit per model (FVU on held-out inputs).")
    report.add_table("categories", atlas.categories, S.categories_text(atlas))
    report.add_table("subsets", atlas.subsets, "Counted (live and seed-stable) latents per exact subset of models, "
                     f"with 95% bootstrap intervals ({cfg.n_bootstrap} resamples of the counted latents); "
                     "`null_*`: the same pipeline on shuffled pairings.", inline=False)
    report.add_table("seed_ceiling", atlas.ceiling, "Seed ceiling: the fraction of latents of the first crosscoder "
                     "that recur in the second (one-to-one decoder matching, cosine >= stable_cosine), on paired "
                     "and on shuffled inputs; no shared fraction can be read above it.")
    report.add_figure("subset_bars", S.upset_figure(atlas), "Counted latents per category (bars, with 95% "
                      "intervals), real pairing against the shuffled-pairing null, in the manner of an UpSet plot.")
    report.add_figure("decoder_norms", S.norm_histograms(atlas), "Relative decoder norm of every live latent in "
                      "each model (1: the model it writes to most; below the dashed line: absent).")
    report.add_figure("seed_cosines", S.cosine_figure(atlas), "Decoder cosine of each latent with its partner in "
                      "the second seed's crosscoder, shared latents against exclusive ones.")
    pw = None
    if cfg.pairwise:
        pw = S.pairwise_stage(cfg, zoo, acts)
        report.add_table("pairwise_matching", pw, S.pairwise_text(pw))
    report.add_findings(S.findings_text(atlas.categories, atlas.ceiling, pw))
    return report

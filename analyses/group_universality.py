"""Universality with a known answer: group composition (Chughtai, Chan & Nanda 2023) and a benchmark of univ's measures.

Networks trained to compose elements of a finite group (a, b) -> a * b learn the group's irreducible
representations; which irreps each seed uses (its key irreps) can be read off exactly, so whether two seeds
share an algorithm is a fact. Stages (``analyses/_group_universality_stages.py``):
1. train: the paper's one-hidden-layer MLP (and optionally univ's one-layer TransformerLens transformer), many
   seeds, full-batch AdamW with weight decay until the test accuracy settles, checkpoints kept.
2. irreps: per seed and irrep, the logit trace similarity, the fraction of variance of the embeddings,
   unembedding, hidden activations and logits in the irrep's subspace, excluded loss; the key irreps, the
   restricted vs excluded loss, and the order in which the key irreps are learned (from the checkpoints).
3. paper: the paper's S5 numbers beside ours.
4. benchmark: for every pair of seeds, truth = same key irreps; how well each univ similarity measure on the
   hidden activations, and SAE matching, separate same from different pairs (AUC with a bootstrap
   interval), and whether SAE latents align with irrep subspaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, SettingError, check_choices, check_range

DEFAULT_METRICS = ("linear_cka", "linear_cka_debiased", "rbf_cka", "cca", "svcca", "pwcca", "procrustes", "rsa",
                   "mutual_knn")


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the group-composition run (every field is a command-line flag: --field value)."""

    QUICK: ClassVar[dict] = {"group": "S4", "seeds": 4, "max_steps": 1000, "sae_steps": 300, "n_rows": 576,
                             "n_bootstrap": 200, "train_fraction": 0.8}
    group: str = "S5"
    """The group: C<n>, D<n>, S<n> or A<n> (e.g. S5, S4, A5, D6, C59)."""
    archs: tuple[str, ...] = ("mlp",)
    """Models: "mlp" (the paper's MLP) and/or "transformer" (univ's one-layer TransformerLens transformer)."""
    seeds: int = 8
    """Trained networks per architecture (seeds seed, seed+1, ...)."""
    train_fraction: float = 0.6
    """Fraction of the |G|^2 pairs used for training (the paper: 0.4; more trains faster on a CPU)."""
    width: int = 64
    """MLP hidden width (each embedding has width/2) or the transformer's d_model."""
    max_steps: int = 2000
    """Cap on full-batch AdamW steps (training stops earlier once the test accuracy settles above 0.99)."""
    lr: float = 1e-2
    """AdamW learning rate (the paper: 1e-3 over far more steps)."""
    weight_decay: float = 1.0
    """AdamW weight decay (the paper: 1)."""
    checkpoint_every: int = 100
    """Steps between the checkpoints the learning order is read from."""
    patience: int = 5
    """Stop once the test accuracy (> 0.99) changed by < 0.001 over this many checkpoints; raise it to keep
    training after the networks generalise (the paper trains far past that point)."""
    key_threshold: float = 0.05
    """An irrep is key when its rho(abc^-1) subspace holds at least this fraction of the logit variance."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Similarity measures benchmarked (names of univ.similarity.METRICS), on the hidden activations."""
    n_rows: int = 2000
    """Input pairs (rows) the similarity measures and SAEs see (a fixed random subset of the grid)."""
    sae: bool = True
    """Benchmark SAE matching too (a TopK SAE per seed on the hidden activations, univ.sae.match)."""
    sae_expansion: int = 2
    """SAE width as a multiple of the hidden width."""
    sae_k: int = 8
    """Active latents per input of the TopK SAEs."""
    sae_steps: int = 1000
    """Optimizer steps per SAE (a cap)."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of the seed pairs behind each AUC interval."""
    seed: int = 0
    """Offset of the model seeds; also seeds the data split, the row subset and the bootstrap."""

    def validate(self):
        check_choices(self, "archs", ("mlp", "transformer"))
        if not self.archs:
            raise SettingError("archs", "need at least one of ['mlp', 'transformer']")
        try:
            from univ.groups import FAMILIES
        except ImportError:  # pragma: no cover
            FAMILIES = {}
        if not (isinstance(self.group, str) and self.group[:1].upper() in FAMILIES and self.group[1:].isdigit()):
            raise SettingError("group", f"{self.group!r} is not a group name; use C<n>, D<n>, S<n> or A<n> "
                               "(e.g. S5, A5, D6, C59)")
        n = int(self.group[1:])
        low = {"C": 2, "D": 3, "S": 3, "A": 4}[self.group[0].upper()]
        if n < low or (self.group[0].upper() in "SA" and n > 6):
            raise SettingError("group", f"{self.group!r}: n must be >= {low} (and <= 6 for S_n, A_n)")
        check_range(self, "seeds", low=2)
        check_range(self, "train_fraction", low=0, high=1, low_open=True, high_open=True)
        for name in ("width", "max_steps", "checkpoint_every", "patience", "sae_expansion", "sae_k", "sae_steps",
                     "n_bootstrap"):
            check_range(self, name, low=1)
        check_range(self, "n_rows", low=20)
        check_range(self, "lr", low=0, low_open=True)
        check_range(self, "weight_decay", low=0)
        check_range(self, "key_threshold", low=0, high=1)
        if "transformer" in self.archs and self.width % 4:
            raise SettingError("width", f"the transformer has 4 heads: width must be a multiple of 4, got {self.width}")
        if self.width < 2:
            raise SettingError("width", f"must be >= 2 (each MLP embedding has width/2), got {self.width}")
        if self.sae and self.sae_k > self.sae_expansion * self.width:
            raise SettingError("sae_k", f"must be <= sae_expansion x width = {self.sae_expansion * self.width}, "
                               f"got {self.sae_k}")
        import univ.similarity  # the metric registry needs torch: checked last, so range errors come at once

        check_choices(self, "metrics", univ.similarity.METRICS)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_group_universality_stages.py``)."""
    from ._group_universality_stages import run as run_stages

    return run_stages(cfg)

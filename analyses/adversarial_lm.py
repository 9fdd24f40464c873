"""Adversarial examples for language models, read in SAE bases: is r moving in an interesting direction?

Szegedy et al.'s question, asked of small causal language models trained here on the embedded corpus (two
architectures, several seeds): GCG token edits (an adversarial suffix, or in-place substitutions of the
prompt's last tokens) that make a chosen token the next-token prediction, GCG loss maximisation that pushes
the clean prediction off, embedding-space PGD (L2 and L-inf) with its nearest-token projection, and an
SAE-targeted GCG that switches on an SAE latent while keeping the output (Li et al. 2026). Controls: random
token substitutions with the same number of edits, and random embedding perturbations of the same norm.

The change r of the residual stream at the last position, at every layer, is decomposed in a TopK SAE's
codes and decoder, the neurons, the PCA basis of clean activations, a random orthonormal basis and a random
dictionary (``univ.adversarial.project``), attack against control, paired per prompt. Then: which latents move,
whether their partners in the other models' SAEs (correlation matching on the same tokens) move too, and
whether that sharing predicts the transfer of adversarial suffixes to the other models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the adversarial-LM analysis (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"seeds": (0, 1), "train_steps": 200, "n_prompts": 10, "gcg_steps": 12,
                             "search_width": 64, "pgd_steps": 12, "sae_steps": 600, "n_sae_prompts": 6,
                             "n_sae_contexts": 300}

    archs: tuple[Literal["tl", "gpt2", "llama"], ...] = ("tl", "llama")
    """Architectures: "tl" a TransformerLens native bridge (GPT-2 style), "llama" / "gpt2" HuggingFace models
    built from tiny configs."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds per architecture (initialisation and data order)."""
    d_model: int = 64
    """Width of every model."""
    n_layers: int = 2
    """Blocks of every model; the residual stream after each block is read."""
    vocab_size: int = 320
    """Size of the byte-level BPE vocabulary trained on the corpus."""
    train_steps: int = 1500
    """Training steps per model (batch 32, 32-token contexts)."""
    n_prompts: int = 30
    """Held-out prompts attacked per model."""
    prompt_len: int = 16
    """Tokens per prompt ([BOS] included)."""
    n_edit: int = 6
    """Editable tokens: the suffix length, and the prompt's last tokens that in-place edits may change."""
    gcg_steps: int = 40
    """GCG steps per prompt (it stops at the first success)."""
    search_width: int = 128
    """GCG candidates evaluated per step."""
    topk: int = 32
    """GCG substitutions kept per position from the gradient."""
    pgd_eps: float = 1.0
    """Embedding-PGD radius, in units of the median token-embedding norm (L2 over the edited positions; the
    L-inf radius is this divided by sqrt(n_edit x d_model), so both balls have comparable size)."""
    pgd_steps: int = 30
    """Embedding-PGD steps."""
    expansion: int = 4
    """SAE width as a multiple of d_model."""
    k: int = 8
    """Active latents per token of the TopK SAEs."""
    sae_steps: int = 2000
    """SAE training steps."""
    n_sae_contexts: int = 600
    """Training contexts whose every token's residual stream trains the SAEs (and matches latents)."""
    n_sae_prompts: int = 10
    """Prompts per model for the SAE-targeted attack."""
    seed: int = 0
    """Seed of prompts, targets, attacks and controls."""

    def validate(self):
        if not self.archs:
            raise SettingError("archs", "need at least one architecture")
        if not self.seeds:
            raise SettingError("seeds", "need at least one seed")
        if len(self.archs) * len(self.seeds) < 2:
            raise SettingError("seeds", "sharing and transfer need at least two models (archs x seeds)")
        for name in ("d_model", "n_layers", "train_steps", "gcg_steps", "search_width", "topk", "pgd_steps",
                     "expansion", "k", "sae_steps", "n_sae_prompts"):
            check_range(self, name, low=1)
        check_range(self, "n_prompts", low=4)
        check_range(self, "n_edit", low=1, high=8)
        check_range(self, "prompt_len", low=self.n_edit + 2, high=24)
        check_range(self, "vocab_size", low=259, high=4096)
        check_range(self, "pgd_eps", low=0, low_open=True)
        check_range(self, "n_sae_contexts", low=50)
        if self.d_model % 4:
            raise SettingError("d_model", f"must be divisible by the 4 attention heads, got {self.d_model}")
        if self.k > self.expansion * self.d_model:
            raise SettingError("k", f"must be <= expansion x d_model = {self.expansion * self.d_model}, got {self.k}")


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_adversarial_lm_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._adversarial_lm_stages import run as run_stages

    return run_stages(cfg)

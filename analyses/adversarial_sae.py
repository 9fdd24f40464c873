"""Adversarial perturbations read through sparse autoencoders: is the activation change sparse in an SAE basis?

Szegedy et al. (2013) asked whether adversarial perturbations move a network's representation "in an
interesting direction". Here, for standard and PGD-trained models on digits, a TopK SAE is fitted to a
hidden layer; L-inf PGD examples are made; and the change of the layer's activations is decomposed in
the SAE basis (its own codes, and its decoder directions by matching pursuit), the neuron basis, the PCA
basis of clean activations, a random orthonormal basis and a random dictionary of the SAE's size. The
same decomposition of equal-L2-norm random input perturbations, Gaussian noise of the same RMS, and
isotropic activation-space deltas gives the baselines. Further tables: the most-hit latents with their
class association, input-space attacks that raise or suppress one latent, steering along decoder
directions, transfer of standard and SAE-aligned adversarial examples between models, robust accuracy,
and the L-BFGS minimal distortions beside Szegedy et al.'s Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the adversarial-SAE analysis (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"archs": ("mlp",), "epochs": 15, "adv_train_steps": 5, "n_attack": 200,
                             "sae_steps": 1500, "n_targeted": 3, "n_lbfgs": 25, "search_steps": 6}

    archs: tuple[Literal["mlp", "cnn"], ...] = ("mlp", "cnn")
    """Architectures analysed, each standard and adversarially trained (without cnn, the CNN only serves as
    a transfer target). The layer is the last hidden one (mlp: act2, cnn: act3)."""
    epochs: int = 30
    """Training epochs per model."""
    eps: float = 0.1
    """L-inf radius of the attacks and of adversarial training (inputs in [0, 1])."""
    attack_steps: int = 20
    """PGD steps of the evaluated attacks."""
    adv_train_steps: int = 7
    """PGD steps per batch during adversarial training."""
    n_attack: int = 400
    """Test images attacked."""
    expansion: int = 4
    """SAE width as a multiple of the layer width."""
    k: int = 8
    """Active latents per sample of the TopK SAE."""
    sae_steps: int = 4000
    """SAE training steps."""
    n_targeted: int = 5
    """Class-selective latents used for feature-targeted attacks and steering."""
    n_lbfgs: int = 100
    """Images attacked with L-BFGS for the minimal-distortion table."""
    search_steps: int = 10
    """Rounds of the L-BFGS attack's search over its constant c."""
    seed: int = 0
    """Seed of the models, attacks and SAEs."""

    def validate(self):
        if not self.archs:
            raise SettingError("archs", "need at least one architecture")
        check_range(self, "eps", low=0, low_open=True)
        for name in ("epochs", "attack_steps", "adv_train_steps", "expansion", "k", "sae_steps", "n_targeted",
                     "n_lbfgs", "search_steps"):
            check_range(self, name, low=1)
        check_range(self, "n_attack", low=10)
        if self.k > self.expansion * 64:  # the narrowest SAE layer (mlp act2, cnn act3) has 64 units
            raise SettingError("k", f"must be <= {self.expansion * 64} (expansion x the layer width 64), got {self.k}")


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_adversarial_sae_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._adversarial_sae_stages import run as run_stages

    return run_stages(cfg)

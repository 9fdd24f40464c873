"""Ilyas et al. 2019 at CPU scale: robust (D_R) / non-robust (D_NR, D_rand, D_det) datasets and models trained on them.

Pipeline on sklearn digits (8x8, [0, 1]):
1. a standard MLP and an adversarially trained one (L2 PGD) on D;
2. D_R / D_NR: every training input re-synthesised, from a random other training input, to match the
   robust / standard model's penultimate representation (narrow: ``widths[-1]`` units for 64 pixels, so
   inversion cannot just copy the input);
3. D_rand / D_det: targeted L2 PGD on the standard model, relabelled with the target;
4. fresh standard models trained on each, evaluated on the *original* test set, clean and under L2 PGD;
5. the SAE view: do the standard model's SAE latents carry the (new) label of D_det inputs?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the robust-features reproduction (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"epochs": 15, "inv_steps": 300, "nr_steps": 40, "sae_steps": 1000, "n_eval": 200}

    arch: Literal["mlp", "cnn"] = "mlp"
    """Architecture of every model (the robust/standard teachers and the models trained on each set)."""
    widths: tuple[int, ...] = (256, 32)
    """MLP hidden widths; the last is the representation that is inverted (keep it << 64 pixels: at 128+
    the inversion lands within ~0.6 L2 of its source, i.e. copies it). For the CNN, widths[-1] is the width
    of its fully connected layer ``act3``, the one inverted."""
    epochs: int = 40
    """Training epochs of every model (standard, robust, and those trained on constructed sets)."""
    train_eps: float = 1.0
    """L2 radius of the PGD adversarial training of the robust model (two random digits are ~3 apart in L2;
    at 1.5 the MLP's clean accuracy drops to ~77%, at 2.0 it collapses to chance)."""
    train_steps: int = 7
    """PGD steps per batch during adversarial training."""
    eval_eps: float = 1.0
    """L2 radius of the PGD attack behind every robust accuracy: where the standard model is at ~0%, as in
    the paper (whose evaluation radius is half its training radius; 0.75 here leaves the standard MLP 12%)."""
    eval_steps: int = 20
    """PGD steps of the evaluation attack."""
    eps_curve: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)
    """L2 radii of the robustness curve (robust accuracy of every model at each radius)."""
    inv_steps: int = 1000
    """Representation-inversion steps (normalised-gradient descent), as in the paper."""
    inv_step_size: float = 0.1
    """Initial L2 step of the inversion."""
    nr_eps: float = 1.0
    """L2 radius of the targeted PGD that builds D_rand / D_det."""
    nr_steps: int = 100
    """Targeted PGD steps for D_rand / D_det."""
    sae_expansion: int = 4
    """SAE width as a multiple of the representation width (the SAE view)."""
    sae_k: int = 4
    """Active latents per input of the TopK SAE."""
    sae_steps: int = 3000
    """Cap on SAE training steps."""
    n_eval: int | None = None
    """Test inputs behind every evaluation (None: the whole test split)."""
    seed: int = 0

    def validate(self):
        if not self.widths or min(self.widths) < 1:
            raise SettingError("widths", f"need positive hidden widths, got {list(self.widths)}")
        for name in ("train_eps", "eval_eps", "nr_eps", "inv_step_size"):
            check_range(self, name, low=0, low_open=True)
        if not self.eps_curve or min(self.eps_curve) < 0:
            raise SettingError("eps_curve", f"need radii >= 0, got {list(self.eps_curve)}")
        for name in ("epochs", "inv_steps", "nr_steps", "train_steps", "eval_steps", "sae_expansion", "sae_k",
                     "sae_steps"):
            check_range(self, name, low=1)
        if self.sae_k > self.sae_expansion * self.widths[-1]:
            raise SettingError("sae_k", f"must be <= {self.sae_expansion * self.widths[-1]} (sae_expansion x "
                               f"widths[-1]), got {self.sae_k}")
        if self.n_eval is not None:
            check_range(self, "n_eval", low=10)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_robust_features_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._robust_features_stages import run as run_stages

    return run_stages(cfg)

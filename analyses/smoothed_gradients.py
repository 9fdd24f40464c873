"""Kaur et al. 2019 at CPU scale: are smoothed classifiers' gradients perceptually aligned like a robust model's?

On sklearn digits (8x8, [0, 1]), for test inputs x of class y and a random target t != y, the input
gradient of log p_t is compared across classifiers:
- a standard MLP and an adversarially trained one (L2 PGD), plain gradients;
- the smoothed classifier g(x) = E[softmax f(x + N(0, sigma^2))] (Monte Carlo) for a grid of sigma,
  with a base model trained under the same Gaussian noise (as in the paper), and, as a control, with the
  standard model as base; plus the plain gradient of each noise-trained base.
Perceptual alignment is measured three ways: cosine with the robust model's gradient, cosine with the
class-mean direction mu_t - mu_y, and a large-eps targeted L2 ascent whose result is judged by an
independent classifier, 1-nearest-neighbour on the training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the smoothed-gradients reproduction (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"epochs": 15, "n_samples": 128, "n_inputs": 60, "ascent_steps": 20,
                             "ascent_samples": 16}

    widths: tuple[int, ...] = (128, 64)
    """Hidden widths of every MLP."""
    epochs: int = 40
    """Training epochs of every model."""
    sigmas: tuple[float, ...] = (0.25, 0.5, 1.0)
    """Noise levels of the smoothed classifiers (and of their base models' training noise)."""
    n_samples: int = 512
    """Monte Carlo draws per smoothed gradient."""
    train_eps: float = 1.0
    """L2 radius of the robust model's PGD adversarial training (two random digits are ~3 apart in L2; at 1.5
    the MLP's clean accuracy falls to ~70%)."""
    train_steps: int = 7
    """PGD steps per batch of adversarial training."""
    n_inputs: int = 200
    """Test inputs (each with one random target class) on which gradients are compared."""
    ascent_eps: tuple[float, ...] = (1.0, 2.0, 3.0)
    """L2 radii of the large-eps targeted ascent (3 is about the distance between two random digits)."""
    ascent_steps: int = 40
    """Steps of the targeted ascent."""
    ascent_samples: int = 64
    """Monte Carlo draws per step of the ascent on a smoothed classifier."""
    n_grid: int = 6
    """Inputs shown in the image grids."""
    seed: int = 0

    def validate(self):
        if not self.sigmas or min(self.sigmas) <= 0:
            raise SettingError("sigmas", f"need positive noise levels, got {list(self.sigmas)}")
        if not self.ascent_eps or min(self.ascent_eps) <= 0:
            raise SettingError("ascent_eps", f"need positive radii, got {list(self.ascent_eps)}")
        if not self.widths or min(self.widths) < 1:
            raise SettingError("widths", f"need positive hidden widths, got {list(self.widths)}")
        for name in ("n_samples", "n_inputs", "ascent_steps", "ascent_samples", "epochs", "train_steps", "n_grid"):
            check_range(self, name, low=1)
        check_range(self, "train_eps", low=0, low_open=True)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_smoothed_gradients_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._smoothed_gradients_stages import run as run_stages

    return run_stages(cfg)

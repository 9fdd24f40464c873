"""Szegedy et al. 2013: units vs random directions, L-BFGS distortions (Table 1), transfer (Table 2), Lipschitz bounds.

A CPU-scale rerun of "Intriguing properties of neural networks" (arXiv:1312.6199) on sklearn digits
(8 x 8 inputs in [0, 1]; the paper used 28 x 28 MNIST), with the paper's numbers beside ours:

(a) Section 3: are single hidden units more interpretable than random directions of the same layer?
    The top-k test inputs of each unit and of random unit directions, scored by label purity (the
    fraction of the k inputs with the most common label), against the purity of random k-subsets.
(b) Table 1: FC10(lambda) (softmax regression, weight decay lambda) and FC100-100-10 / FC200-200-10
    style nets; training and test error and the average minimal L-BFGS distortion
    sqrt(mean_i (x'_i - x_i)^2) to reach a random other class.
(c) Table 2: the error rate that each model's adversarial examples cause on every other model, and
    the same for Gaussian noise of stddev 0.1 and 0.3.
(d) Section 4.3 / Table 5: per-layer Lipschitz bounds (spectral norms; conv layers through the FFT),
    their product, the tighter ReLU-splitting bound and its IBP-localised version (univ.bounds), and
    the empirical local estimates (Jacobian norms, random-direction ratios) they must exceed.

Differences from the paper, by design: ReLU rather than sigmoid hidden units (univ's MLP); Adam with
``weight_decay=lambda`` (the gradient of an L2 penalty lambda/2 ||theta||^2, biases included, on the
mean cross-entropy; the paper does not state its scaling); test rather than training inputs are
attacked; no AE400-10 row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the Szegedy et al. rerun (every field is a command-line flag: --field value)."""

    QUICK: ClassVar[dict] = {"epochs": 20, "n_attack": 60, "search_steps": 8, "maxiter": 60, "n_random": 50,
                             "n_points": 8, "n_sweep": 3}

    lambdas: tuple[float, ...] = (1e-4, 1e-2, 1.0)
    """Weight decays of the FC10(lambda) softmax regressions."""
    widths: tuple[int, ...] = (100, 200)
    """Hidden widths w of the FCw-w-10 ReLU nets."""
    cnn: bool = True
    """Add univ's small CNN (conv layers for the FFT bounds of Table 5; one more transfer row)."""
    epochs: int = 60
    """Training epochs of every model (Adam, lr 3e-3, batch 64)."""
    mlp_weight_decay: float = 1e-5
    """Weight decay of the hidden-layer nets and the CNN."""
    n_attack: int = 300
    """Test inputs attacked with L-BFGS per model (those it classifies correctly)."""
    search_steps: int = 12
    """Rounds of the search over c of the L-BFGS attack."""
    maxiter: int = 100
    """L-BFGS-B iterations per round."""
    top_k: int = 8
    """Top-activating inputs per unit / direction (the paper shows 8)."""
    n_random: int = 200
    """Random directions per layer."""
    n_points: int = 50
    """Test points for the local Lipschitz estimates and bounds."""
    local_radius: float = 0.02
    """Half-width (L-inf) of the input box around each point for the IBP-localised bound."""
    sample_radius: float = 0.05
    """L2 radius of the random perturbations of the sampled local ratios."""
    n_sweep: int = 10
    """Test points of the radius sweep of the local bounds (at most n_points)."""
    seed: int = 0

    def validate(self):
        if not self.lambdas and not self.widths:
            raise SettingError("widths", "need at least one model: give lambdas or widths")
        if any(lam < 0 for lam in self.lambdas):
            raise SettingError("lambdas", f"weight decays must be >= 0, got {list(self.lambdas)}")
        if any(w < 1 for w in self.widths):
            raise SettingError("widths", f"widths must be >= 1, got {list(self.widths)}")
        for f in ("epochs", "n_attack", "search_steps", "maxiter", "top_k", "n_random", "n_points", "n_sweep"):
            check_range(self, f, low=1)
        if self.n_sweep > self.n_points:
            raise SettingError("n_sweep", f"must be <= n_points ({self.n_points}), got {self.n_sweep}")
        check_range(self, "mlp_weight_decay", low=0)
        check_range(self, "local_radius", low=0, low_open=True)
        check_range(self, "sample_radius", low=0, low_open=True)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_intriguing_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._intriguing_stages import run as run_stages

    return run_stages(cfg)

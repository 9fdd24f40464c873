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
(e) The certified-gap ladder (univ.lipschitz): product, split, ECLipsE-Fast, ECLipsE, LipSDP-Layer,
    LipSDP-Neuron, branch and bound over activation regions (small nets), the exact constant of small
    nets and a certified lower bound, for FC nets of several widths and depths and a pool-free CNN; and
    the gain of random, adversarial and worst-case directions per layer, against the Frobenius estimate
    an uncorrelatedness assumption gives.

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
                             "n_points": 8, "n_sweep": 3, "ladder_widths": ("6-6", "32-32"), "sdp_max_dim": 200,
                             "lower_starts": 32, "lower_steps": 100, "bab_max_nodes": 500}

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
    ladder_widths: tuple[str, ...] = ("6-6", "32-32", "50-50-50")
    """Hidden widths ("w1-w2-...") of extra FC nets for the Lipschitz ladder, beside the FCw-w-10 nets."""
    ladder_cnn: bool = True
    """Add a small pool-free CNN (strided convs) to the ladder (univ's CNN has a max-pool, which the SDP
    bounds do not cover)."""
    sdp_max_dim: int = 500
    """The SDP rungs (ECLipsE, LipSDP) run on nets with at most this many inputs + ReLUs."""
    exact_max_relus: int = 12
    """The exact rung (enumerating activation regions) runs on nets with at most this many ReLUs."""
    bab_max_relus: int = 24
    """The branch-and-bound rung runs on nets with at most this many ReLUs (its work grows with the
    activation regions; above this it rarely closes its gap within the node budget)."""
    bab_max_nodes: int = 2000
    """Nodes the branch-and-bound rung expands at most per net (stopped early, its bound is still certified
    and the table says so)."""
    lower_starts: int = 64
    """Random starts of the certified lower-bound search (beside n_points test inputs)."""
    lower_steps: int = 200
    """Ascent steps of the lower-bound search."""
    direction_eps: float = 0.3
    """L2 radius of the PGD perturbations whose direction gains are measured."""
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
        for spec in self.ladder_widths:
            parts = str(spec).split("-")
            if not all(p.isdigit() and int(p) >= 1 for p in parts):
                raise SettingError("ladder_widths", f"each entry is hidden widths joined by '-' (e.g. '32-32'), got "
                                   f"{spec!r}")
        for f in ("sdp_max_dim", "lower_starts", "lower_steps", "bab_max_nodes"):
            check_range(self, f, low=1)
        check_range(self, "exact_max_relus", low=0)
        check_range(self, "bab_max_relus", low=0)
        check_range(self, "direction_eps", low=0, low_open=True)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_intriguing_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._intriguing_stages import run as run_stages

    return run_stages(cfg)

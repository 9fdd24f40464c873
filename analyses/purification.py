"""Feature purification (Allen-Zhu & Li 2020): does adversarial training make neurons purer dictionary atoms?

Data: x = M z + noise with a known dictionary M (``univ.data.sparse_coding``; orthonormalised by default,
the paper's setting), sparse codes z given random signs, and the label y = [<w*, z> > 0] for a dense
random w* in {-1, +1}^n_atoms. A linear readout of the dense direction M w* solves the clean task, but
with a margin of only |<w*, z>| / ||w*||, so it is not robust; a robust classifier has to threshold
the individual atoms. Two-layer ReLU networks are trained from the SAME initialisation clean, with FGM
(L2 fast gradient) and with L2 PGD. Per first-layer neuron: purity (share of ||M^T w||^2 in its top-1 /
top-k atoms), the dense-mixture mass outside the top k, its participation ratio and the decomposition
w_clean = beta * w_adv + v. Clean and robust accuracy; purity histograms against the analytic value of a
random direction. Finally a TopK SAE on each hidden layer: are the atoms easier to recover (code
correlation with the true sparse features, and the SAE latents' input-space readout directions vs M)?
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the purification run (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"d": 32, "n_atoms": 32, "n_samples": 6000, "width": 64, "epochs": 25, "seeds": 2,
                             "sae_steps": 1500, "n_eval": 1000}

    d: int = 64
    """Input dimension."""
    n_atoms: int = 64
    """Dictionary atoms (= d for the orthonormal, complete setting of the paper)."""
    orthonormal: bool = True
    """Replace sparse_coding's random unit-norm dictionary by its nearest orthonormal matrix (needs d = n_atoms)."""
    k: tuple[int, int] = (3, 5)
    """Active atoms per sample (inclusive range)."""
    noise: float = 0.05
    """Std of the Gaussian input noise."""
    n_samples: int = 20000
    """Samples (train + 20% test)."""
    width: int = 128
    """Hidden neurons of the two-layer network."""
    epochs: int = 40
    """Training epochs per network."""
    batch_size: int = 128
    """Training minibatch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    eps: float = 0.3
    """L2 radius of the FGM / PGD perturbations, in training and evaluation."""
    pgd_steps: int = 5
    """PGD iterations during adversarial training (evaluation uses 2x as many)."""
    seeds: int = 5
    """Initialisations (each trained clean, FGM and PGD)."""
    topk: int = 3
    """k of purity_k and of the dense-mixture mass (energy outside the top k atoms)."""
    alive_fraction: float = 0.01
    """A neuron counts as alive if it fires on at least this fraction of test inputs (dead ones keep their init)."""
    sae: bool = True
    """Fit a TopK SAE on each hidden layer (and on the raw inputs) and score atom recovery."""
    sae_steps: int = 4000
    """Optimizer steps per SAE."""
    n_eval: int = 2000
    """Test inputs used for robust accuracy and the SAE scores."""
    seed: int = 0
    """Seed of the data, the networks and the SAEs."""

    def validate(self):
        for name in ("d", "n_atoms", "width", "epochs", "batch_size", "pgd_steps", "seeds", "topk", "sae_steps"):
            check_range(self, name, low=1)
        if self.orthonormal and self.d != self.n_atoms:
            raise SettingError("n_atoms", f"orthonormal needs d == n_atoms, got d={self.d}, n_atoms={self.n_atoms}")
        if not 1 <= self.k[0] <= self.k[1] <= self.n_atoms:
            raise SettingError("k", f"need 1 <= k[0] <= k[1] <= n_atoms={self.n_atoms}, got {list(self.k)}")
        check_range(self, "n_samples", low=100)
        check_range(self, "n_eval", low=10, high=self.n_samples // 5)
        check_range(self, "eps", low=0, low_open=True)
        check_range(self, "lr", low=0, low_open=True)
        check_range(self, "noise", low=0)
        check_range(self, "alive_fraction", low=0, high=1)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_purification_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._purification_stages import run as run_stages

    return run_stages(cfg)

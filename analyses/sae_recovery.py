"""Do univ's SAEs recover a known dictionary? MMCS, atoms recovered, L0, FVU, dead per kind and sparsity.

Run: ``univ run sae_recovery [--quick]``.

Data: ``univ.data.sparse_coding``: x = M z + noise, M: (d, n_atoms) unit-norm atoms, each sample with
a-1..a+1 active atoms (magnitudes in [0.5, 1.5]) for each sparsity level a. An SAE of every kind (ReLU-L1,
TopK, BatchTopK, JumpReLU) is trained with ``fit``'s default arguments (it trains until its loss stops
improving). Scores on the held-out split: MMCS (mean over true atoms of the best |cosine| with a learned
decoder row), the fraction of atoms recovered at cosine >= 0.9, L0, FVU and the dead fraction.
The acceptance target (issue 4) at 64 dims, 256 atoms, 3-5 active, width 512: MMCS >= 0.95 and >= 90% of
atoms recovered for TopK and ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, SettingError, check_choices, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the dictionary-recovery run (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"d": 32, "n_atoms": 64, "width": 128, "n_samples": 5000, "active": (4,)}

    d: int = 64
    """Activation dimension."""
    n_atoms: int = 256
    """Atoms of the true dictionary."""
    width: int = 512
    """SAE latents (d_sae); twice the dictionary by default."""
    n_samples: int = 20000
    """Samples generated (80% train, 20% held out for the scores)."""
    noise: float = 0.01
    """Std of the Gaussian noise added to x."""
    active: tuple[int, ...] = (4, 8)
    """Sparsity levels: mean active atoms per sample; level a draws a-1..a+1 atoms."""
    kinds: tuple[str, ...] = ("relu", "topk", "batchtopk", "jumprelu")
    """SAE kinds to train (keys of ``univ.sae.SAE_KINDS``)."""
    threshold: float = 0.9
    """Cosine at which a true atom counts as recovered."""
    seed: int = 0
    """Seed of the data and of the SAEs' initialisation."""

    def validate(self):
        if not self.active or min(self.active) < 2:
            raise SettingError("active", f"need levels >= 2 (level a draws a-1..a+1 atoms), got {list(self.active)}")
        for name in ("d", "width", "n_samples"):
            check_range(self, name, low=1)
        check_range(self, "n_atoms", low=max(self.active) + 1)
        check_range(self, "noise", low=0)
        check_range(self, "threshold", low=0, high=1)
        import univ.sae  # the SAE registry needs torch: checked last, so range errors come at once

        check_choices(self, "kinds", univ.sae.SAE_KINDS)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_sae_recovery_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._sae_recovery_stages import run as run_stages

    return run_stages(cfg)

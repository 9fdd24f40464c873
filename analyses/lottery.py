"""Lottery tickets (Frankle & Carbin 2018) read for universality: IMP with rewinding, controls, ticket similarity.

Per dataset and seed, a LeNet-300-100-like MLP is trained dense, then pruned iteratively by magnitude
(20% of each hidden layer and 10% of the output layer per round), the survivors rewound to the
initialisation ("ticket") or to an early iteration of the dense run ("ticket_late") and retrained.
Controls at every sparsity: the ticket's mask with a fresh initialisation ("reinit") and a random mask of
the same layer-wise sparsity on the original initialisation ("random").
Tables: accuracy and the early-stopping iteration vs % weights remaining; linear CKA and SVCCA of the
hidden layers between tickets of different seeds, between a ticket and its dense parent and between
randomly pruned networks; and the overlap of the masks (raw, and after matching hidden units across seeds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the lottery-ticket run (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"datasets": ("digits",), "widths": (100, 30), "seeds": 3, "n_rounds": 5, "epochs": 20}

    datasets: tuple[Literal["digits", "mnist1d"], ...] = ("digits", "mnist1d")
    """Datasets (both generated or shipped locally)."""
    widths: tuple[int, ...] = (300, 100)
    """Hidden widths (LeNet-300-100)."""
    seeds: int = 4
    """Initialisations per dataset (seed, seed+1, ...)."""
    n_rounds: int = 10
    """Pruning rounds (hidden layers keep 0.8^n: 10 rounds leave 10.7%)."""
    hidden_rate: float = 0.2
    """Fraction of the remaining hidden-layer weights pruned per round."""
    output_rate: float = 0.1
    """Fraction of the remaining output-layer weights pruned per round."""
    late_rewind: int = 40
    """Iteration of the dense run that "ticket_late" rewinds to (0 disables late rewinding)."""
    epochs: int = 40
    """Training epochs per network (every round and control)."""
    batch_size: int = 60
    """Training minibatch size."""
    lr: float = 1.2e-3
    """Adam learning rate (Frankle & Carbin's LeNet setting)."""
    n_val: int = 200
    """Training samples held out to find the early-stopping iteration (minimum validation loss)."""
    eval_every: int = 20
    """Iterations between validation evaluations."""
    seed: int = 0
    """Offset of the model seeds."""

    def validate(self):
        if not self.datasets:
            raise SettingError("datasets", "need at least one dataset")
        if not self.widths or min(self.widths) < 1:
            raise SettingError("widths", f"need positive hidden widths, got {list(self.widths)}")
        check_range(self, "seeds", low=2)  # tickets are compared across initialisations
        for name in ("n_rounds", "epochs", "batch_size", "eval_every"):
            check_range(self, name, low=1)
        check_range(self, "late_rewind", low=0)
        check_range(self, "n_val", low=10)
        check_range(self, "hidden_rate", low=0, high=1, low_open=True, high_open=True)
        check_range(self, "output_rate", low=0, high=1, high_open=True)
        check_range(self, "lr", low=0, low_open=True)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_lottery_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._lottery_stages import run as run_stages

    return run_stages(cfg)

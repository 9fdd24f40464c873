"""Layer identification (Kornblith et al. 2019, Table 2): does a metric find the corresponding layer of another net?

Train architecturally identical networks from different seeds. For every ordered pair of networks
(A, B) and every hidden layer i of A, a metric "identifies" the layer if, among all hidden layers of B,
it gives the highest similarity to B's layer i. Accuracy is over all ordered pairs and layers (logits
excluded). Kornblith et al. ran 10 ten-layer plain CNNs (conv-BatchNorm-ReLU, strided downsampling)
on CIFAR-10; this is the CPU-scale version on MNIST-1D: by default the same design in 1-D with six conv
layers (``arch="plain1d"``, the zoo's ``plain_cnn``), activations flattened over (channel, position):
linear CKA 98.9% on the full run against the paper's 99.3%. (Without BatchNorm and with max-pooling
instead of strides, an earlier version reached only 75.2%: its middle layers were hard to tell apart.)
``arch="mlp"`` uses the zoo's MLP, whose deep layers converge to one another (a block structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from univ.config import AnalysisConfig, SettingError, check_choices, check_range

METRIC_NAMES = ("linear_cka", "linear_cka_debiased", "rbf_cka_0.2", "rbf_cka_0.4", "rbf_cka_0.8",
                "procrustes", "mutual_knn", "svcca_rho", "cca_rho", "cca_r2", "pwcca", "rsa")
DEFAULT_METRICS = tuple(m for m in METRIC_NAMES if m != "rsa")


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the layer-identification run (every field is a command-line flag)."""

    QUICK: ClassVar[dict] = {"n_networks": 4, "channels": 8, "depth": 6, "width": 64, "epochs": 12,
                             "dataset_size": 5000, "n_samples": 1000}

    arch: Literal["plain1d", "mlp"] = "plain1d"
    """plain1d: Kornblith et al.'s plain CNN in 1-D (the zoo's ``plain_cnn``: conv-BN-ReLU per stride,
    global average pooling); mlp: the zoo MLP with ``depth`` hidden layers of ``width``."""
    dataset_size: int = 10000
    """MNIST-1D samples generated (80% train, 20% test)."""
    n_networks: int = 10
    """Networks trained from different seeds (Kornblith et al.: 10)."""
    channels: int = 32
    """plain1d: channels per conv layer (32 gives layers of 640, 640, 320, 320, 160, 160 features with the
    default strides)."""
    strides: tuple[int, ...] = (2, 1, 2, 1, 2, 1)
    """plain1d: one conv layer per entry, with that stride (2 halves the resolution)."""
    depth: int = 8
    """mlp hidden layers (the layers to identify)."""
    width: int = 128
    """mlp units per hidden layer."""
    epochs: int = 30
    """Training epochs per network."""
    batch_size: int = 64
    """Training minibatch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    n_samples: int = 2000
    """Test inputs whose activations are compared (must exceed 2 * (widest layer) + 1 for CCA)."""
    metrics: tuple[str, ...] = DEFAULT_METRICS
    """Metrics to evaluate (any of METRIC_NAMES; rsa is O(n^2 log n) per pair, so not by default)."""
    seed: int = 0
    """Offset of the network seeds (seed, seed + 1, ...)."""

    def validate(self):
        for name in ("n_networks", "depth"):
            check_range(self, name, low=2)
        for name in ("dataset_size", "channels", "width", "epochs", "batch_size", "n_samples"):
            check_range(self, name, low=1)
        check_range(self, "lr", low=0, low_open=True)
        if len(self.strides) < 2 or any(st < 1 for st in self.strides):
            raise SettingError("strides", f"need at least 2 layers with strides >= 1, got {list(self.strides)}")
        check_choices(self, "metrics", METRIC_NAMES)


def run(cfg: Config):
    """Run the analysis and return its Report (the work lives in ``analyses/_layer_identification_stages.py``, imported
    here so that settings are checked before torch is loaded)."""
    from ._layer_identification_stages import run as run_stages

    return run_stages(cfg)

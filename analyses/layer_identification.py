"""Layer identification (Kornblith et al. 2019, Table 2): does a metric find the corresponding layer of another net?

Train architecturally identical networks (a deep ReLU MLP) from different seeds. For every ordered pair
of networks (A, B) and every hidden layer i of A, a metric "identifies" the layer if, among all hidden
layers of B, it gives the highest similarity to B's layer i. Accuracy is over all ordered pairs and
layers (logits excluded). Kornblith et al. ran 10 ten-layer CNNs on CIFAR-10; this is the CPU-scale
version on MNIST-1D (or sklearn digits) with an MLP of 8 hidden layers.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ import similarity as sim
from univ.cache import cached_model
from univ.report import Report, heatmap
from univ.train import TrainConfig

# Kornblith et al. (2019), Table 2 (accuracy %, CIFAR-10 CNNs); only the rows quoted in issue 3.
PAPER = {"linear_cka": 99.3, "rbf_cka_0.4": 99.1, "cca_rho": 1.4, "svcca_rho": 9.9, "pwcca": 11.1}

METRIC_NAMES = ("cca_rho", "cca_r2", "svcca_rho", "pwcca", "linear_cka", "linear_cka_debiased",
                "rbf_cka_0.2", "rbf_cka_0.4", "rbf_cka_0.8", "procrustes", "rsa", "mutual_knn")


def _pairwise(name: str):
    """(f(X, Y) -> float, symmetric) for the metrics computed pair by pair."""
    table = {
        "cca_rho": (lambda X, Y: sim.cca(X, Y).mean, True),
        "cca_r2": (lambda X, Y: sim.cca(X, Y).r2, True),
        "svcca_rho": (sim.svcca, True),
        "pwcca": (sim.pwcca, False),  # equal widths: PWCCA weights by the first argument's side
        "linear_cka": (sim.linear_cka, True),
        "linear_cka_debiased": (lambda X, Y: sim.linear_cka(X, Y, debiased=True), True),
        "procrustes": (sim.procrustes, True),
        "rsa": (sim.rsa, True),
        "mutual_knn": (sim.mutual_knn, True),
    }
    return table[name]


@dataclass(frozen=True)
class Config:
    """Settings of the layer-identification run (every field is a command-line flag)."""

    quick: bool = False
    """Shrink everything (4 narrower, shallower nets, fewer epochs and samples) for CI and a first look."""
    dataset: Literal["mnist1d", "digits"] = "mnist1d"
    """Training data (both generated or shipped locally)."""
    n_networks: int = 10
    """Networks trained from different seeds (Kornblith et al.: 10)."""
    depth: int = 8
    """Hidden layers of the MLP (the layers to identify); quick uses 6."""
    width: int = 128
    """Units per hidden layer; quick uses 64."""
    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    """Adam learning rate."""
    n_samples: int = 1000
    """Test inputs whose activations are compared (must exceed 2 * width + 1 for CCA)."""
    metrics: tuple[str, ...] = METRIC_NAMES
    """Metrics to evaluate (see METRIC_NAMES)."""
    seed: int = 0
    """Offset of the network seeds (seed, seed + 1, ...)."""

    def __post_init__(self):
        if self.n_networks < 2 or self.depth < 2:
            raise ValueError(f"need n_networks >= 2 and depth >= 2, got {self.n_networks}, {self.depth}")
        for m in self.metrics:
            if m not in METRIC_NAMES:
                raise ValueError(f"metrics: unknown metric {m!r}; choose from {list(METRIC_NAMES)}")

    def effective(self) -> dict:
        """The sizes actually used (``quick`` shrinks them)."""
        if self.quick:
            return {"n_networks": min(self.n_networks, 4), "depth": min(self.depth, 6),
                    "width": min(self.width, 64), "epochs": min(self.epochs, 15),
                    "n_samples": min(self.n_samples, 400)}
        return {"n_networks": self.n_networks, "depth": self.depth, "width": self.width,
                "epochs": self.epochs, "n_samples": self.n_samples}


def _kernel_cka_matrix(acts: list[dict[str, torch.Tensor]], threshold: float) -> np.ndarray:
    """RBF CKA between every pair of layers of every network: (N*L, N*L).

    Each layer's centred Gram is built once and normalised; CKA is then a dot product, instead of
    rebuilding two n x n Grams for each of the (N L)^2 pairs.
    """
    flat = []
    for a in acts:
        for X in a.values():
            K = sim.center_gram(sim.rbf_gram(X.double(), threshold))
            flat.append((K / torch.linalg.norm(K)).flatten())
    G = torch.stack(flat)
    return (G @ G.T).numpy()


def _similarities(acts: list[dict[str, torch.Tensor]], metric: str) -> np.ndarray:
    """S[a, b, i, j] = metric(layer i of net a, layer j of net b) for a != b (NaN on a == b)."""
    N, L = len(acts), len(acts[0])
    S = np.full((N, N, L, L), np.nan)
    if metric.startswith("rbf_cka_"):
        M = _kernel_cka_matrix(acts, float(metric.rsplit("_", 1)[1]))
        for a, b in itertools.permutations(range(N), 2):
            S[a, b] = M[a * L:(a + 1) * L, b * L:(b + 1) * L]
        return S
    fn, symmetric = _pairwise(metric)
    layers = [list(a.values()) for a in acts]
    pairs = itertools.combinations(range(N), 2) if symmetric else itertools.permutations(range(N), 2)
    for a, b in pairs:
        for i, j in itertools.product(range(L), range(L)):
            S[a, b, i, j] = fn(layers[a][i], layers[b][j])
        if symmetric:
            S[b, a] = S[a, b].T
    return S


def identification(S: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy over ordered pairs (a, b), a != b, and layers i of argmax_j S[a, b, i, j] == i;
    also the per-layer accuracy (L,)."""
    N, _, L, _ = S.shape
    hits = np.array([[np.argmax(S[a, b, i]) == i for i in range(L)]
                     for a, b in itertools.permutations(range(N), 2)])
    return float(hits.mean()), hits.mean(0)


def run(cfg: Config) -> Report:
    eff = cfg.effective()
    N, depth, width, n = eff["n_networks"], eff["depth"], eff["width"], eff["n_samples"]
    data = univ.data.load(cfg.dataset)
    if n > len(data.x_test):
        raise ValueError(f"n_samples: {n} exceeds the {len(data.x_test)} test inputs of {cfg.dataset}")
    if n <= 2 * width + 1:
        raise ValueError(f"n_samples: {n} must exceed 2 * width + 1 = {2 * width + 1} (CCA degenerates "
                         f"otherwise: Kornblith et al. 2019, Theorem 1)")
    train_cfg = TrainConfig(epochs=eff["epochs"], batch_size=cfg.batch_size, lr=cfg.lr)
    names = [f"act{i}" for i in range(1, depth + 1)]
    acts, nets = [], []
    for s in tqdm(range(cfg.seed, cfg.seed + N), desc="networks"):
        model, metrics = cached_model("mlp", data, seed=s, train_cfg=TrainConfig(**{**train_cfg.__dict__, "seed": s}),
                                      model_cfg={"widths": [width] * depth}, progress=False)
        nets.append({"seed": s, "train_acc": metrics["train_acc"], "test_acc": metrics["test_acc"]})
        acts.append(univ.capture(model, data.x_test[:n], names=names))

    report = Report("layer_identification")
    rows, per_layer, mean_sims = [], {}, {}
    for metric in tqdm(cfg.metrics, desc="metrics"):
        t0 = time.perf_counter()
        S = _similarities(acts, metric)
        acc, layer_acc = identification(S)
        per_layer[metric] = layer_acc * 100
        mean_sims[metric] = np.nanmean(S, axis=(0, 1))
        rows.append({"metric": metric, "accuracy_pct": 100 * acc, "paper_pct": PAPER.get(metric, np.nan),
                     "chance_pct": 100 / depth, "trials": N * (N - 1) * depth,
                     "seconds": time.perf_counter() - t0})
    table = pd.DataFrame(rows)
    report.add_table(
        "identification", table,
        f"{N} MLPs ({depth} hidden ReLU layers of width {width}, seeds {cfg.seed}..{cfg.seed + N - 1}) "
        f"trained on {cfg.dataset}; activations of the post-ReLU layers on {n} test inputs. accuracy_pct: "
        f"% of (ordered network pair, layer) trials where the most similar layer of the other network is "
        f"the corresponding one. paper_pct: Kornblith et al. 2019 Table 2 (10 CNNs on CIFAR-10), for the "
        f"rows quoted in issue 3. rbf_cka_t: RBF CKA with bandwidth t * median distance.")
    report.summary = "identification"
    report.add_table("per_layer", pd.DataFrame(per_layer, index=names).rename_axis("layer").reset_index(),
                     "Identification accuracy (%) per layer of the first network of each pair.")
    report.add_table("networks", pd.DataFrame(nets), "The trained networks.")
    shown = [m for m in ("linear_cka", "rbf_cka_0.4", "cca_rho", "svcca_rho", "pwcca") if m in mean_sims]
    if shown:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.2))
        for ax, m in zip(np.atleast_1d(axes), shown):
            heatmap(pd.DataFrame(mean_sims[m], index=names, columns=names), title=m, ax=ax, annot=False,
                    xlabel="layer of net B", ylabel="layer of net A")
        fig.tight_layout()
        report.add_figure("mean_similarity", fig, "Similarity between layers of different networks, "
                          "averaged over network pairs. A metric identifies layers when the diagonal "
                          "dominates each row.")
    return report

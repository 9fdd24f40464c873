"""The work of ``univ run layer_identification``; its settings and entry point are in
``analyses/layer_identification.py``."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

import univ
from univ import similarity as sim
from univ.cache import cached_model
from univ.report import Report, heatmap
from univ.train import TrainConfig

if TYPE_CHECKING:
    from .layer_identification import Config

# Kornblith et al. (2019), Table 2 (accuracy %, CIFAR-10 CNNs); only the rows quoted in issue 3.
PAPER = {"linear_cka": 99.3, "rbf_cka_0.4": 99.1, "cca_rho": 1.4, "svcca_rho": 9.9, "pwcca": 11.1}


_MEMO: dict = {}  # per run: CCA results (shared by cca_rho and cca_r2) and each layer's kNN indices


def _memo(tag: str, fn, *layers):
    """fn(), computed once per (tag, layers). Keyed by the layers' ids; the layers are stored with the
    value and checked by identity, so a new tensor that reuses a freed one's id is not served stale."""
    key = (tag, *map(id, layers))
    hit = _MEMO.get(key)
    if hit is None or any(a is not b for a, b in zip(hit[0], layers)):
        hit = _MEMO[key] = (layers, fn())
    return hit[1]


def _basis(X, kind: str):
    """Orthonormal basis of a layer, computed once per run: its centred column span (CCA) or its
    top principal directions keeping 99% of the variance (SVCCA), exactly as sim.cca / sim.svcca."""
    def compute():
        return sim.span_basis(X) if kind == "cca" else sim.principal_basis(X, 0.99)

    return _memo(kind, compute, X)


def _cca(X, Y):
    """sim.cca(X, Y) from the memoised bases (same numbers, without refactoring each layer per pair).
    The inputs were validated when captured, and run() checks n against Kornblith et al.'s Theorem 1."""
    def compute():
        rho = torch.linalg.svdvals(_basis(X, "cca").T @ _basis(Y, "cca")).clamp(0.0, 1.0)
        return sim.CCAResult(rho.numpy(), float(rho.mean()), float((rho * rho).mean()))

    return _memo("cca_pair", compute, X, Y)


def _pwcca(X, Y):
    """sim.pwcca(X, Y) with each layer's side statistics (scatter, inverse square root) memoised."""
    sides = [_memo("pwcca_side", lambda Z=Z, name=name: sim.pwcca_side(Z, name=name), Z)
             for Z, name in ((X, "X"), (Y, "Y"))]
    return sim.pwcca_from_sides(*sides)


FEATURE_GROUP = ("linear_cka", "linear_cka_debiased", "procrustes")


def _feature_group(acts: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    """Linear CKA, debiased linear CKA and Procrustes for every cross-network layer pair in one pass: each
    layer's moments once (sim.layer_moments), one cross product per pair (sim.moment_measures)."""
    N, L = len(acts), len(acts[0])
    stats = [[sim.layer_moments(X) for X in a.values()] for a in acts]
    out = {m: np.full((N, N, L, L), np.nan) for m in FEATURE_GROUP}
    for a, b in itertools.combinations(range(N), 2):
        for i, j in itertools.product(range(L), range(L)):
            for m, v in sim.moment_measures(stats[a][i], stats[b][j]).items():
                out[m][a, b, i, j] = v
    for m in FEATURE_GROUP:
        for a, b in itertools.combinations(range(N), 2):
            out[m][b, a] = out[m][a, b].T
    return out


def _svcca(X, Y):
    return float(torch.linalg.svdvals(_basis(X, "svcca").T @ _basis(Y, "svcca")).clamp(0.0, 1.0).mean())


def _mutual_knn(X, Y, k: int = 10):
    """sim.mutual_knn(X, Y, k), with each layer's neighbour indices computed once per run."""
    def indices(Z):  # after the checks mutual_knn makes (2-D, finite, k < n), without computing it
        return sim.knn_indices(univ._checks.as_matrix(Z, "activations", min_rows=k + 1), k)

    idx = [_memo(f"knn{k}", lambda Z=Z: indices(Z), Z) for Z in (X, Y)]
    return float((idx[0][:, :, None] == idx[1][:, None, :]).sum(dim=(1, 2)).double().mean() / k)


def _pairwise(name: str):
    """(f(X, Y) -> float, symmetric) for the metrics computed pair by pair."""
    table = {
        "cca_rho": (lambda X, Y: _cca(X, Y).mean, True),
        "cca_r2": (lambda X, Y: _cca(X, Y).r2, True),
        "svcca_rho": (_svcca, True),
        "pwcca": (_pwcca, False),  # equal widths: PWCCA weights by the first argument's side
        "linear_cka": (sim.linear_cka, True),
        "linear_cka_debiased": (lambda X, Y: sim.linear_cka(X, Y, debiased=True), True),
        "procrustes": (sim.procrustes, True),
        # euclidean RDMs: correlation distance is undefined for an input that silences a whole layer
        "rsa": (lambda X, Y: sim.rsa(X, Y, distance="euclidean"), True),
        "mutual_knn": (_mutual_knn, True),
    }
    return table[name]


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
    if metric in FEATURE_GROUP:
        if ("S", metric) not in _MEMO:
            _MEMO.update({("S", m): S for m, S in _feature_group(acts).items()})
        return _MEMO[("S", metric)]
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
    N, n = cfg.n_networks, cfg.n_samples
    data = univ.data.load("mnist1d", num_samples=cfg.dataset_size)
    if n > len(data.x_test):
        raise ValueError(f"n_samples: {n} exceeds the {len(data.x_test)} test inputs; raise dataset_size")
    length = data.input_shape[-1]
    widest = {"plain1d": cfg.channels * -(-length // cfg.strides[0]), "mlp": cfg.width}[cfg.arch]
    if any(m.startswith(("cca", "svcca", "pwcca")) for m in cfg.metrics) and n <= 2 * widest + 1:
        raise ValueError(f"n_samples: {n} must exceed 2 * {widest} + 1 for the CCA metrics (they "
                         f"degenerate otherwise: Kornblith et al. 2019, Theorem 1)")
    _MEMO.clear()
    acts, nets = [], []
    for s in tqdm(range(cfg.seed, cfg.seed + N), desc="networks"):
        train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=s)
        if cfg.arch == "plain1d":
            model, metrics = cached_model("plain_cnn", data, seed=s, train_cfg=train_cfg, progress=False,
                                          model_cfg={"channels": cfg.channels, "strides": list(cfg.strides)})
        else:
            model, metrics = cached_model("mlp", data, seed=s, train_cfg=train_cfg,
                                          model_cfg={"widths": [cfg.width] * cfg.depth}, progress=False)
        names = model.layers[:-1]  # logits excluded
        nets.append({"seed": s, "train_acc": metrics["train_acc"], "test_acc": metrics["test_acc"]})
        acts.append({k: v.double() for k, v in univ.capture(model, data.x_test[:n], names=names).items()})
    L = len(names)
    shape = ", ".join(str(a.shape[1]) for a in acts[0].values())
    what = {"plain1d": f"{N} plain 1-D CNNs ({len(cfg.strides)} conv-BN-ReLU layers of {cfg.channels} "
                       f"channels, strides {list(cfg.strides)})",
            "mlp": f"{N} MLPs ({cfg.depth} hidden ReLU layers of width {cfg.width})"}[cfg.arch]

    report = Report("layer_identification")
    rows, per_layer, mean_sims = [], {}, {}
    for metric in tqdm(cfg.metrics, desc="metrics"):
        t0 = time.perf_counter()
        # the metrics' small (d, d) LAPACK calls are slower with several BLAS threads on a busy machine
        with threadpool_limits(1, user_api="blas"):
            S = _similarities(acts, metric)
        acc, layer_acc = identification(S)
        per_layer[metric] = layer_acc * 100
        mean_sims[metric] = np.nanmean(S, axis=(0, 1))
        rows.append({"metric": metric, "accuracy_pct": 100 * acc, "paper_pct": PAPER.get(metric, np.nan),
                     "chance_pct": 100 / L, "trials": N * (N - 1) * L,
                     "seconds": time.perf_counter() - t0})
        tqdm.write(f"{metric}: {100 * acc:.1f}% ({time.perf_counter() - t0:.0f} s)")
    table = pd.DataFrame(rows)
    report.add_table(
        "identification", table,
        f"{what}, seeds {cfg.seed}..{cfg.seed + N - 1}, trained on MNIST-1D ({cfg.dataset_size} samples); "
        f"post-ReLU activations (features: {shape}) on {n} test inputs. accuracy_pct: "
        f"% of (ordered network pair, layer) trials where the most similar layer of the other network is "
        f"the corresponding one. paper_pct: Kornblith et al. 2019 Table 2 (10 CNNs on CIFAR-10), for the "
        f"rows quoted in issue 3. rbf_cka_t: RBF CKA with bandwidth t * median distance.")
    report.summary = "identification"
    report.add_table("per_layer", pd.DataFrame(per_layer, index=list(names)).rename_axis("layer").reset_index(),
                     "Identification accuracy (%) per layer of the first network of each pair.")
    report.add_table("networks", pd.DataFrame(nets), "The trained networks.")
    shown = [m for m in ("linear_cka", "rbf_cka_0.4", "cca_rho", "svcca_rho", "pwcca") if m in mean_sims]
    if shown:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 3.2))
        for ax, m in zip(np.atleast_1d(axes), shown):
            heatmap(pd.DataFrame(mean_sims[m], index=list(names), columns=list(names)), title=m, ax=ax, annot=False,
                    xlabel="layer of net B", ylabel="layer of net A")
        fig.tight_layout()
        report.add_figure("mean_similarity", fig, "Similarity between layers of different networks, "
                          "averaged over network pairs. A metric identifies layers when the diagonal "
                          "dominates each row.")
    _MEMO.clear()
    return report

"""The Lipschitz ladder and the direction gains of ``univ run intriguing`` (Szegedy et al.'s Section 4.3
question: can we do better than the product of the layer norms, and why do random directions mislead?)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from univ.adversarial import pgd
from univ.adversarial.deepfool import deepfool
from univ.cache import cached_model
from univ.lipschitz.directions import direction_gains
from univ.lipschitz.ladder import UPPER, ladder, tightest
from univ.train import TrainConfig, train

if TYPE_CHECKING:
    from univ.report import Report

    from .intriguing import Config


def ladder_cnn(seed: int) -> nn.Module:
    """A small CNN without pooling (strided convs), so every rung applies: 1x8x8 -> 4x4x4 -> 8x2x2 -> 10."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(32, 10))


def ladder_models(models: dict, data, cfg: Config) -> dict:
    """The FC nets of the analysis, the extra widths/depths of ``cfg.ladder_widths`` and the pool-free CNN."""
    nets = {k: m for k, m in models.items() if k.startswith("FC") and not k.startswith("FC10(")}
    tc = TrainConfig(epochs=cfg.epochs, batch_size=64, lr=3e-3, weight_decay=cfg.mlp_weight_decay, seed=cfg.seed)
    for spec in cfg.ladder_widths:
        widths = [int(w) for w in spec.split("-")]
        name = f"FC{spec}-10"
        if name not in nets:
            nets[name] = cached_model("mlp", data, seed=cfg.seed, train_cfg=tc, model_cfg={"widths": widths},
                                      progress=False)[0].eval()
    if cfg.ladder_cnn:
        cnn = ladder_cnn(cfg.seed)
        train(cnn, data, tc, progress=False)
        nets["CNN(stride 2, no pool)"] = cnn.eval()
    return nets


def ladder_stage(models: dict, data, cfg: Config, report: Report) -> None:
    nets = ladder_models(models, data, cfg)
    rows = []
    for name, model in tqdm(nets.items(), desc="ladder"):
        df = ladder(model, data.input_shape, sdp_max_dim=cfg.sdp_max_dim, exact_max_relus=cfg.exact_max_relus,
                    bab_max_relus=cfg.bab_max_relus, bab_max_nodes=cfg.bab_max_nodes,
                    lower_starts=data.x_test[:cfg.n_points], n_starts=cfg.lower_starts, steps=cfg.lower_steps,
                    seed=cfg.seed)
        rows.append(df.assign(model=name, tightest=df.method == tightest(df).method))
    table = pd.concat(rows, ignore_index=True)[["model", "method", "value", "over_lower", "over_exact", "seconds",
                                                  "status", "tightest"]]
    report.add_table("lipschitz_ladder", table, (
        "The certified-gap ladder: global L2 Lipschitz upper bounds of the logits, loosest first (product of "
        "the exact layer norms; univ's ReLU-splitting bound; ECLipsE-Fast, closed form; ECLipsE, one small "
        "SDP per layer; LipSDP-Layer and LipSDP-Neuron, one SDP, cvxpy with Clarabel for blocks <= 40 and "
        "SCS above), branch and bound over activation regions (a certified bound at any stop, exact to 0.1% "
        "when it converges; status 'budget: ...' when its node budget stopped it), the exact constant where "
        "the net is small enough to enumerate its activation regions, "
        "and a certified lower bound (the best exact Jacobian norm found by smoothed gradient ascent and "
        "PGD difference quotients, from random inputs and test points). over_lower: value / lower bound "
        "(the gap); SDP values are recomputed exactly from the solver's multipliers, so they are "
        f"certified. SDP rungs run when inputs + ReLUs <= {cfg.sdp_max_dim}; the exact rung when the net has "
        f"<= {cfg.exact_max_relus} ReLUs; branch and bound when it has <= {cfg.bab_max_relus} ReLUs, at most "
        f"{cfg.bab_max_nodes} nodes. seconds: wall time on this machine."))
    report.add_figure("lipschitz_ladder", _ladder_figure(table),
                      "Each bound divided by the certified lower bound: the product bound's gap "
                      "against the SDP bounds', per network; the exact constant where computed.")


def _ladder_figure(table: pd.DataFrame):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(table.model))
    methods = [m for m in (*UPPER, "exact") if m in set(table.method)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(nets), 3.6))
    markers = dict(zip(methods, "os^vDPX*"))
    for j, meth in enumerate(methods):
        sub = table[table.method == meth].set_index("model").reindex(nets)
        xs = np.arange(len(nets)) + (j - len(methods) / 2) * 0.06
        ax.scatter(xs, sub["over_lower"], marker=markers[meth], label=meth, s=28)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(nets)), nets, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("bound / certified lower bound")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


def directions_stage(models: dict, data, cfg: Config, report: Report) -> None:
    rows = []
    x, y = data.x_test[:cfg.n_points], data.y_test[:cfg.n_points]
    for name, model in models.items():
        if not name.startswith("FC") or name.startswith("FC10("):
            continue
        r_pgd = pgd(model, x, y, eps=cfg.direction_eps, norm="2", steps=20, bounds=None, seed=cfg.seed) - x
        r_df = deepfool(model, x, y, bounds=None) - x
        df = direction_gains(model, x, {"PGD (L2)": r_pgd, "DeepFool": r_df}, n_random=cfg.n_random,
                             seed=cfg.seed, input_shape=data.input_shape)
        rows.append(df.assign(model=name))
    if not rows:
        return
    table = pd.concat(rows, ignore_index=True)
    cols = ["model", "layer", "direction", "gain_mean", "gain_rms", "gain_sem", "frobenius_estimate",
            "spectral_norm", "gain_over_spectral", "gain_over_frobenius", "cos_top", "row_space_frac", "n"]
    report.add_table("direction_gains", table[cols], (
        f"The gain ||J r|| / ||r|| of perturbation directions at {len(x)} test inputs, through each layer's "
        "local linear map (D_k W_k) and end to end: random Gaussian directions at the input (propagated), "
        "a fresh random direction in each layer's own input space, the L2 PGD (eps "
        f"{cfg.direction_eps}) and DeepFool perturbations, and the worst case (the top right singular "
        "vector of the end-to-end Jacobian). frobenius_estimate = ||J||_F / sqrt(d), the RMS gain an "
        "uncorrelatedness assumption predicts for random directions; spectral_norm = ||J||_2, the worst "
        "case. cos_top: |cos| between the input direction and the top right singular vector; "
        "row_space_frac: the fraction of its energy in the Jacobian's row space (random: about "
        "n_classes / d). Adversarial directions sit in the row space and near the top singular vectors, "
        "so their gain is near the worst case, far above the random one: local smoothness arguments that "
        "assume random-like perturbations do not cover them."))

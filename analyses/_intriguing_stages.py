"""The work of ``univ run intriguing``; its settings and entry point are in
``analyses/intriguing.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ.adversarial.lbfgs import lbfgs_search
from univ.cache import cached_model
from univ.models import logits, predict
from univ.report import Report, heatmap
from univ.repro import lipschitz as B
from univ.repro.szegedy import SZEGEDY_TABLE1, rms_distortion
from univ.train import TrainConfig

from ._intriguing_ladder import directions_stage, ladder_stage

if TYPE_CHECKING:
    from .intriguing import Config

# ------------------------------------------------------------------------------------------------
# the paper's numbers (MNIST; Table 2 rows: examples made for, columns: model evaluated)

PAPER_TABLE1 = SZEGEDY_TABLE1  # one copy of the paper's Table 1, kept beside the L-BFGS attack
_T2_COLS = ["FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10"]
PAPER_TABLE2 = pd.DataFrame(
    [[1.0, 0.117, 0.227, 0.02, 0.039, 0.027, 0.062],
     [0.871, 1.0, 0.352, 0.359, 0.273, 0.098, 0.1],
     [0.719, 0.762, 1.0, 0.481, 0.47, 0.344, 0.14],
     [0.289, 0.137, 0.211, 1.0, 0.066, 0.02, 0.058],
     [0.382, 0.14, 0.238, 0.203, 1.0, 0.027, 0.065],
     [0.234, 0.16, 0.248, 0.094, 0.066, 1.0, 0.086],
     [0.05, 0.101, 0.183, 0.0, 0.0, 0.008, 0.1],
     [0.156, 0.113, 0.227, 0.05, 0.043, 0.031, 0.3]],
    columns=_T2_COLS + ["av_distortion"],
    index=_T2_COLS + ["Gaussian noise 0.1", "Gaussian noise 0.3"],
)
#: Table 5 (ImageNet, Krizhevsky et al.'s AlexNet): upper Lipschitz bound of each layer.
PAPER_TABLE5 = pd.DataFrame({
    "layer": ["Conv. 1", "Conv. 2", "Conv. 3", "Conv. 4", "Conv. 5", "FC1", "FC2", "FC3"],
    "size": ["3x11x11x96", "96x5x5x256", "256x3x3x384", "384x3x3x384", "384x3x3x256", "9216x4096",
             "4096x4096", "4096x1000"],
    "stride": ["4", "1", "1", "1", "1", "", "", ""],
    "upper_bound": [2.75, 10, 7, 7.5, 11, 3.12, 4, 4],
})


SWEEP_RADII = (0.001, 0.005, 0.02, 0.05, 0.2)


# ------------------------------------------------------------------------------------------------
# (a) units vs random directions


def label_purity(labels) -> np.ndarray:
    """Coherence of each row of labels (m, k): the fraction of its k entries equal to its most common
    label (1 = all one class; 1/k at worst)."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise ValueError(f"labels: expected a 2-D (directions, k) array with k >= 1, got {labels.shape}")
    return np.array([np.unique(row, return_counts=True)[1].max() / len(row) for row in labels])


def top_activating(acts, directions, k: int) -> torch.Tensor:
    """Indices (m, k) of the k inputs with the largest projection on each direction, largest first.
    acts: (n, d) activations; directions: (m, d) (rows of the identity = the units themselves)."""
    acts, directions = torch.as_tensor(acts).double(), torch.as_tensor(directions).double()
    if acts.ndim != 2 or directions.ndim != 2 or acts.shape[1] != directions.shape[1]:
        raise ValueError(f"acts, directions: need (n, d) and (m, d), got {tuple(acts.shape)}, "
                         f"{tuple(directions.shape)}")
    if not 1 <= k <= len(acts):
        raise ValueError(f"k: must be in [1, n={len(acts)}], got {k}")
    return torch.topk(directions @ acts.T, k, dim=1).indices


def inspection_stage(models: dict, data, cfg: Config, report: Report) -> None:
    rows, grids = [], {}
    g = torch.Generator().manual_seed(cfg.seed)
    y = data.y_test.numpy()
    chance = label_purity(np.stack([y[torch.randperm(len(y), generator=g)[:cfg.top_k].numpy()]
                                    for _ in range(2000)]))
    for mname, model in models.items():
        for layer in model.layers[:-1]:
            acts = univ.capture(model, data.x_test, [layer])[layer].double()
            live = torch.nonzero(acts.std(0) > 1e-8)[:, 0]  # dead units have no top inputs
            units = torch.eye(acts.shape[1], dtype=torch.float64)[live]
            rand = torch.randn(cfg.n_random, acts.shape[1], generator=g, dtype=torch.float64)
            rand = rand / rand.norm(dim=1, keepdim=True)
            pur = {}
            for basis, dirs in (("unit", units), ("random direction", rand)):
                top = top_activating(acts, dirs, cfg.top_k)
                pur[basis] = label_purity(y[top.numpy()])
                if layer == model.layers[-2]:
                    ids = live[:4].tolist() if basis == "unit" else list(range(4))
                    grids[(mname, basis)] = list(zip(ids, top[:4]))
            from scipy.stats import mannwhitneyu

            p = float(mannwhitneyu(pur["unit"], pur["random direction"]).pvalue)
            for basis, v in (*pur.items(), ("random inputs (chance)", chance)):
                rows.append({"model": mname, "layer": layer, "basis": basis, "n": len(v),
                             "mean_purity": v.mean(), "sem": v.std(ddof=1) / np.sqrt(len(v)),
                             "frac_pure": float((v == 1).mean()), "p_unit_vs_random": p,
                             "dead_units": int(acts.shape[1] - len(live)) if basis == "unit" else 0})
    df = pd.DataFrame(rows)
    report.add_table("units_vs_random", df, (
        f"Label purity of the top-{cfg.top_k} test inputs per unit and per random unit direction of each "
        "hidden layer (Section 3 of the paper, which showed both only qualitatively). p: two-sided "
        "Mann-Whitney test of unit vs random-direction purities. Chance: random sets of test inputs."))
    report.add_figure("top_inputs", _image_grid(grids, data, cfg.top_k),
                      f"Top-{cfg.top_k} test inputs of 4 units and 4 random directions of each model's last "
                      "hidden layer (compare with the paper's Figures 1-2).")


def _image_grid(grids: dict, data, k: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(m, b, i, idx) for (m, b), top in grids.items() for i, idx in top]
    fig, axes = plt.subplots(len(rows), k, figsize=(0.7 * k + 2.2, 0.72 * len(rows)), squeeze=False)
    for r, (m, b, i, idx) in enumerate(rows):
        for c, j in enumerate(idx.tolist()):
            ax = axes[r, c]
            ax.imshow(data.x_test[j].reshape(data.input_shape[-2:]).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(str(int(data.y_test[j])), fontsize=6, pad=1)
        axes[r, 0].set_ylabel(f"{m}\n{'unit' if b == 'unit' else 'rand'} {i}", fontsize=6, rotation=0,
                              ha="right", va="center")
    fig.tight_layout(pad=0.2)
    return fig


# ------------------------------------------------------------------------------------------------
# (b, c) minimal distortions and transfer


def attack_stage(models: dict, metrics: dict, data, cfg: Config, report: Report) -> dict:
    x, y = data.x_test[:cfg.n_attack], data.y_test[:cfg.n_attack]
    rows, adv = [], {}
    for name, model in tqdm(models.items(), desc="L-BFGS"):
        ok = predict(model, x) == y
        xs, ys = x[ok], y[ok]
        x_adv, info = lbfgs_search(model, xs, ys, search_steps=cfg.search_steps, maxiter=cfg.maxiter,
                            seed=cfg.seed, bounds=data.bounds)
        succ = info["success"].to_numpy()
        adv[name] = (xs, ys, x_adv, info)
        paper = PAPER_TABLE1.set_index("model").reindex([name])
        rows.append({"model": name, "train_err": 1 - metrics[name]["train_acc"],
                     "test_err": 1 - metrics[name]["test_acc"], "n_attacked": len(xs),
                     "success_rate": succ.mean(), "av_min_distortion": info["rms_distortion"][succ].mean(),
                     "median_distortion": info["rms_distortion"][succ].median(),
                     "mean_l2": info["l2"][succ].mean(),
                     "mean_rel_l2": float((info["l2"].to_numpy()
                                           / xs.reshape(len(xs), -1).double().norm(dim=1).numpy())[succ].mean()),
                     "paper_train_err": paper["train_err"].iloc[0], "paper_test_err": paper["test_err"].iloc[0],
                     "paper_av_min_distortion": paper["av_min_distortion"].iloc[0],
                     "paper_l2_equiv": paper["av_min_distortion"].iloc[0] * 28})
    t1 = pd.DataFrame(rows)
    report.add_table("table1_min_distortion", t1, (
        "Szegedy et al. Table 1 beside ours. Distortion: sqrt(mean over pixels of (x' - x)^2) of the "
        "minimal L-BFGS perturbation reaching a random other class, over successful attacks. Ours: 8x8 "
        "digits (64 pixels), ReLU nets; the paper's: 28x28 MNIST (784 pixels), sigmoid nets. The same L2 "
        "perturbation has an RMS sqrt(784/64) = 3.5 times larger on digits, so compare mean_l2 (ours) with "
        "paper_l2_equiv = 28 x the paper's distortion too; mean_rel_l2 = ||r|| / ||x||."))
    # Table 2: error rate of every model on every model's adversarial examples (true labels)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    sources = {name: (xs, ys, x_adv, rms_distortion(xs, x_adv).mean().item())
               for name, (xs, ys, x_adv, _) in adv.items()}
    xc, yc = x, y
    for sigma in (0.1, 0.3):
        noisy = (xc + sigma * torch.randn(xc.shape, generator=g)).clamp(0, 1)
        sources[f"Gaussian noise {sigma}"] = (xc, yc, noisy, rms_distortion(xc, noisy).mean().item())
    long = []
    for src, (_, ys, xa, dist) in sources.items():
        for tgt, model in models.items():
            err = float((predict(model, xa) != ys).float().mean())
            paper = PAPER_TABLE2.loc[src, tgt] if src in PAPER_TABLE2.index and tgt in PAPER_TABLE2 else np.nan
            long.append({"examples_for": src, "evaluated_on": tgt, "error": err, "paper_error": paper,
                         "av_distortion": dist})
    t2 = pd.DataFrame(long)
    report.add_table("table2_transfer", t2, (
        "Szegedy et al. Table 2 beside ours: the error rate (vs the true label) of each model on the "
        "minimal adversarial examples made for another (and on Gaussian noise, clipped to [0, 1]); "
        "av_distortion: mean RMS distortion of those inputs. Attacks target a random class, so the "
        "diagonal is the attack's success rate."))
    wide = t2.pivot(index="examples_for", columns="evaluated_on", values="error").loc[list(sources), list(models)]
    report.add_figure("table2_transfer_heatmap", heatmap(wide, "error rate on adversarial examples made for the "
                      "row model", xlabel="evaluated on", ylabel="examples made for"))
    return adv


# ------------------------------------------------------------------------------------------------
# (d) Lipschitz bounds


def lipschitz_stage(models: dict, adv: dict, data, cfg: Config, report: Report) -> None:
    layer_rows, rows = [], []
    pts = data.x_test[-cfg.n_points:]
    lo_b, hi_b = data.bounds
    g = torch.Generator().manual_seed(cfg.seed + 2)
    sweep = []
    for name, model in tqdm(models.items(), desc="Lipschitz"):
        lb = B.layer_bounds(model)
        layer_rows.append(lb.assign(model=name))
        prod, prod_exact = B.product_bound(lb["bound"]), B.product_bound(lb["exact"])
        split = B.split_bound(model)
        local = np.array([B.local_split_bound(model, (p - cfg.local_radius).clamp(lo_b, hi_b),
                                              (p + cfg.local_radius).clamp(lo_b, hi_b), global_bound=split)
                          for p in pts])
        jac_test = B.jacobian_norms(model, data.x_test)
        box = lo_b + (hi_b - lo_b) * torch.rand((2000, *data.input_shape), generator=g)
        lower = max(float(jac_test.max()), float(B.jacobian_norms(model, data.x_train).max()),
                    float(B.jacobian_norms(model, box).max()))
        jac_pts = B.jacobian_norms(model, pts)
        sampled = B.sampled_ratios(model, pts, cfg.sample_radius, n_samples=64, seed=cfg.seed)
        # certified L2 radius from a global bound L: the logit gap f_y - f_j moves at most sqrt(2) L ||r||
        xs, ys, _, info = adv[name]
        logits_ = logits(model, xs).double()
        top2 = logits_.topk(2, dim=1).values
        gap = (top2[:, 0] - top2[:, 1]).numpy()
        succ = info["success"].to_numpy()
        for r in SWEEP_RADII:
            for i, p in enumerate(pts[:cfg.n_sweep]):
                loc = B.local_split_bound(model, (p - r).clamp(lo_b, hi_b), (p + r).clamp(lo_b, hi_b),
                                          global_bound=split)
                sweep.append({"model": name, "radius": r, "point": i, "local_bound": loc,
                              "jacobian_norm": float(jac_pts[i]), "split_bound": split})
        local_holds = bool((jac_pts.numpy() <= local * (1 + 1e-9)).all())
        rows.append({"model": name, "product_bound_fft": prod, "product_bound_exact": prod_exact,
                     "split_bound": split, "split_over_product": split / prod_exact,
                     "best_lower_bound": lower,
                     "local_bound_mean": local.mean(), "local_bound_max": local.max(),
                     "jacobian_max_test": float(jac_test.max()), "jacobian_mean_test": float(jac_test.mean()),
                     "jacobian_max_points": float(jac_pts.max()), "sampled_ratio_max": float(sampled.max()),
                     "certified_l2_product": float(np.mean(gap / (np.sqrt(2) * prod))),
                     "certified_l2_split": float(np.mean(gap / (np.sqrt(2) * split))),
                     "lbfgs_l2_mean": float(info["l2"][succ].mean()), "local_holds": local_holds})
    table = pd.DataFrame(rows)
    ok = ((table["jacobian_max_test"] <= table["split_bound"] * (1 + 1e-9))
          & (table["split_bound"] <= table["product_bound_exact"] * (1 + 1e-9))
          & table["local_holds"])
    table["ordering_holds"] = ok
    sw = pd.DataFrame(sweep)
    sw = (sw.assign(ratio=sw.local_bound / sw.jacobian_norm).groupby(["model", "radius"], as_index=False)
          .agg(local_bound=("local_bound", "mean"), jacobian_norm=("jacobian_norm", "mean"),
               bound_over_jacobian=("ratio", "mean"), split_bound=("split_bound", "first"), n=("point", "size")))
    layers = pd.concat(layer_rows, ignore_index=True)[["model", "layer", "kind", "in_shape", "weight_shape",
                                                       "bound", "exact"]]
    report.add_table("lipschitz_bounds", table, (
        "Global Lipschitz constants of the logits (L2): the product of per-layer bounds (Szegedy's Section "
        "4.3; FFT bounds for convs, and with exact layer norms), the ReLU-splitting bound of univ.bounds "
        "(never above the product), the IBP-localised bound on L-inf boxes of half-width "
        f"{cfg.local_radius} around {len(pts)} test points, and the empirical lower estimates (Jacobian "
        f"spectral norms; random L2 perturbations of radius {cfg.sample_radius}). "
        "best_lower_bound: the largest Jacobian norm over train, test and 2000 uniform random inputs "
        "(the true global constant lies between it and the smallest upper bound). certified_l2: mean "
        "margin / (sqrt(2) L) over the attacked inputs, a lower bound on the distance to any other class; "
        "lbfgs_l2: the L2 norm of the L-BFGS perturbations (to a random class), which it must not exceed."))
    report.add_table("local_bound_vs_radius", sw, (
        "The IBP-localised bound against the half-width of the L-inf box around each point (mean over "
        "points): as the box shrinks, more ReLUs are provably fixed and the bound falls from the global "
        "split bound towards the Jacobian norm at the point, the exact local Lipschitz constant."))
    report.add_table("table5_layer_bounds", layers, (
        "Per-layer upper Lipschitz bounds (Table 5 style): bound = spectral norm (linear) or the FFT bound "
        "on the zero-padded grid (conv); exact = the layer's exact operator norm from its dense matrix."))
    report.add_table("paper_table5", PAPER_TABLE5, "Szegedy et al. Table 5 (AlexNet on ImageNet), for scale.")


# ------------------------------------------------------------------------------------------------


def _lam(lam: float) -> str:
    """The paper's spelling of a weight decay: 1e-4, 1e-2, 1."""
    mant, exp = f"{lam:.0e}".split("e")
    return f"{lam:g}" if lam == 0 or int(exp) == 0 or mant != "1" else f"1e{int(exp)}"


def build_models(data, cfg: Config) -> tuple[dict, dict]:
    """Train (or load from the cache) FC10(lambda), FCw-w-10 and the CNN; returns (models, metrics)."""
    specs = [(f"FC10({_lam(lam)})", "mlp", {"widths": []}, lam) for lam in cfg.lambdas]  # softmax regression
    specs += [(f"FC{w}-{w}-10", "mlp", {"widths": [w, w]}, cfg.mlp_weight_decay) for w in cfg.widths]
    if cfg.cnn:
        specs.append(("CNN", "cnn", {}, cfg.mlp_weight_decay))
    models, metrics = {}, {}
    for label, arch, mcfg, wd in tqdm(specs, desc="train"):
        tc = TrainConfig(epochs=cfg.epochs, batch_size=64, lr=3e-3, weight_decay=wd, seed=cfg.seed)
        models[label], metrics[label] = cached_model(arch, data, seed=cfg.seed, train_cfg=tc, model_cfg=mcfg,
                                                     progress=False)
        models[label].eval()
    return models, metrics


def run(cfg: Config) -> Report:
    data = univ.data.digits(seed=cfg.seed)
    report = Report("intriguing")
    models, metrics = build_models(data, cfg)
    report.add_text("setup", (
        f"sklearn digits: {len(data.x_train)} train / {len(data.x_test)} test 8x8 images in [0, 1]. "
        f"Models: {', '.join(models)}; {cfg.epochs} epochs of Adam (lr 3e-3, batch 64), weight decay = "
        "lambda for FC10(lambda), mlp_weight_decay otherwise. Hidden units are ReLU (the paper: sigmoid). "
        "The paper's tables are MNIST (28x28); see each table for the mapping."))
    adv = attack_stage(models, metrics, data, cfg, report)
    lipschitz_stage(models, adv, data, cfg, report)
    ladder_stage(models, data, cfg, report)
    directions_stage(models, data, cfg, report)
    inspection_stage({k: m for k, m in models.items() if len(m.layers) > 1}, data, cfg, report)
    report.summary = "table1_min_distortion"
    return report

"""The work of ``univ run robust_features``; its settings and entry point are in
``analyses/robust_features.py``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from univ.activations import capture
from univ.adversarial import make_attack, per_sample_norm, robust_accuracy
from univ.cache import cached_model, cached_sae
from univ.data import Dataset, digits
from univ.report import Report
from univ.repro.robust_datasets import ConstructedDataset, nonrobust_dataset, robust_dataset
from univ.train import TrainConfig, evaluate

if TYPE_CHECKING:
    from .robust_features import Config

# Ilyas et al. 2019, CIFAR-10, ResNet-50, test accuracy (%) clean / under L2 PGD eps=0.25 (Fig. 2b, Table 1)
PAPER = {"D_R": (84.0, 48.0), "D_NR": (88.0, 0.0), "D_rand": (63.0, 0.0), "D_det": (44.0, 0.0)}


def _train(data: Dataset, cfg: Config, attack=None):
    tc = TrainConfig(epochs=cfg.epochs, batch_size=64, lr=3e-3, seed=cfg.seed)
    mcfg = {"widths": list(cfg.widths)} if cfg.arch == "mlp" else {"channels": [16, 32], "hidden": cfg.widths[-1]}
    return cached_model(cfg.arch, data, seed=cfg.seed, train_cfg=tc, model_cfg=mcfg,
                        attack=attack, progress=False)[0]


def _distances(c: ConstructedDataset, x_orig: torch.Tensor) -> dict:
    """How far the constructed inputs sit from the inputs they stand for and from where they started."""
    start_to_src = per_sample_norm(x_orig[c.start] - x_orig[c.source], "2")
    moved = bool((c.start != c.source).any())
    return {
        "l2_from_source": float(c.l2_from_source.mean()),
        "l2_from_start": float(c.l2_from_start.mean()) if moved else float("nan"),
        "l2_start_to_source": float(start_to_src.mean()) if moved else float("nan"),
        # 0: the constructed input copies its source; 1: it is as far from it as the random start was
        "copy_ratio": float((c.l2_from_source / start_to_src.clamp_min(1e-12)).mean()) if moved else float("nan"),
        **c.stats,
    }


def _nn_agreement(c: ConstructedDataset, x_orig: torch.Tensor, y_orig: torch.Tensor) -> float:
    """Fraction of constructed inputs whose nearest original training input (L2, the source and start
    excluded) carries the constructed label: do they *look like* their label?"""
    d = torch.cdist(c.data.x_train.flatten(1), x_orig.flatten(1))
    idx = torch.arange(len(d))
    d[idx, c.source] = torch.inf
    d[idx, c.start] = torch.inf
    return float((y_orig[d.argmin(1)] == c.data.y_train).float().mean())


def _sae_view(std, layer: str, data: Dataset, d_det: ConstructedDataset, d_rand: ConstructedDataset,
              cfg: Config) -> pd.DataFrame:
    """Linear probes on the standard model's SAE codes (and raw activations, and pixels) of D_det / D_rand
    inputs. (A probe trained on D_det's t would be vacuous: t = y + 1 is a function of y.)"""
    from sklearn.linear_model import LogisticRegression


    with torch.no_grad():
        def rep(x):  # one forward over all of x (as the inversion saw it)
            return capture(std, x, layer, reduce="flatten", batch_size=len(x))[layer]

        acts_clean, acts_det, acts_rand = rep(data.x_train), rep(d_det.data.x_train), rep(d_rand.data.x_train)
    sae = cached_sae("topk", acts_clean, d_sae=cfg.sae_expansion * acts_clean.shape[1], k=cfg.sae_k, seed=cfg.seed,
                     fit_max_steps=cfg.sae_steps, fit_batch_size=256, fit_progress=False, fit_seed=cfg.seed)
    with torch.no_grad():
        views = {
            "SAE codes": (sae.encode(acts_clean), sae.encode(acts_det), sae.encode(acts_rand)),
            "raw activations": (acts_clean, acts_det, acts_rand),
            "input pixels": (data.x_train_flat, d_det.data.x_train.flatten(1), d_rand.data.x_train.flatten(1)),
        }
    y, t = data.y_train.numpy(), d_det.data.y_train.numpy()
    n = len(y)
    half = np.random.default_rng(cfg.seed).permutation(n)
    tr, te = half[: n // 2], half[n // 2:]
    rows = []
    t_rand = d_rand.data.y_train.numpy()
    for view, (clean, det, rnd) in views.items():
        clean, det, rnd = clean.double().numpy(), det.double().numpy(), rnd.double().numpy()
        p = LogisticRegression(max_iter=2000).fit(clean, y).predict(det)
        rows.append({"representation": view, "probe": "fit on clean D (label y), applied to D_det",
                     "predicts_target_t": float((p == t).mean()), "predicts_original_y": float((p == y).mean())})
        # D_rand's target is independent of y, so a probe can only learn it from the perturbation
        pr = LogisticRegression(max_iter=2000).fit(rnd[tr], t_rand[tr]).predict(rnd[te])
        rows.append({"representation": view, "probe": "fit on half of D_rand (label t), held-out half",
                     "predicts_target_t": float((pr == t_rand[te]).mean()),
                     "predicts_original_y": float((pr == y[te]).mean())})
    return pd.DataFrame(rows)


def _example_figure(data: Dataset, built: dict[str, ConstructedDataset], n: int = 8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("D (source)", data.x_train[:n], data.y_train[:n])]
    rows.append(("start (D_R/D_NR)", data.x_train[built["D_R"].start[:n]], data.y_train[built["D_R"].start[:n]]))
    rows += [(k, c.data.x_train[:n], c.data.y_train[:n]) for k, c in built.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)))
    for r, (name, xs, ys) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(xs[i].reshape(8, 8), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"y={int(ys[i])}", fontsize=7)
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.tight_layout()
    return fig


def run(cfg: Config) -> Report:
    t0 = time.perf_counter()
    data = digits(seed=cfg.seed)
    layer = f"act{len(cfg.widths)}" if cfg.arch == "mlp" else "act3"
    adv = make_attack("pgd", eps=cfg.train_eps, norm="2", steps=cfg.train_steps, bounds=data.bounds)
    std = _train(data, cfg)
    rob = _train(data, cfg, attack=adv)

    built = {
        "D_R": robust_dataset(rob, data, layer, cfg.inv_steps, cfg.inv_step_size, seed=cfg.seed, tag="D_R"),
        "D_NR": robust_dataset(std, data, layer, cfg.inv_steps, cfg.inv_step_size, seed=cfg.seed, tag="D_NR"),
        "D_rand": nonrobust_dataset(std, data, "random", cfg.nr_eps, "2", cfg.nr_steps, seed=cfg.seed),
        "D_det": nonrobust_dataset(std, data, "det", cfg.nr_eps, "2", cfg.nr_steps, seed=cfg.seed),
    }
    t_built = time.perf_counter()

    n_eval = cfg.n_eval or len(data.x_test)
    x_te, y_te = data.x_test[:n_eval], data.y_test[:n_eval]
    attack = make_attack("pgd", eps=cfg.eval_eps, norm="2", steps=cfg.eval_steps, bounds=data.bounds)

    def row(name, model, training, paper=(np.nan, np.nan)):
        return {"train set": name, "training": training,
                "clean_acc": 100 * evaluate(model, data.x_test, data.y_test),
                "robust_acc": 100 * robust_accuracy(model, x_te, y_te, attack),
                "paper_clean": paper[0], "paper_robust": paper[1]}

    rows = [row("D", std, "standard"), row("D", rob, f"adversarial (L2 eps={cfg.train_eps})")]
    models = {"D (standard)": std, "D (adversarial)": rob}
    for name, c in built.items():
        models[name] = _train(c.data, cfg)
        rows.append(row(name, models[name], "standard", PAPER[name]))
    main = pd.DataFrame(rows)
    curve = pd.DataFrame([
        {"model": k, "eps": e, "robust_acc": 100 * robust_accuracy(
            m, x_te, y_te, make_attack("pgd", eps=e, norm="2", steps=cfg.eval_steps, bounds=data.bounds))}
        for k, m in models.items() for e in cfg.eps_curve])
    curve = curve.pivot(index="model", columns="eps", values="robust_acc").loc[list(models)].reset_index()
    curve.columns = ["model"] + [f"eps={e:g}" for e in cfg.eps_curve]

    diag = pd.DataFrame([{"train set": k, **_distances(c, data.x_train)} for k, c in built.items()])
    pair = per_sample_norm(data.x_train - data.x_train[torch.randperm(len(data.x_train))], "2").mean()
    # does the standard / robust model agree with the labels of the constructed sets?
    diag["std_model_acc_on_set"] = [100 * evaluate(std, c.data.x_train, c.data.y_train) for c in built.values()]
    diag["nn_label_agrees"] = [100 * _nn_agreement(c, data.x_train, data.y_train) for c in built.values()]
    diag["robust_model_acc_on_set"] = [100 * evaluate(rob, c.data.x_train, c.data.y_train) for c in built.values()]

    report = Report("robust_features")
    report.add_table(
        "accuracy",
        main,
        f"Test accuracy (%) on the original digits test set of a {cfg.arch} ({layer}: {cfg.widths[-1]} units) "
        "trained on each set; robust "
        f"accuracy under L2 PGD eps={cfg.eval_eps} ({cfg.eval_steps} steps) on {n_eval} test inputs. Paper: "
        "Ilyas et al. 2019, CIFAR-10 ResNet-50, robust accuracy at L2 eps=0.25 (D_rand/D_det robust numbers are "
        "the brief's; the paper's Table 1 reports their clean accuracy only).",
    )
    report.add_table(
        "robustness_curve",
        curve,
        f"Robust accuracy (%) under L2 PGD ({cfg.eval_steps} steps) on the same {n_eval} test inputs, by radius: "
        "partial robustness inherited from D_R would show at radii below the headline one.",
    )
    report.add_table(
        "construction",
        diag,
        f"Guard against a void test. Mean L2 distances of the constructed inputs from the input they stand for "
        f"(source) and from their random start; a random pair of training inputs is {float(pair):.2f} apart. "
        "copy_ratio = ||x_new - x_source|| / ||x_start - x_source|| (0 = inversion copied the source). "
        f"rep_dist_*: distance at the inverted layer `{layer}` ({cfg.widths[-1]} units) before/after inversion. "
        "attack_success: the standard model classifies the D_rand/D_det input as its new label. "
        "*_acc_on_set: % of the set's inputs a model labels with the set's label; nn_label_agrees: % whose "
        "nearest original training input (source and start excluded) has that label (an independent judge of "
        "what the input looks like).",
    )
    try:
        sae = _sae_view(std, layer, data, built["D_det"], built["D_rand"], cfg)
        report.add_table(
            "sae_view",
            sae,
            f"Standard model, layer `{layer}`: a TopK SAE ({cfg.sae_expansion}x, k={cfg.sae_k}) fit on clean training "
            "activations; logistic-regression probes on SAE codes, raw activations and pixels of the D_det inputs. "
            "Chance is 10%. If the codes of D_det inputs predict the target t (which D_det is labelled with) while "
            "the pixels predict the original y, the non-robust features that carry D_det's label are visible "
            "in the SAE basis. The D_rand probe asks whether the target is linearly decodable at all when it "
            "is independent of the image's class.",
        )
    except ImportError as e:  # univ.sae is optional for this analysis
        report.add_text("sae_view", f"skipped: {e}")
    report.add_figure("examples", _example_figure(data, built),
                      "Training inputs of each constructed set with their labels (first 8 sources).")
    report.summary = "accuracy"
    report.meta["timing_s"] = {"construct": t_built - t0, "total": time.perf_counter() - t0}
    return report

"""The work of ``univ run smoothed_gradients``; its settings and entry point are in
``analyses/smoothed_gradients.py``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from univ.adversarial import clip_to_box, make_attack, per_sample_norm
from univ.cache import cached_model
from univ.data import digits
from univ.report import Report
from univ.repro.smoothing import smoothed_ascent, smoothed_gradient, smoothed_proba
from univ.train import TrainConfig

if TYPE_CHECKING:
    from .smoothed_gradients import Config


@dataclass(frozen=True)
class Method:
    """One classifier whose gradient is studied: a base model, smoothed with ``sigma`` (0 = plain)."""

    name: str
    model: torch.nn.Module
    sigma: float
    kind: str


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


def _nn_labels(x: torch.Tensor, x_train: torch.Tensor, y_train: torch.Tensor) -> torch.Tensor:
    """1-nearest-neighbour (L2) labels from the training set: the independent judge."""
    return y_train[torch.cdist(x.flatten(1), x_train.flatten(1)).argmin(1)]


def _image_grid(columns: dict[str, torch.Tensor], n: int, signed: bool, titles: dict[str, list[str]] | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    fig, axes = plt.subplots(n, len(names), figsize=(1.15 * len(names), 1.2 * n), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            img = columns[name][i].reshape(8, 8).numpy()
            if signed and name != "input":
                m = float(np.abs(img).max()) or 1.0
                ax.imshow(img, cmap="RdBu_r", vmin=-m, vmax=m)
            else:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=6)
            if titles and name in titles:
                ax.set_xlabel(titles[name][i], fontsize=6)
    fig.tight_layout()
    return fig


def run(cfg: Config) -> Report:
    t0 = time.perf_counter()
    data = digits(seed=cfg.seed)
    mcfg = {"widths": list(cfg.widths)}

    def fit(noise=0.0, attack=None):
        tc = TrainConfig(epochs=cfg.epochs, batch_size=64, lr=3e-3, seed=cfg.seed, noise_sigma=noise,
                         clip_to_bounds=False)  # Cohen et al.'s noise is not clipped to the box
        return cached_model("mlp", data, seed=cfg.seed, train_cfg=tc, model_cfg=mcfg, attack=attack,
                            progress=False)[0]

    std = fit()
    rob = fit(attack=make_attack("pgd", eps=cfg.train_eps, norm="2", steps=cfg.train_steps, bounds=data.bounds))
    methods = [Method("standard", std, 0.0, "plain"), Method("robust (adv. trained)", rob, 0.0, "plain")]
    for s in cfg.sigmas:
        base = fit(noise=s)
        methods += [Method(f"smoothed s={s:g}", base, s, "smoothed, noise-trained base"),
                    Method(f"smoothed s={s:g} (std base)", std, s, "smoothed, standard base"),
                    Method(f"noise-trained s={s:g}, plain", base, 0.0, "plain, noise-trained")]
    t_models = time.perf_counter()

    n = min(cfg.n_inputs, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    g = torch.Generator().manual_seed(cfg.seed)
    t = (y + torch.randint(1, data.n_classes, y.shape, generator=g)) % data.n_classes
    mu = torch.stack([data.x_train[data.y_train == c].mean(0) for c in range(data.n_classes)])
    mean_dir = mu[t] - mu[y]

    grads = {m.name: smoothed_gradient(m.model, x, t, m.sigma, cfg.n_samples, seed=cfg.seed).grad
             for m in methods}
    # baselines that are not gradients: the class-mean direction and a random direction
    rand_dir = torch.randn(x.shape, generator=g)
    dirs = {**grads, "baseline: class-mean direction": mean_dir, "baseline: random direction": rand_dir}
    kinds = {m.name: m.kind for m in methods}

    rows, ascended = [], {}
    shown_eps = sorted(cfg.ascent_eps)[len(cfg.ascent_eps) // 2]  # the largest saturates the 1-NN judge
    for name, d in dirs.items():
        m = next((mm for mm in methods if mm.name == name), None)
        if m is not None:
            clean = smoothed_proba(m.model, data.x_test, m.sigma, 64, seed=cfg.seed + 2).argmax(1)
            acc = float((clean == data.y_test).float().mean())
        else:
            acc = float("nan")
        row = {"method": name, "kind": kinds.get(name, "baseline"), "sigma": m.sigma if m else float("nan"),
               "clean_acc": 100 * acc,
               "cos_robust_grad": float(_cos(d, grads["robust (adv. trained)"]).mean()),
               "cos_class_mean_dir": float(_cos(d, mean_dir).mean())}
        for e in cfg.ascent_eps:
            if m is not None:
                x_adv = smoothed_ascent(m.model, x, t, m.sigma, e, cfg.ascent_steps,
                                        n_samples=cfg.ascent_samples, bounds=data.bounds, seed=cfg.seed)
                own = smoothed_proba(m.model, x_adv, m.sigma, 256, seed=cfg.seed + 1).argmax(1)
                row[f"model_t@{e:g}"] = 100 * float((own == t).float().mean())
            else:  # a straight step of length eps along the direction, clipped to the box
                step = d / per_sample_norm(d, "2").clamp_min(1e-12).reshape(-1, 1, 1, 1)
                x_adv = clip_to_box(x + e * step, data.bounds)
                row[f"model_t@{e:g}"] = float("nan")
            row[f"1nn_t@{e:g}"] = 100 * float((_nn_labels(x_adv, data.x_train, data.y_train) == t).float().mean())
            if e == shown_eps:
                ascended[name] = x_adv
        rows.append(row)
    table = pd.DataFrame(rows)

    report = Report("smoothed_gradients")
    report.add_table(
        "alignment",
        table,
        f"{n} digits test inputs x (class y), one random target t != y each. Gradients of log p_t (smoothed: "
        f"log of the MC mean of softmax_t over {cfg.n_samples} Gaussian draws). cos_*: mean cosine of the "
        "gradient with the robust model's gradient and with mu_t - mu_y (training class means). model_t@eps / "
        f"1nn_t@eps: targeted L2 ascent on log p_t within eps ({cfg.ascent_steps} steps, "
        f"{cfg.ascent_samples} draws per step when smoothed); % of results the attacked classifier labels t, "
        "and % whose nearest training image (1-NN, L2; the independent judge) is of class t. Baselines: a "
        "straight step of length eps along the class-mean or a random direction. clean_acc: test accuracy of "
        "the (smoothed) classifier. Kaur et al. 2019 report no numbers for this, only images: smoothed "
        "classifiers' large-eps targeted examples look like the target class, increasingly with sigma, "
        "like a robust model's.",
    )
    k = min(cfg.n_grid, n)
    show = ["standard", "robust (adv. trained)"] + [f"smoothed s={s:g}" for s in cfg.sigmas]
    report.add_figure("gradients", _image_grid({"input": x[:k], **{s: grads[s][:k] for s in show},
                                                "class-mean dir": mean_dir[:k]}, k, signed=True),
                      "Gradients of log p_t (red: increase the pixel). Each row: one input, its target t in the "
                      "ascent figure.")
    judge_titles = {s: [f"1NN={int(v)}" for v in _nn_labels(ascended[s][:k], data.x_train, data.y_train)]
                    for s in show + ["baseline: class-mean direction"]}
    cols = {"input": x[:k], **{s: ascended[s][:k] for s in show},
            "baseline: class-mean direction": ascended["baseline: class-mean direction"][:k]}
    report.add_figure("ascent", _image_grid(cols, k, signed=False, titles={"input": [
        f"y={int(a)} -> t={int(b)}" for a, b in zip(y[:k], t[:k])], **judge_titles}),
        f"Large-eps (L2 {shown_eps:g}) targeted ascent towards t; below each image the 1-NN judge's label.")
    report.summary = "alignment"
    report.meta["timing_s"] = {"models": t_models - t0, "total": time.perf_counter() - t0}
    return report

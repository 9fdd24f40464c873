"""The work of ``univ run purification``; its settings and entry point are in
``analyses/purification.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ.adversarial import make_attack, robust_accuracy
from univ.cache import cached_sae
from univ.data import Dataset
from univ.models import build_model
from univ.report import Report
from univ.repro import purity as P
from univ.train import TrainConfig, train

if TYPE_CHECKING:
    from .purification import Config

KINDS = ("init", "clean", "fgm", "pgd")


def make_data(cfg: Config) -> tuple[Dataset, torch.Tensor]:
    """The signed sparse-coding task; returns (dataset, w*). extra holds M, the signed codes and w*."""
    base = univ.data.sparse_coding(cfg.n_samples, cfg.d, cfg.n_atoms, k=tuple(cfg.k), noise=0.0,
                                   seed=cfg.seed)
    M = base.extra["dictionary"]
    if cfg.orthonormal:
        M = P.orthonormal_dictionary(M).float()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    Z = torch.cat([base.extra["codes_test"], base.extra["codes_train"]])
    Z = Z * (2 * torch.randint(0, 2, Z.shape, generator=g) - 1)  # random signs: symmetric codes, as in the paper
    w_star = (2 * torch.randint(0, 2, (cfg.n_atoms,), generator=g) - 1).float()
    X = Z @ M.T + cfg.noise * torch.randn(len(Z), cfg.d, generator=g)
    y = (Z @ w_star > 0).long()
    n_test = len(base.x_test)
    data = Dataset("sparse_coding_signed", X[n_test:], y[n_test:], X[:n_test], y[:n_test], (cfg.d,), 2, None,
                   extra={"dictionary": M, "codes_train": Z[n_test:], "codes_test": Z[:n_test], "w_star": w_star})
    return data, w_star


def _attacks(cfg: Config, train_time: bool):
    steps = cfg.pgd_steps if train_time else 2 * cfg.pgd_steps
    return {"fgm": make_attack("fgsm", eps=cfg.eps, norm="2", bounds=None),
            "pgd": make_attack("pgd", eps=cfg.eps, norm="2", steps=steps, bounds=None)}


def _code_recovery(codes: torch.Tensor, Z: torch.Tensor, threshold: float = 0.8) -> tuple[float, float]:
    """Mean over true signed features (relu(z), relu(-z)) of the best Pearson correlation with a latent,
    and the fraction of features with one >= threshold."""
    F = torch.cat([Z.clamp_min(0), (-Z).clamp_min(0)], dim=1).double()
    A = codes.double()
    F = F[:, F.std(0) > 0]
    A = A[:, A.std(0) > 0]
    if A.shape[1] == 0:
        return 0.0, 0.0
    Fz = (F - F.mean(0)) / F.std(0)
    Az = (A - A.mean(0)) / A.std(0)
    best = (Fz.T @ Az / (len(F) - 1)).max(1).values
    return float(best.mean()), float((best >= threshold).double().mean())


def _readout_dirs(x: torch.Tensor, codes: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Least-squares input-space direction of each latent: (d_sae, d)."""
    X = (x - x.mean(0)).double()
    A = (codes - codes.mean(0)).double()
    G = X.T @ X + ridge * len(X) * torch.eye(X.shape[1], dtype=torch.float64)
    return torch.linalg.solve(G, X.T @ A).T


def _sae_scores(acts_tr, acts_te, x_te, Z_te, M, cfg: Config, seed: int) -> dict:
    sae = cached_sae("topk", acts_tr, d_sae=2 * cfg.n_atoms, k=int(cfg.k[1]), seed=seed,
                     fit_max_steps=cfg.sae_steps, fit_patience=None, fit_progress=False, fit_batch_size=256)
    with torch.no_grad():
        codes = sae.encode(acts_te)
        fvu = univ.sae.fvu(acts_te, sae.decode(codes))
    mcc, frac = _code_recovery(codes, Z_te)
    alive = codes.abs().sum(0) > 0
    dirs = _readout_dirs(x_te, codes[:, alive]) if alive.any() else torch.ones(1, M.shape[0])
    mmcs, rec = univ.sae.dictionary_recovery(dirs, M, threshold=0.9)
    return {"sae_code_mcc": mcc, "sae_code_frac_0.8": frac, "sae_readout_mmcs": mmcs, "sae_readout_frac_0.9": rec,
            "sae_fvu": fvu}


def _train_kinds(data: Dataset, cfg: Config, seed: int) -> dict:
    """init / clean / fgm / pgd networks of one seed, all from the same initialisation and batch order."""
    mk = dict(input_shape=data.input_shape, widths=[cfg.width], n_classes=2)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
    atk = _attacks(cfg, train_time=True)
    nets = {"init": build_model("mlp", seed=seed, **mk).eval()}
    for kind in ("clean", "fgm", "pgd"):
        model = build_model("mlp", seed=seed, **mk)
        nets[kind], _ = train(model, data, tcfg, attack=None if kind == "clean" else atk[kind], progress=False)
    return nets


def run(cfg: Config) -> Report:
    data, w_star = make_data(cfg)
    M = data.extra["dictionary"]
    label_dir = M @ w_star  # the dense direction a clean linear readout uses
    x_ev, y_ev = data.x_test[: cfg.n_eval], data.y_test[: cfg.n_eval]
    Z_ev = data.extra["codes_test"][: cfg.n_eval]
    eval_atk = _attacks(cfg, train_time=False)
    rand = {k: P.expected_random_purity(cfg.n_atoms, k) for k in (1, cfg.topk)} if cfg.orthonormal else {
        k: P.random_purity(M, k)[0] for k in (1, cfg.topk)}
    neuron_rows, net_rows, dec_rows = [], [], []
    x_sae_tr = data.x_train[:10000]
    raw_sae = _sae_scores(x_sae_tr, x_ev, x_ev, Z_ev, M, cfg, cfg.seed) if cfg.sae else {}
    for s in tqdm([cfg.seed + i for i in range(cfg.seeds)], desc="purification"):
        nets = _train_kinds(data, cfg, s)
        for kind, net in nets.items():
            W = net.fc1.weight.detach()
            acts_ev = univ.capture(net, x_ev, names=["act1"])["act1"]
            alive = (acts_ev > 0).float().mean(0) >= cfg.alive_fraction
            tab = P.neuron_table(W, M, ks=(1, cfg.topk), direction=label_dir)
            tab.insert(0, "kind", kind)
            tab.insert(0, "seed", s)
            tab["alive"] = alive.numpy()
            tab["label_cos"] = ((W.double() @ label_dir.double()).abs()
                                / (W.double().norm(dim=1) * label_dir.double().norm())).numpy()
            neuron_rows.append(tab)
            a = tab[tab.alive]
            row = {"seed": s, "kind": kind, "clean_acc": univ.train.evaluate(net, x_ev, y_ev),
                   "fgm_acc": robust_accuracy(net, x_ev, y_ev, eval_atk["fgm"]),
                   "pgd_acc": robust_accuracy(net, x_ev, y_ev, eval_atk["pgd"]), "alive": float(alive.float().mean()),
                   "purity_1": a.purity_1.mean(), f"purity_{cfg.topk}": a[f"purity_{cfg.topk}"].mean(),
                   "dense_mass": a.dense_mass.mean(), "participation": a.participation.mean(),
                   "label_cos": a.label_cos.mean(),
                   "neuron_mmcs": univ.sae.dictionary_recovery(W[alive] if alive.any() else W, M, 0.9)[0]}
            if cfg.sae:
                acts_tr = univ.capture(net, x_sae_tr, names=["act1"])["act1"]
                row.update(_sae_scores(acts_tr, acts_ev, x_ev, Z_ev, M, cfg, s))
            net_rows.append(row)
        Wc = nets["clean"].fc1.weight.detach()
        for kind in ("fgm", "pgd"):
            Wa = nets[kind].fc1.weight.detach()
            dec = P.decompose(Wc, Wa)
            vt = P.neuron_table(dec.v, M, ks=(1, cfg.topk), direction=label_dir)
            v_label = ((dec.v @ label_dir.double()).abs() / (dec.v.norm(dim=1) * label_dir.double().norm())
                       .clamp_min(1e-300))
            dec_rows.append({"seed": s, "adv": kind, "beta_median": float(dec.beta.median()),
                             "cos_mean": float(dec.cos.mean()), "resid_share_mean": float(dec.resid_share.mean()),
                             "purity_1_v": vt.purity_1.mean(), "purity_1_adv": float(P.purity(Wa, M).mean()),
                             "purity_1_clean": float(P.purity(Wc, M).mean()),
                             "v_label_cos": float(v_label.mean()),
                             "clean_label_cos": float(((Wc.double() @ label_dir.double()).abs()
                                                       / (Wc.double().norm(dim=1) * label_dir.norm())).mean())})
    neurons = pd.concat(neuron_rows, ignore_index=True)
    nets_df = pd.DataFrame(net_rows)
    dec_df = pd.DataFrame(dec_rows)
    return _report(cfg, neurons, nets_df, dec_df, raw_sae, rand)


def _report(cfg, neurons, nets_df, dec_df, raw_sae, rand) -> Report:
    report = Report("purification")
    metrics = [c for c in nets_df.columns if c not in ("seed", "kind")]
    summ = nets_df.groupby("kind", sort=False)[metrics].agg(["mean", "std"])
    summ.columns = [f"{m}_{s}" for m, s in summ.columns]
    summ = summ.reset_index()
    k = cfg.topk
    ref = pd.DataFrame([{"kind": "random direction (expected)", "purity_1_mean": rand[1],
                         f"purity_{k}_mean": rand[k], "dense_mass_mean": 1 - rand[k]},
                        {"kind": "SAE on raw inputs", **{f"{m}_mean": v for m, v in raw_sae.items()}}])
    summ = pd.concat([summ, ref], ignore_index=True)
    cols = ["kind"] + [c for c in summ.columns if c != "kind" and c.endswith(("_mean", "_std"))]
    summ = summ[cols]
    report.add_table("summary", summ, "Per kind of training (same initialisations): accuracy on clean, FGM and PGD "
                     f"(L2, eps={cfg.eps}) test inputs; mean purity of alive first-layer neurons; SAE scores. "
                     "mean/std over seeds (each seed's value is the mean over its neurons).")
    report.add_text("notes", _notes(nets_df, dec_df, rand, raw_sae, k))
    report.add_table("decomposition", dec_df, "w_clean = beta * w_adv + v per neuron (same init): median beta, mean "
                     "cosine, ||v||^2/||w_clean||^2, purity of v and of the weights, and |cos| with the dense label "
                     "direction M w*.")
    report.add_table("networks", nets_df, "One row per trained network.")
    report.add_table("neurons", neurons, "One row per first-layer neuron.")
    report.add_figure("purity_hist", _hist(neurons, rand, k), "Histograms of top-1 and top-k purity and of the "
                      "participation ratio of alive neurons, pooled over seeds; dashed: a random direction.")
    report.summary = "summary"
    return report


def _hist(neurons: pd.DataFrame, rand: dict, k: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    a = neurons[neurons.alive]
    for ax, col, ref in ((axes[0], "purity_1", rand[1]), (axes[1], f"purity_{k}", rand[k]),
                         (axes[2], "participation", None)):
        for kind in KINDS:
            v = a.loc[a.kind == kind, col]
            ax.hist(v, bins=30, alpha=0.45, label=f"{kind} (n={len(v)})", density=True,
                    range=(0, 1) if col != "participation" else None)
        if ref is not None:
            ax.axvline(ref, color="k", ls="--", lw=1)
        ax.set_xlabel(col)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _notes(nets_df: pd.DataFrame, dec_df: pd.DataFrame, rand: dict, raw_sae: dict, k: int) -> str:
    g = nets_df.set_index(["seed", "kind"])
    lines = []
    for adv in ("fgm", "pgd"):
        d1 = g.xs(adv, level="kind").purity_1 - g.xs("clean", level="kind").purity_1
        dk = g.xs(adv, level="kind")[f"purity_{k}"] - g.xs("clean", level="kind")[f"purity_{k}"]
        lines.append(f"- {adv.upper()} vs clean (paired over {len(d1)} seeds, alive neurons): purity_1 "
                     f"{d1.mean():+.3f} ± {d1.std():.3f} (increase in {int((d1 > 0).sum())}/{len(d1)} seeds), "
                     f"purity_{k} {dk.mean():+.3f} ± {dk.std():.3f}; a random direction has purity_1 {rand[1]:.3f}.")
    m = nets_df.groupby("kind")[["clean_acc", "pgd_acc", "purity_1"]].agg(["mean", "std"])
    lines.append("- accuracy clean / PGD: " + "; ".join(
        f"{kd} {m.loc[kd, ('clean_acc', 'mean')]:.3f} / {m.loc[kd, ('pgd_acc', 'mean')]:.3f}" for kd in m.index))
    if "sae_code_mcc" in nets_df:
        s = nets_df.groupby("kind")[["sae_code_mcc", "sae_readout_mmcs"]].agg(["mean", "std"])
        lines.append("- SAE atom recovery (code MCC / readout MMCS, mean ± sd over seeds): " + "; ".join(
            f"{kd} {s.loc[kd, ('sae_code_mcc', 'mean')]:.3f} ± {s.loc[kd, ('sae_code_mcc', 'std')]:.3f} / "
            f"{s.loc[kd, ('sae_readout_mmcs', 'mean')]:.3f}" for kd in s.index)
            + f"; on the raw inputs {raw_sae.get('sae_code_mcc', np.nan):.3f} / "
            f"{raw_sae.get('sae_readout_mmcs', np.nan):.3f}.")
    if len(dec_df):
        t = dec_df.groupby("adv")[["beta_median", "cos_mean", "resid_share_mean", "purity_1_v", "v_label_cos"]].mean()
        lines.append("- w_clean = beta w_adv + v: " + "; ".join(
            f"{a}: beta {r.beta_median:.2f}, cos {r.cos_mean:.2f}, ||v||^2 share {r.resid_share_mean:.2f}, "
            f"purity_1(v) {r.purity_1_v:.3f}, |cos(v, M w*)| {r.v_label_cos:.3f}" for a, r in t.iterrows()))
    return "\n".join(lines)

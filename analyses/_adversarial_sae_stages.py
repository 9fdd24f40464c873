"""The work of ``univ run adversarial_sae``; its settings and entry point are in
``analyses/adversarial_sae.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

import univ
from univ import adversarial as adv
from univ.adversarial import aligned
from univ.cache import cached_model, cached_sae
from univ.models import predict
from univ.report import Report, dashboard, heatmap
from univ.repro.szegedy import minimal_distortion_table
from univ.train import TrainConfig

if TYPE_CHECKING:
    from .adversarial_sae import Config

LAYERS = {"mlp": "act2", "cnn": "act3"}
PERTURBATIONS = ("adversarial", "random (same L2)", "random (same activation change)", "gaussian (same RMS)",
                 "isotropic (activation space)")


def _models(cfg: Config, data) -> dict:
    """{name: (model, arch, adversarially_trained)}: standard and PGD-trained subjects, plus
    transfer targets (an MLP of another seed, and the CNN)."""
    tc = TrainConfig(epochs=cfg.epochs, lr=3e-3, seed=cfg.seed)
    attack_kw = dict(eps=cfg.eps, steps=cfg.adv_train_steps, step_size=2.5 * cfg.eps / cfg.adv_train_steps)
    out = {}
    for arch in dict.fromkeys((*cfg.archs, "cnn")):
        out[arch] = (cached_model(arch, data, seed=cfg.seed, train_cfg=tc, progress=False)[0], arch, False)
        if arch in cfg.archs:
            m, _ = cached_model(arch, data, seed=cfg.seed, train_cfg=tc, progress=False,
                                attack=adv.make_attack("pgd", **attack_kw, bounds=data.bounds))
            out[f"{arch}-adv"] = (m, arch, True)
    out["mlp-seed2"] = (cached_model("mlp", data, seed=cfg.seed + 1, train_cfg=tc, progress=False)[0], "mlp", False)
    for m, _, _ in out.values():
        m.eval()
    return out


def _mean_ci(v) -> tuple[float, float, float]:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def _selective_latents(assoc: pd.DataFrame, n: int) -> pd.DataFrame:
    """The most class-selective latents that fire often enough, at most one per class."""
    live = assoc[(assoc.frequency >= 0.02) & assoc.class_share.notna()]
    best = live.sort_values("class_share", ascending=False).drop_duplicates("top_class")
    return best.head(n)


def _concentration(name, sae, acts, bases, deltas, clean) -> list[dict]:
    rows = []
    for pert, delta in deltas.items():
        for bname, (basis, method) in bases.items():
            df = adv.project(delta, basis, method=method, clean=clean if method == "codes" else None)
            metrics = ["norm"] + [c for c in df.columns if c.startswith("frac_top")]
            metrics += ["participation_ratio"] if method != "omp" else []
            metrics += ["n_changed", "jaccard"] if method == "codes" else []
            for met in metrics:
                mean, lo, hi = _mean_ci(df[met])
                rows.append({"model": name, "perturbation": pert, "basis": bname, "metric": met, "mean": mean,
                             "ci_low": lo, "ci_high": hi, "n": int(df[met].notna().sum())})
            if pert in ("adversarial", "random (same L2)", "random (same activation change)"):
                rows[-1]["_per_sample"] = df  # kept for the paired adversarial - random difference
    return rows


def _paired_excess(name, per_sample: dict) -> list[dict]:
    """Per basis and control, the paired per-sample difference adversarial - control of frac_top{k}."""
    rows = []
    for bname in dict.fromkeys(b for _, b in per_sample):
        a = per_sample[("adversarial", bname)]
        for control in ("random (same L2)", "random (same activation change)"):
            r = per_sample[(control, bname)]
            mets = [c for c in a.columns if c.startswith("frac_top")]
            mets += ["participation_ratio"] if a["method"].iloc[0] != "omp" else []
            mets += ["n_changed", "jaccard"] if "n_changed" in a.columns else []
            for met in mets:
                mean, lo, hi = _mean_ci(a[met].to_numpy() - r[met].to_numpy())
                rows.append({"model": name, "control": control, "basis": bname, "metric": met,
                             "adversarial": a[met].mean(), "control_value": r[met].mean(), "difference": mean,
                             "ci_low": lo, "ci_high": hi})
    return rows


def _top_inputs_figure(sae, acts_tr, x_tr, hits: pd.DataFrame, n_img: int = 6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        codes = sae.encode(acts_tr.float())
    rows = pd.concat([hits[hits.direction == "raised"].head(3), hits[hits.direction == "lowered"].head(3)])
    fig, axes = plt.subplots(len(rows), n_img, figsize=(1.3 * n_img, 1.45 * len(rows)))
    for r, (_, h) in enumerate(rows.iterrows()):
        top = codes[:, int(h.latent)].argsort(descending=True)[:n_img]
        for c in range(n_img):
            ax = axes[r, c]
            ax.imshow(x_tr[top[c]].reshape(8, 8).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"{h.direction}\nlatent {int(h.latent)}\nclass {int(h.top_class)}", fontsize=7)
    fig.suptitle("Top-activating training digits of the latents adversarial perturbations move most", fontsize=9)
    fig.tight_layout()
    return fig


def _feature_attacks(name, model, layer, sae, x, y, x_adv, x_rand, chosen, eps, bounds) -> list[dict]:
    def codes(xx):
        return sae.encode(univ.capture(model, xx, layer, batch_size=1024)[layer]).detach()

    z0, z_adv, z_rand = codes(x), codes(x_adv), codes(x_rand)
    rows = []
    for _, lat in chosen.iterrows():
        j, cls = int(lat.latent), int(lat.top_class)
        feat = aligned.sae_latent(sae, j)
        for mode in ("raise", "suppress"):
            sel = (z0[:, j] == 0) & (y != cls) if mode == "raise" else z0[:, j] > 0
            if int(sel.sum()) == 0:
                continue
            xs = x[sel]
            xf = aligned.feature_attack(model, xs, layer, feat, increase=mode == "raise", eps=eps, steps=20,
                                        bounds=bounds)
            zf = codes(xf)[:, j]
            on = (lambda z: z > 0) if mode == "raise" else (lambda z: z == 0)
            pred = predict(model, xf)
            rows.append({"model": name, "latent": j, "class": cls, "class_share": float(lat.class_share),
                         "mode": mode, "n": int(sel.sum()), "success": float(on(zf).float().mean()),
                         "pgd_untargeted": float(on(z_adv[sel, j]).float().mean()),
                         "random_same_l2": float(on(z_rand[sel, j]).float().mean()),
                         "pred_is_latent_class": float((pred == cls).float().mean()),
                         "pred_changed": float((pred != y[sel]).float().mean())})
    return rows


def _analyse_subject(name, model, arch, data, x, y, cfg, report_rows):
    layer = LAYERS[arch]
    univ.utils.seed_everything(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 7919)  # not the random dictionary's seed
    acts_tr = univ.capture(model, data.x_train, [layer])[layer]
    d = acts_tr.shape[1]
    sae = cached_sae("topk", acts_tr, d_sae=cfg.expansion * d, k=min(cfg.k, cfg.expansion * d), seed=cfg.seed,
                     fit_max_steps=cfg.sae_steps, fit_patience=None, fit_progress=False, fit_batch_size=256,
                     fit_seed=cfg.seed)
    acts_te = univ.capture(model, data.x_test, [layer])[layer]
    with torch.no_grad():
        fvu = float(univ.sae.fvu(acts_te, sae.decode(sae.encode(acts_te))))
    ok = predict(model, x) == y
    xs, ys = x[ok], y[ok]
    x_adv = adv.pgd(model, xs, ys, eps=cfg.eps, steps=cfg.attack_steps, seed=cfg.seed, bounds=data.bounds)
    x_rand = adv.matched_random(xs, x_adv, seed=cfg.seed, bounds=data.bounds)
    x_gauss = adv.gaussian_noise(xs, x_adv, seed=cfg.seed + 1, bounds=data.bounds)
    acts = {k: univ.capture(model, v, layer, batch_size=1024, dtype=torch.float64)[layer]
            for k, v in {"clean": xs, "adv": x_adv, "rand": x_rand, "gauss": x_gauss}.items()}
    h0 = acts["clean"]
    d_adv = acts["adv"] - h0
    # the random direction again, rescaled until its *activation* change is as large as the attack's:
    # code-based metrics depend on the size of the change, not only on its direction
    x_big, h_big = x_rand, acts["rand"]
    for _ in range(4):
        ratio = d_adv.norm(dim=1) / (h_big - h0).norm(dim=1).clamp_min(1e-12)
        x_big = (xs + (x_big - xs) * ratio.float().reshape(-1, 1, 1, 1)).clamp(0, 1)
        h_big = univ.capture(model, x_big, layer, batch_size=1024, dtype=torch.float64)[layer]
    iso = torch.randn(d_adv.shape, generator=g, dtype=torch.float64)
    iso = iso / iso.norm(dim=1, keepdim=True) * d_adv.norm(dim=1, keepdim=True)
    deltas = dict(zip(PERTURBATIONS, (d_adv, acts["rand"] - h0, h_big - h0, acts["gauss"] - h0, iso)))
    D = adv.directions(sae)
    bases = {"SAE codes": (sae, "codes"), "SAE decoder (OMP)": (D, "omp"),
             "random dictionary (OMP)": (adv.random_dictionary(D.shape[0], d, seed=cfg.seed), "omp"),
             "neuron": (adv.neuron_basis(d), "lstsq"), "PCA (clean)": (adv.pca_basis(acts_tr), "lstsq"),
             "random orthonormal": (adv.random_orthonormal(d, seed=cfg.seed), "lstsq")}
    rows = _concentration(name, sae, acts, bases, deltas, h0)
    per_sample = {(r["perturbation"], r["basis"]): r.pop("_per_sample") for r in rows if "_per_sample" in r}
    y_adv = predict(model, x_adv)
    with torch.no_grad():
        assoc = adv.latent_class_association(sae.encode(acts_tr.float()), data.y_train)
    hits = adv.most_changed_latents(sae, h0, acts["adv"], ys, y_adv, assoc=assoc, top=5).assign(model=name)
    chosen = _selective_latents(assoc, cfg.n_targeted)
    feats = _feature_attacks(name, model, layer, sae, xs, ys, x_adv, x_rand, chosen, cfg.eps, data.bounds)
    scale = float(h0.norm(dim=1).median())
    dirs = D[torch.as_tensor(chosen.latent.to_numpy().copy())]
    steer = aligned.steering_effect(model, xs, layer, dirs / dirs.norm(dim=1, keepdim=True) * scale,
                                    chosen.top_class.to_numpy(), alphas=(0.25, 0.5, 1.0), n_random=2,
                                    seed=cfg.seed).assign(model=name)
    report_rows["concentration"] += rows
    report_rows["excess"] += _paired_excess(name, per_sample)
    report_rows["hits"].append(hits)
    report_rows["features"] += feats
    report_rows["steering"].append(steer)
    report_rows["sae"].append({"model": name, "layer": layer, "d": d, "d_sae": D.shape[0], "k": sae.k,
                               "fvu_test": fvu, "dead_fraction": float((assoc.frequency == 0).mean()),
                               "n_attacked": int(len(xs)),
                               "pgd_success": float((y_adv != ys).float().mean())})
    return sae, acts_tr, hits, assoc


def _dashboard_view(sae, acts_tr, data, hits):
    tags = [""] * sae.d_sae
    for latent, direction in zip(hits["latent"], hits["direction"]):
        tags[int(latent)] = f"{direction} by PGD"
    return dashboard.features(sae, acts_tr, images=data.x_train.numpy(), tags=tags,
                              labels=[str(int(v)) for v in data.y_train])


def _sae_aligned_examples(model, layer, sae, assoc, x, y, eps, seed, bounds):
    """For each input, raise the most selective latent of a random other class (an SAE-aligned attack)."""
    g = torch.Generator().manual_seed(seed)
    target = (y + torch.randint(1, 10, y.shape, generator=g)) % 10
    best = assoc[assoc.frequency >= 0.02].sort_values("class_share", ascending=False)
    by_class = best.drop_duplicates("top_class").set_index("top_class")["latent"]
    fallback = int(best.latent.iloc[0]) if len(best) else 0
    lat = torch.tensor([int(by_class.get(int(t), fallback)) for t in target])
    return aligned.feature_attack(model, x, layer, aligned.sae_latent(sae, lat), eps=eps, steps=20, bounds=bounds)


def run(cfg: Config) -> Report:
    data = univ.data.digits(seed=cfg.seed)
    models = _models(cfg, data)
    x, y = data.x_test[:cfg.n_attack], data.y_test[:cfg.n_attack]
    rr = {"concentration": [], "excess": [], "hits": [], "features": [], "steering": [], "sae": []}
    adversarial, figures, views = {}, {}, {}
    subjects = [n for n, (_, arch, _) in models.items() if arch in cfg.archs and n != "mlp-seed2"
                and (n == arch or n == f"{arch}-adv")]
    for name in subjects:
        model, arch, _ = models[name]
        sae, acts_tr, hits, assoc = _analyse_subject(name, model, arch, data, x, y, cfg, rr)
        figures[name] = _top_inputs_figure(sae, acts_tr, data.x_train, hits)
        views[name] = _dashboard_view(sae, acts_tr, data, hits)
        x_pgd = adv.pgd(model, x, y, eps=cfg.eps, steps=cfg.attack_steps, seed=cfg.seed, bounds=data.bounds)
        adversarial[name, "pgd"] = x_pgd
        adversarial[name, "sae-aligned"] = _sae_aligned_examples(model, LAYERS[arch], sae, assoc, x, y, cfg.eps,
                                                                 cfg.seed, data.bounds)
        adversarial[name, "random (same L2)"] = adv.matched_random(x, x_pgd, seed=cfg.seed, bounds=data.bounds)
    targets = {n: m for n, (m, _, _) in models.items()}
    transfer = aligned.transfer_rates(adversarial, targets, x, y)

    report = Report("adversarial_sae")
    conc = pd.DataFrame(rr["concentration"])
    excess = pd.DataFrame(rr["excess"])
    report.add_table("sae_fits", pd.DataFrame(rr["sae"]),
                     "The TopK SAE of each subject's last hidden layer, and how often L-inf PGD (eps "
                     f"{cfg.eps}, {cfg.attack_steps} steps) fools the model on its correctly classified images.")
    main = excess[excess.metric == "frac_top5"].sort_values(["model", "difference"], ascending=[True, False])
    report.add_table("answer_adversarial_vs_random", main,
                     "**The question**: is the activation change caused by an adversarial perturbation more "
                     "concentrated than that of a random input perturbation of the same L2 norm (or of the same "
                     "activation-change norm)? frac_top5 = fraction of ||delta||^2 explained by the 5 best "
                     "directions of the basis; difference = paired per-sample mean adversarial - control with a "
                     "95% CI. Compare the SAE rows with the PCA, random-dictionary (same size, OMP) and "
                     "orthonormal baselines.")
    report.summary = "answer_adversarial_vs_random"
    report.add_text("answer", _answer(excess))
    report.add_table("concentration", conc,
                     "Every basis x perturbation x metric (mean over samples, 95% CI). participation_ratio is "
                     "the effective number of directions used; n_changed / jaccard are the SAE latents whose "
                     "activation changes and the overlap of active sets clean vs perturbed.")
    report.add_table("paired_excess", excess, "Adversarial - control, paired per sample, all metrics.")
    report.add_table("most_hit_latents", pd.concat(rr["hits"], ignore_index=True),
                     "Latents most raised / lowered on average by PGD; top_class = the class holding most of the "
                     "latent's activation mass on training data; frac_adv_class = how often that class is the "
                     "adversarial prediction among samples where the latent moved this way.")
    report.add_dashboard("feature_dashboard", dashboard.build(views),
                         "Every latent of every subject's SAE on the training digits (the latent numbers in "
                         "most_hit_latents open their cards; tag: raised / lowered by PGD for those), with its "
                         "best-correlated latents in the other subjects' SAEs.")
    for name, fig in figures.items():
        report.add_figure(f"top_inputs_{name}", fig, f"{name}: the most-hit latents' top-activating digits.")
    report.add_table("feature_attacks", pd.DataFrame(rr["features"]),
                     "Input-space PGD (same eps) that raises a class-selective latent on images where it is off "
                     "(success: it fires) or suppresses it where it is on (success: it goes silent), beside "
                     "how often untargeted PGD and an equal-norm random perturbation do the same by accident.")
    steer = pd.concat(rr["steering"], ignore_index=True)
    steer_sum = steer.groupby(["model", "kind", "alpha"], as_index=False)[
        ["dlogit_class", "frac_to_class", "frac_flipped"]].mean()
    report.add_table("steering", steer_sum,
                     "Adding alpha x (median clean activation norm) along a latent's unit decoder direction "
                     "(kind=feature) or a random direction of the same norm (kind=random): mean change of the "
                     "latent's class logit relative to the others, and how often the prediction becomes it.")
    report.add_table("transfer", transfer,
                     "Fool rate of examples crafted on `source` when fed to `target` (among images the target "
                     "classifies correctly). sae-aligned: PGD raising the most selective latent of a random "
                     "other class. For each target, the white-box row (source = target) should be the highest.")
    tw = transfer.pivot_table(index=["source", "attack"], columns="target", values="fool_rate")
    tw.index = [f"{s} / {a}" for s, a in tw.index]
    report.add_figure("transfer_heatmap", heatmap(tw, "fool rate (rows: source / attack)"), "")
    report.add_table("robust_accuracy", _robust_table(models, x, y, cfg, data.bounds),
                     "PGD-20 robust accuracy vs L-inf eps.")
    report.add_table("lbfgs_minimal_distortion", _lbfgs_table(models, data, cfg),
                     "Szegedy et al.'s box-constrained L-BFGS to a random other class: mean RMS distortion "
                     "sqrt(mean_i r_i^2) over successful examples, beside the paper's Table 1 (MNIST, 28x28; "
                     "our inputs are 8x8 digits, so only the order of magnitude is comparable).")
    return report


def _robust_table(models, x, y, cfg, bounds) -> pd.DataFrame:
    rows = []
    for name, (m, _, adv_trained) in models.items():
        for e in (0.0, 0.05, 0.1, 0.2, 0.3):
            acc = adv.robust_accuracy(m, x, y, adv.make_attack("pgd", eps=e, steps=cfg.attack_steps, bounds=bounds))
            rows.append({"model": name, "adversarially_trained": adv_trained, "eps": e, "robust_acc": acc})
    return pd.DataFrame(rows).pivot_table(index=["model", "adversarially_trained"], columns="eps",
                                          values="robust_acc").reset_index().rename(columns=lambda c: str(c))


def _lbfgs_table(models, data, cfg) -> pd.DataFrame:
    n = cfg.n_lbfgs
    mods = {name: m for name, (m, _, _) in models.items()}
    return minimal_distortion_table(mods, data.x_test[-n:], data.y_test[-n:],
                                    bounds=data.bounds, search_steps=cfg.search_steps, maxiter=100)


def _answer(excess: pd.DataFrame) -> str:
    ex = excess[excess.metric == "frac_top5"].set_index(["model", "control", "basis"])
    lines = []
    for (model, control), _ in ex.groupby(level=[0, 1]):
        def get(b, model=model, control=control):
            return ex.loc[(model, control, b)] if (model, control, b) in ex.index else None

        s = get("SAE codes")
        if s is None:
            continue
        others = {b: get(b) for b in ("SAE decoder (OMP)", "PCA (clean)", "random dictionary (OMP)", "neuron",
                                      "random orthonormal")}
        verdict = ("more" if s.ci_low > 0 else "less" if s.ci_high < 0 else "not detectably more")
        beyond = all(s.ci_low > o.ci_high for o in others.values() if o is not None)
        rest = "; ".join(f"{b} {o.difference:+.3f}" for b, o in others.items() if o is not None)
        lines.append(
            f"- **{model}**, control *{control}*: the 5 largest SAE code changes explain {s.adversarial:.3f} of "
            f"||delta||^2 for adversarial vs {s.control_value:.3f} for the control (paired difference "
            f"{s.difference:+.3f}, 95% CI [{s.ci_low:+.3f}, {s.ci_high:+.3f}]): {verdict} concentrated"
            f"{', and by more than in every other basis' if beyond and s.ci_low > 0 else ''}. "
            f"Same difference in the other bases: {rest}.")
    return ("Fraction of ||delta||^2 in the top-5 directions, adversarial vs controls (paired per sample):\n\n"
            + "\n".join(lines) + "\n\nReading: a positive SAE difference alone is not an SAE-specific effect; "
            "it must exceed the differences in the PCA, random-dictionary and neuron bases, and survive the "
            "control whose activation change is as large as the attack's (code metrics depend on the size of "
            "the change).")

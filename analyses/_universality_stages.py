"""Stages 2 and 3 of ``univ run universality``: SAE feature matching and adversarial directions.

Kept apart from analyses/universality.py so each file stays one readable concept.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ.adversarial import matched_random, neuron_basis, pca_basis, pgd, project, random_orthonormal
from univ.cache import cached_sae
from univ.models import predict
from univ.report import Report, heatmap

SHARED_CORR = 0.7
"""A latent is 'shared' with another model when its best activation correlation there is >= this."""
TOP_MOVED = 5
"""Latents per adversarial example counted as 'most moved'."""


def _layer(entry) -> str:
    return entry.model.layers[-2]  # the last hidden layer


def feature_stage(cfg, eff, entries, data, report: Report) -> dict:
    """An SAE per model at its last hidden layer (fit on training inputs), cross-model matching on test
    inputs; returns {model id: (sae, layer, test activations, match tables by partner id)}."""
    from .universality import model_pairs

    saes = {}
    quality = []
    for e in tqdm(entries, desc="SAEs"):
        layer = _layer(e)
        tr = univ.capture(e.model, data.x_train, [layer], reduce="mean", cache=True)[layer]
        te = univ.capture(e.model, data.x_test, [layer], reduce="mean", cache=True)[layer]
        d = tr.shape[1]
        fit_kw = {"fit_progress": False, "fit_seed": cfg.seed, "fit_max_steps": eff["sae_steps"]}
        sae = cached_sae("topk", tr, key={"model": e.id, "layer": layer}, d_sae=cfg.sae_expansion * d,
                         k=min(cfg.sae_k, cfg.sae_expansion * d), seed=cfg.seed, **fit_kw)
        m = univ.sae.evaluate(sae, te)
        if e.model.reduce == "flatten":  # the SAE sees exactly the layer's output: splice it back in
            spliced = univ.sae.spliced_accuracy(e.model, data.x_test, data.y_test, layer, sae)
        else:  # an SAE on patch-averaged activations has no per-token reconstruction to splice in
            spliced = univ.sae.SpliceResult(np.nan, np.nan, np.nan, np.nan)
        quality.append({"model": e.id, "layer": layer, "d_in": d, "d_sae": sae.d_sae, "k": sae.k,
                        "l0": m.l0, "fvu": m.fvu, "dead_fraction": m.dead_fraction,
                        "model_acc": e.metrics["test_acc"], "spliced_acc": spliced.spliced,
                        "recovered": spliced.recovered})
        saes[e.id] = {"sae": sae, "layer": layer, "test": te, "matches": {}}
    report.add_table("sae_quality", pd.DataFrame(quality), "One TopK SAE per model at its last hidden layer "
                     "(fit on training-set activations, evaluated on the test set). `fvu`: fraction of variance "
                     "unexplained; `spliced_acc`: the model's accuracy with the SAE reconstruction spliced in, "
                     "beside `model_acc` (the baseline it should approach); `recovered`: (spliced - zero-ablated) / "
                     "(clean - zero-ablated). Transformers: the SAE sees patch-averaged activations, which cannot be "
                     "spliced back per token (NaN).")
    rows = []
    for a, b in tqdm(model_pairs(entries), desc="matching"):
        if a.trained != b.trained:
            continue  # trained vs own init is covered by the similarity stage
        sa, sb = saes[a.id], saes[b.id]
        kw = {"threshold": SHARED_CORR, "seed": cfg.seed}
        corr = univ.sae.match(sa["sae"], sa["test"], sb["sae"], sb["test"], method="correlation", **kw)
        sa["matches"][b.id] = corr.table
        sb["matches"][a.id] = univ.sae.match(sb["sae"], sb["test"], sa["sae"], sa["test"], method="correlation",
                                             **kw).table
        try:
            sv = univ.sae.match(sa["sae"], sa["test"], sb["sae"], sb["test"], method="svcca", seed=cfg.seed,
                                n_shuffles=20 if cfg.quick else 100).summary
        except ValueError:  # fewer than 3 correlated feature pairs: no decoder SVCCA for this pair
            sv = {"svcca": np.nan, "svcca_baseline": np.nan, "svcca_p": np.nan, "n_pairs": 0}
        from .universality import _category

        rows.append({"category": _category(a, b), "model_a": a.id, "model_b": b.id,
                     "shared_fraction": corr.summary["shared_fraction"],
                     "shared_fraction_shuffled": corr.summary["baseline_shared_fraction"],
                     "mean_best_corr": corr.summary["mean_max_correlation"],
                     "mean_best_corr_shuffled": corr.summary["baseline_mean_max_correlation"],
                     "decoder_svcca": sv["svcca"], "svcca_shuffled": sv["svcca_baseline"],
                     "svcca_p_value": sv["svcca_p"], "n_pairs_kept": sv["n_pairs"]})
    match_df = pd.DataFrame(rows)
    report.add_table("feature_matching", match_df, "Cross-model SAE feature matching on shared test inputs. "
                     f"`shared_fraction`: fraction of A's live latents whose best activation correlation with a "
                     f"latent of B is >= {SHARED_CORR} (Bricken et al. 2023), beside `shared_fraction_shuffled`, the "
                     "same with B's inputs shuffled; `decoder_svcca`: SVCCA of the paired "
                     "decoder directions (Lan et al. 2024) beside `svcca_shuffled`, the mean over shuffled pairings "
                     "(the baseline), with its p-value. Rows of untrained networks (`random init, ...`) are the "
                     "baseline for the trained rows.")
    cols = ["shared_fraction", "shared_fraction_shuffled", "mean_best_corr", "mean_best_corr_shuffled",
            "decoder_svcca", "svcca_shuffled", "svcca_p_value"]
    summary = match_df.groupby("category")[cols].mean().reset_index()
    summary["n_pairs"] = match_df.groupby("category").size().values
    report.add_table("feature_matching_summary", summary, _matching_sentence(summary))
    return saes


def _matching_sentence(summary: pd.DataFrame) -> str:
    v = summary.set_index("category")
    bits = []
    for trained, rand in (("same arch, different seed", "random init, same arch"),
                          ("different arch", "random init, different arch")):
        if trained in v.index:
            s = (f"{trained}: shared fraction {v.loc[trained, 'shared_fraction']:.2f} (shuffled inputs "
                 f"{v.loc[trained, 'shared_fraction_shuffled']:.2f}")
            if rand in v.index:
                s += f", untrained networks {v.loc[rand, 'shared_fraction']:.2f}"
            s += ")"
            s += (f", decoder SVCCA {v.loc[trained, 'decoder_svcca']:.2f} vs shuffled "
                  f"{v.loc[trained, 'svcca_shuffled']:.2f}")
            bits.append(s)
    return ("Mean over model pairs per category; the baselines are the untrained-network rows and the "
            "shuffled pairings. In this run: " + "; ".join(bits) + ".")


def adversarial_stage(cfg, eff, entries, data, report: Report, saes: dict | None) -> None:
    trained = [e for e in entries if e.trained]
    n = min(eff["n_attack"], len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    scale = 1.0 if data.bounds else float(data.x_train.std())
    eps = cfg.eps * scale
    steps = 10 if cfg.quick else 20
    g = torch.Generator().manual_seed(cfg.seed)
    x_rand = x + eps * torch.sign(torch.randn(x.shape, generator=g))  # equal L-inf norm, random direction
    if data.bounds:
        x_rand = x_rand.clamp(*data.bounds)
    adv, clean_ok, fooled = {}, {}, {}
    rows = []
    for e in tqdm(trained, desc="PGD"):
        adv[e.id] = pgd(e.model, x, y, eps=eps, norm="inf", steps=steps, bounds=data.bounds, seed=cfg.seed)
        clean_ok[e.id] = predict(e.model, x) == y
        fooled[e.id] = predict(e.model, adv[e.id]) != y
        rows.append({"model": e.id, "eps": eps, "steps": steps, "clean_acc": float(clean_ok[e.id].float().mean()),
                     "random_sign_acc": float((predict(e.model, x_rand) == y).float().mean()),
                     "pgd_acc": float((~fooled[e.id]).float().mean())})
    report.add_table("attacks", pd.DataFrame(rows), f"L-inf PGD ({steps} steps, eps={eps:.3g}) on {n} test inputs. "
                     "`random_sign_acc`: accuracy under a random-sign perturbation of the same L-inf norm (the "
                     "control the attack is compared with).")
    ids = [e.id for e in trained]
    T = pd.DataFrame(np.nan, index=ids, columns=ids)
    for s, t in itertools.product(ids, ids):
        ok = clean_ok[s] & clean_ok[t] & fooled[s]
        if ok.any():
            T.loc[s, t] = float(fooled[t][ok].float().mean())
    tr_long = T.reset_index(names="source").melt(id_vars="source", var_name="target", value_name="transfer_rate")
    report.add_table("transfer", tr_long, "Transfer rate: among test inputs that the source's PGD example fools and "
                     "that both models classify correctly when clean, the fraction that also fools the target "
                     "(diagonal = 1 by construction). Shown as the figure below.", inline=False)
    report.add_figure("transfer_matrix", heatmap(T, title="PGD transfer rate (row: source, col: target)",
                                                 xlabel="target", ylabel="source"),
                      "Transfer matrix; blocks of one architecture show whether attacks transfer more within "
                      "architectures than across them.")
    if saes is None:
        return
    proj_rows, shared_rows = [], []
    for e in tqdm(trained, desc="projections"):
        info = saes[e.id]
        layer, sae = info["layer"], info["sae"]
        x_ctrl = matched_random(x, adv[e.id], bounds=data.bounds, seed=cfg.seed)  # same L2 norm per sample
        acts = univ.capture(e.model, torch.cat([x, adv[e.id], x_ctrl]), [layer], reduce="mean")[layer]
        clean, a_adv, a_rand = acts[:n], acts[n:2 * n], acts[2 * n:]
        d = clean.shape[1]
        bases = {"sae": sae, "neuron": neuron_basis(d), "random": random_orthonormal(d, seed=cfg.seed),
                 "pca": pca_basis(info["test"])}
        sel = fooled[e.id] & clean_ok[e.id]
        for pert, pa in (("pgd", a_adv), ("random_same_norm", a_rand)):
            delta = pa - clean
            for bname, basis in bases.items():
                df = project(delta[sel], basis, clean=clean[sel] if bname == "sae" else None)
                proj_rows.append({"model": e.id, "perturbation": pert, "basis": bname, "n": int(sel.sum()),
                                  "frac_top1": df["frac_top1"].mean(), "frac_top5": df["frac_top5"].mean(),
                                  "participation_ratio": df["participation_ratio"].mean(),
                                  "delta_norm": df["norm"].mean()})
        z_clean = sae.encode(clean)
        dz = (sae.encode(a_adv) - z_clean).abs().detach()
        dz_rand = (sae.encode(a_rand) - z_clean).abs().detach()  # the same-norm random control
        for other in trained:
            if other.id == e.id or other.id not in info["matches"]:
                continue
            table = info["matches"][other.id].sort_values("feature_a")
            shared = torch.tensor((table["correlation"] >= SHARED_CORR).values)  # NaN (dead) -> False
            alive = torch.tensor(table["live"].values)
            ok = sel & clean_ok[other.id]
            if ok.sum() < 3:
                continue
            moved_shared = shared[dz[ok].topk(TOP_MOVED, dim=1).indices].float().mean().item()
            rand_shared = shared[dz_rand[ok].topk(TOP_MOVED, dim=1).indices].float().mean().item()
            mass = (dz[ok] * shared).sum(1) / dz[ok].sum(1).clamp_min(1e-12)
            transfers = fooled[other.id][ok].float()
            corr = float(np.corrcoef(mass.numpy(), transfers.numpy())[0, 1]) if transfers.std() > 0 else np.nan
            shared_rows.append({"source": e.id, "target": other.id,
                                "moved_latents_shared": moved_shared,
                                "random_moved_latents_shared": rand_shared,
                                "baseline_shared": float(shared[alive].float().mean()),
                                "transfer_rate": float(transfers.mean()),
                                "corr_shared_mass_vs_transfer": corr, "n": int(ok.sum())})
    proj = pd.DataFrame(proj_rows)
    report.add_table("projection", proj, _projection_sentence(proj))
    shared_df = pd.DataFrame(shared_rows)
    report.add_table("adversarial_shared_latents", shared_df, _shared_sentence(shared_df))


def _projection_sentence(proj: pd.DataFrame) -> str:
    if proj.empty:
        return "No successful adversarial examples to project."
    m = proj.groupby(["basis", "perturbation"])["frac_top5"].mean().unstack()
    bits = [f"{b}: PGD {m.loc[b, 'pgd']:.2f} vs random {m.loc[b, 'random_same_norm']:.2f}" for b in m.index]
    return ("Concentration of the activation change at the last hidden layer: `frac_top5` is the share of "
            "||delta||^2 captured by the best 5 directions of each basis (SAE: change of codes; neuron, random "
            "orthonormal and PCA bases: coordinates), averaged over successful attacks. The baseline is a "
            "random input perturbation with the same per-sample L2 norm, in the same basis, and the random "
            "basis for the same perturbation. Mean frac_top5 over models — " + "; ".join(bits) + ".")


def _shared_sentence(df: pd.DataFrame) -> str:
    if df.empty:
        return "Too few transferable examples to relate moved latents to shared ones."
    return (f"For each source model and target: the fraction of the {TOP_MOVED} SAE latents an attack moves most "
            f"that are shared with the target (best correlation >= {SHARED_CORR}), beside two baselines: "
            "`random_moved_latents_shared`, the same for the latents most moved by a random input perturbation of "
            "equal L2 norm (large, frequently active latents are moved by anything and are also the ones most "
            "often shared), and `baseline_shared`, the fraction of all live latents that are shared; and the "
            "correlation across examples between the share of |delta code| on shared latents and whether the "
            f"example transfers. In this run the PGD-moved latents are shared {df['moved_latents_shared'].mean():.2f} "
            f"of the time vs {df['random_moved_latents_shared'].mean():.2f} for random perturbations and "
            f"{df['baseline_shared'].mean():.2f} for all live latents; mean correlation with transfer "
            f"{df['corr_shared_mass_vs_transfer'].mean():.2f}.")

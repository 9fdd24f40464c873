"""The stages of ``univ run universality``: similarity, SAE feature matching and adversarial directions.

Each stage returns tables (and the SAEs later stages need); ``analyses/universality.py`` builds the report,
using the sentence functions here, which read the numbers of a table.
"""

from __future__ import annotations

import itertools
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

import univ
from univ.adversarial import matched_random, neuron_basis, pca_basis, pgd, project, random_orthonormal
from univ.cache import ZooEntry, cached_sae
from univ.jobs import Job, Resources, run_jobs
from univ.jobs.models import portable, rebuild
from univ.jobs.similarity import compare_grid_jobs
from univ.models import predict
from univ.report import heatmap, panels

SHARED_CORR = 0.7
"""A latent is 'shared' with another model when its best activation correlation there is >= this."""
TOP_MOVED = 5
"""Latents per adversarial example counted as 'most moved'."""


def _layer(entry) -> str:
    return entry.model.layers[-2]  # the last hidden layer


def category(a: ZooEntry, b: ZooEntry) -> str:
    """The pair category a comparison row belongs to."""
    if a.trained and b.trained:
        return "same arch, different seed" if a.arch == b.arch else "different arch"
    if not a.trained and not b.trained:
        return "random init, same arch" if a.arch == b.arch else "random init, different arch"
    return "trained vs its own init"


def model_pairs(entries: list[ZooEntry]) -> list[tuple[ZooEntry, ZooEntry]]:
    """Pairs compared: same-arch seed pairs, cross-arch pairs at equal seed index, the same pairs of
    untrained copies (baseline), and each trained model against its own initialisation."""
    by = {(e.arch, e.seed, e.trained): e for e in entries}
    archs = list(dict.fromkeys(e.arch for e in entries))
    seeds = sorted({e.seed for e in entries})
    pairs = []
    for trained in (True, False):
        for a in archs:
            for s1, s2 in itertools.combinations(seeds, 2):
                if (a, s1, trained) in by and (a, s2, trained) in by:
                    pairs.append((by[a, s1, trained], by[a, s2, trained]))
        for a1, a2 in itertools.combinations(archs, 2):
            for s in seeds:
                if (a1, s, trained) in by and (a2, s, trained) in by:
                    pairs.append((by[a1, s, trained], by[a2, s, trained]))
    pairs += [(by[k], by[k[0], k[1], False]) for k in by if k[2] and (k[0], k[1], False) in by]
    return pairs


def hidden_layers(entry: ZooEntry) -> list[str]:
    """Representation layers without the logits."""
    return entry.model.layers[:-1]


def _device_jobs(device) -> Resources:
    return Resources(gpus=1 if torch.device(device).type == "cuda" else 0)


def capture_layer(model: dict, x, layer: str, device: str) -> torch.Tensor:
    """Job: the mean-reduced activations of one layer of one model (``portable``; on the CPU), computed on
    ``device``."""
    return univ.capture(rebuild(model, device), x, [layer], reduce="mean", device=device)[layer]


def capture_stage(entries, x, device) -> dict:
    """{model id: {layer: (n, d)}}: one job per (model, layer)."""
    cells = [(e, layer) for e in entries for layer in e.model.layers]
    jobs = [Job("analyses._universality_stages:capture_layer", {"model": portable(e.model), "x": x, "layer": layer,
                                                                "device": str(device)},
                name=f"{e.id} {layer}", resources=_device_jobs(device)) for e, layer in cells]
    acts: dict = {e.id: {} for e in entries}
    for (e, layer), a in zip(cells, run_jobs(jobs, desc="capture")):
        acts[e.id][layer] = a
    return acts


def similarity_stage(cfg, entries, acts, warnings_seen: list | None = None, device="cpu") -> pd.DataFrame:
    """Every layer pair of every compared model pair: compare()'s table with category and model columns.
    Warnings the measures raise (e.g. SVCCA on more kept directions than samples allow) are collected, one
    line per distinct message, into ``warnings_seen`` for the report, and shown once each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = _similarity_rows(cfg, entries, acts, device)
    seen = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    for msg in seen:
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    if warnings_seen is not None:
        warnings_seen.extend(seen)
    return df


def _similarity_rows(cfg, entries, acts, device) -> pd.DataFrame:
    pairs = model_pairs(entries)
    by_id = {e.id: e for e in entries}
    ids = list(dict.fromkeys(m for a, b in pairs for m in (a.id, b.id)))
    on = {} if torch.device(device).type == "cpu" else {"device": str(device)}
    # compare_grid in chunks of model pairs, one job each (univ.jobs: the same table, q-values over all of it)
    out = compare_grid_jobs(
        {i: acts[i] for i in ids}, [(a.id, b.id) for a, b in pairs], list(cfg.metrics),
        statistics=[(a.id, b.id) for a, b in pairs if a.trained and b.trained],
        layers={i: hidden_layers(by_id[i]) for i in ids}, n_permutations=cfg.n_permutations,
        n_bootstrap=cfg.n_bootstrap, seed=cfg.seed, resources=_device_jobs(device), **on)
    out.insert(0, "category", [category(by_id[a], by_id[b]) for a, b in zip(out.model_a, out.model_b)])
    return out  # q_value: Benjamini-Hochberg over every p-value of the table


def _last_hidden(df: pd.DataFrame, entries) -> pd.DataFrame:
    last = {e.id: hidden_layers(e)[-1] for e in entries}
    keep = [last[r.model_a] == r.layer_a and last[r.model_b] == r.layer_b for r in df.itertuples()]
    return df[keep]


def similarity_summary(sim: pd.DataFrame, entries) -> pd.DataFrame:
    """Per category and metric: the last-hidden-layer similarity and the mean best-match over layers."""
    best = (sim.groupby(["category", "model_a", "model_b", "metric", "layer_a"])["value"].max()
            .groupby(["category", "model_a", "model_b", "metric"]).mean().rename("best_match"))
    last = _last_hidden(sim, entries).set_index(["category", "model_a", "model_b", "metric"])
    per_pair = last[["value", "baseline_mean", "p_value"]].join(best)
    g = per_pair.groupby(["category", "metric"])
    summary = pd.DataFrame({
        "n_pairs": g.size(), "last_hidden": g["value"].mean(), "last_hidden_sd": g["value"].std(),
        "permutation_baseline": g["baseline_mean"].mean(), "max_p_value": g["p_value"].max(),
        "best_match": g["best_match"].mean()}).reset_index()
    rand = {("different arch", m): v for m, v in summary[summary.category == "random init, different arch"]
            .set_index("metric")["last_hidden"].items()}
    rand.update({("same arch, different seed", m): v for m, v in summary[
        summary.category == "random init, same arch"].set_index("metric")["last_hidden"].items()})
    summary.insert(5, "random_init_baseline", [rand.get((c, m), np.nan) for c, m in
                                               zip(summary.category, summary.metric)])
    order = ["same arch, different seed", "different arch", "trained vs its own init", "random init, same arch",
             "random init, different arch"]
    summary["category"] = pd.Categorical(summary.category, order, ordered=True)
    summary = summary.sort_values(["metric", "category"]).reset_index(drop=True)
    summary["category"] = summary["category"].astype(str)
    return summary


def similarity_figure(sim: pd.DataFrame, entries, metric: str):
    """Layer x layer heatmaps of ``metric``: the first seed of each architecture against each other (and two
    seeds of one architecture on the diagonal panels)."""
    trained = [e for e in entries if e.trained]
    firsts = {}
    for e in trained:
        firsts.setdefault(e.arch, e)
    reps = list(firsts.values())
    pairs = [(a, b) for a, b in itertools.combinations_with_replacement(reps, 2)]
    fig, axes = panels(len(pairs), 3, (4.8, 4.0))
    for ax, (a, b) in zip(axes, pairs):
        if a.id == b.id:  # a model against another seed of the same architecture
            b = next((e for e in trained if e.arch == a.arch and e.id != a.id), None)
            if b is None:
                ax.axis("off")
                continue
        sub = sim[(sim.model_a == a.id) & (sim.model_b == b.id) & (sim.metric == metric)]
        if sub.empty:
            sub = sim[(sim.model_a == b.id) & (sim.model_b == a.id) & (sim.metric == metric)]
            a, b = b, a
        def layer_grid(col, a=a, b=b, sub=sub):
            g = sub.pivot(index="layer_a", columns="layer_b", values=col)
            return g.loc[[l for l in hidden_layers(a) if l in g.index], [l for l in hidden_layers(b) if l in g.columns]]

        baseline = sub["baseline_mean"].mean() if "baseline_mean" in sub else None
        p = layer_grid("p_value") if "p_value" in sub and sub["p_value"].notna().any() else None
        heatmap(layer_grid("value"), title=f"{a.id} vs {b.id}", ax=ax, cbar_label=metric, baseline=baseline,
                not_significant=None if p is None else p.to_numpy() >= 0.05)
        ax.set_xlabel(b.id)
        ax.set_ylabel(a.id)
    fig.suptitle(f"{metric}: layer x layer (hidden layers)", fontsize=10)
    fig.tight_layout()
    return fig


def summary_sentence(summary: pd.DataFrame) -> str:
    parts = []
    for metric, g in summary.groupby("metric", sort=False):
        v = g.set_index("category")["last_hidden"]
        same, diff = v.get("same arch, different seed"), v.get("different arch")
        r_same, r_diff = v.get("random init, same arch"), v.get("random init, different arch")
        bits = []
        if same is not None and not np.isnan(same):
            bits.append(f"same-arch {same:.2f} (random-init baseline {r_same:.2f})" if r_same is not None
                        else f"same-arch {same:.2f}")
        if diff is not None and not np.isnan(diff):
            bits.append(f"cross-arch {diff:.2f} (random-init baseline {r_diff:.2f})" if r_diff is not None
                        else f"cross-arch {diff:.2f}")
        parts.append(f"{metric}: " + ", ".join(bits))
    return ("Last-hidden-layer similarity per pair category, against two baselines: the same pairs of "
            "untrained networks (`random_init_baseline`) and the row-permutation baseline "
            "(`permutation_baseline`, with the largest p-value). `best_match`: mean over layers of A of the "
            "best-matching layer of B. In this run: " + "; ".join(parts) + ".")


QUALITY_TEXT = (
    "One TopK SAE per model at its last hidden layer (fit on training-set activations, evaluated on the test set). "
    "`fvu`: fraction of variance unexplained; `spliced_acc`: the model's accuracy with the SAE reconstruction "
    "spliced in, beside `model_acc` (the baseline it should approach); `recovered`: (spliced - zero-ablated) / "
    "(clean - zero-ablated). Transformers: the SAE sees patch-averaged activations, which cannot be spliced back "
    "per token (NaN).")
MATCHING_TEXT = (
    "Cross-model SAE feature matching on shared test inputs. `shared_fraction`: fraction of A's live latents whose "
    f"best activation correlation with a latent of B is >= {SHARED_CORR} (Bricken et al. 2023), beside "
    "`shared_fraction_shuffled`, the same with B's inputs shuffled; `decoder_svcca`: SVCCA of the paired decoder "
    "directions (Lan et al. 2024) beside `svcca_shuffled`, the mean over shuffled pairings (the baseline), with its "
    "p-value. `*_calibrated`: (value - its method's baseline) / (1 - baseline), so the two methods share a scale "
    "(0 = chance). Which method answers which question: univ.sae.match's docstring. Rows of untrained networks "
    "(`random init, ...`) are the baseline for the trained rows.")


def fit_sae(model: dict, model_id: str, model_acc: float, x_train, x_test, y_test, expansion: int, k: int, steps: int,
            seed: int, device: str) -> dict:
    """Job: the TopK SAE of one model at its last hidden layer (fit on ``device`` from training inputs), its
    quality row on the test inputs, and the test activations."""
    model = rebuild(model)
    layer = model.layers[-2]
    tr = univ.capture(model, x_train, [layer], reduce="mean", cache=True)[layer]
    te = univ.capture(model, x_test, [layer], reduce="mean", cache=True)[layer]
    d = tr.shape[1]
    fit_kw = {"fit_progress": False, "fit_seed": seed, "fit_max_steps": steps}
    if torch.device(device).type != "cpu":  # on the CPU the cache key stays as it was
        fit_kw["fit_device"] = device
    sae = cached_sae("topk", tr, key={"model": model_id, "layer": layer}, d_sae=expansion * d, k=k, seed=seed,
                     **fit_kw).cpu()
    m = univ.sae.evaluate(sae, te)
    if model.reduce == "flatten":  # the SAE sees exactly the layer's output: splice it back in
        spliced = univ.sae.spliced_accuracy(model, x_test, y_test, layer, sae)
    else:  # an SAE on patch-averaged activations has no per-token reconstruction to splice in
        spliced = univ.sae.SpliceResult(np.nan, np.nan, np.nan, np.nan)
    quality = {"model": model_id, "layer": layer, "d_in": d, "d_sae": sae.d_sae, "k": sae.k, "l0": m.l0,
               "fvu": m.fvu, "dead_fraction": m.dead_fraction, "model_acc": model_acc,
               "spliced_acc": spliced.spliced, "recovered": spliced.recovered}
    return {"quality": quality, "test": te,
            "sae": {"kind": sae.kind, "hparams": sae.hparams(), "state": dict(sae.state_dict())}}


def feature_stage(cfg, entries, data, device="cpu") -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """An SAE per model at its last hidden layer (fit on training inputs; one job per model), cross-model
    matching on test inputs. Returns (saes, quality table, matching table); saes: {model id: {"sae", "layer",
    "test" (test activations), "matches" (correlation match tables by partner id)}}."""
    jobs = [Job("analyses._universality_stages:fit_sae", {
        "model": portable(e.model), "model_id": e.id, "model_acc": e.metrics["test_acc"], "x_train": data.x_train,
        "x_test": data.x_test, "y_test": data.y_test, "expansion": cfg.sae_expansion, "k": cfg.sae_k,
        "steps": cfg.sae_steps, "seed": cfg.seed, "device": str(device)}, name=f"SAE {e.id}",
        resources=_device_jobs(device)) for e in entries]
    saes, quality, specs = {}, [], {}
    for e, res in zip(entries, run_jobs(jobs, desc="SAEs")):
        info = res["sae"]
        specs[e.id] = info
        quality.append(res["quality"])
        saes[e.id] = {"sae": _sae_of(info), "layer": res["quality"]["layer"], "test": res["test"], "matches": {}}
    pairs = [(a, b) for a, b in model_pairs(entries) if a.trained == b.trained]  # trained vs own init: similarity
    jobs = [Job("analyses._universality_stages:match_pair", {
        "sae_a": specs[a.id], "test_a": saes[a.id]["test"], "sae_b": specs[b.id], "test_b": saes[b.id]["test"],
        "seed": cfg.seed, "n_permutations": cfg.match_permutations}, name=f"match {a.id} {b.id}") for a, b in pairs]
    rows = []
    for (a, b), res in zip(pairs, run_jobs(jobs, desc="matching")):
        saes[a.id]["matches"][b.id], saes[b.id]["matches"][a.id] = res["a_to_b"], res["b_to_a"]
        rows.append({"category": category(a, b), "model_a": a.id, "model_b": b.id, **res["row"]})
    return saes, pd.DataFrame(quality), pd.DataFrame(rows)


def _sae_of(info: dict):
    sae = univ.sae.SAE_KINDS[info["kind"]](**info["hparams"])
    sae.load_state_dict(info["state"], strict=True)
    return sae


def match_pair(sae_a: dict, test_a, sae_b: dict, test_b, seed: int, n_permutations: int) -> dict:
    """Job: the feature matching of one model pair: correlation matches both ways and decoder SVCCA."""
    sa, sb = _sae_of(sae_a), _sae_of(sae_b)
    kw = {"threshold": SHARED_CORR, "seed": seed}
    corr = univ.sae.match(sa, test_a, sb, test_b, method="correlation", **kw)
    back = univ.sae.match(sb, test_b, sa, test_a, method="correlation", **kw).table
    try:
        sv = univ.sae.match(sa, test_a, sb, test_b, method="svcca", seed=seed, n_permutations=n_permutations).summary
    except ValueError:  # fewer than 3 correlated feature pairs: no decoder SVCCA for this pair
        sv = {"svcca": np.nan, "svcca_baseline": np.nan, "svcca_p": np.nan, "n_pairs": 0}
    row = {"shared_fraction": corr.summary["shared_fraction"],
           "shared_fraction_shuffled": corr.summary["baseline_shared_fraction"],
           "shared_calibrated": corr.summary["calibrated"],
           "mean_best_corr": corr.summary["mean_max_correlation"],
           "mean_best_corr_shuffled": corr.summary["baseline_mean_max_correlation"],
           "decoder_svcca": sv["svcca"], "svcca_shuffled": sv["svcca_baseline"],
           "decoder_svcca_calibrated": sv.get("calibrated", np.nan),
           "svcca_p_value": sv["svcca_p"], "n_pairs_kept": sv["n_pairs"]}
    return {"a_to_b": corr.table, "b_to_a": back,
            "row": {k: int(v) if k == "n_pairs_kept" else float(v) for k, v in row.items()}}


DASHBOARD_TEXT = (
    "Every latent of every trained model's SAE: search and filter the index (tag: universal = matched at correlation "
    f">= {SHARED_CORR} in every other trained model, partly shared, exclusive, dead = never fires on the test "
    "inputs), and open a latent's card for its "
    "top-activating test inputs, its activation histogram and its best-correlated latents in the other models beside "
    "their own top inputs.")


def feature_dashboard(saes: dict, entries, data):
    """The feature dashboard of the trained models' SAEs (univ.report.dashboard), matched by the correlation
    tables of the feature stage (pairs it did not compare: by the correlation of codes on the same test inputs)."""
    from univ.report import dashboard

    trained = [e.id for e in entries if e.trained and e.id in saes]
    x = data.x_test.numpy()
    view_of = {"images": x} if x.ndim == 4 else {"signals": x.reshape(len(x), -1)}
    labels = [str(int(v)) for v in data.y_test]
    models, matches = {}, {}
    for name in trained:  # tags (dead / exclusive / partly shared / universal) come from the matches
        info = saes[name]
        matches.update({(name, o): t for o, t in info["matches"].items() if o in trained})
        models[name] = dashboard.features(info["sae"], info["test"], labels=labels, **view_of)
    return dashboard.build(models, matches, threshold=SHARED_CORR)


def matching_summary(match_df: pd.DataFrame) -> pd.DataFrame:
    """Mean of the matching table per pair category."""
    cols = ["shared_fraction", "shared_fraction_shuffled", "mean_best_corr", "mean_best_corr_shuffled",
            "decoder_svcca", "svcca_shuffled", "svcca_p_value"]
    summary = match_df.groupby("category")[cols].mean().reset_index()
    summary["n_pairs"] = match_df.groupby("category").size().values
    return summary


def matching_sentence(summary: pd.DataFrame) -> str:
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


class AdversarialTables(NamedTuple):
    """What the adversarial stage returns (projection and shared are None without SAEs)."""

    attacks: pd.DataFrame
    transfer: pd.DataFrame
    projection: pd.DataFrame | None
    shared: pd.DataFrame | None
    eps: float
    n: int


def attacks_text(eps: float, steps: int, n: int) -> str:
    return (f"L-inf PGD ({steps} steps, eps={eps:.3g}) on {n} test inputs. `random_sign_acc`: accuracy under a "
            "random-sign perturbation of the same L-inf norm (the control the attack is compared with).")


def transfer_figure(transfer: pd.DataFrame):
    """The transfer table as a source x target heatmap."""
    T = transfer.pivot(index="source", columns="target", values="transfer_rate")
    ids = list(dict.fromkeys(transfer["source"]))
    return heatmap(T.loc[ids, ids], title="PGD transfer rate (row: source, col: target)", xlabel="target",
                   ylabel="source", cbar_label="transfer rate")


def attack_model(model: dict, model_id: str, x, y, x_rand, eps: float, steps: int, bounds, seed: int,
                 device: str) -> dict:
    """Job: L-inf PGD on one model (run on ``device``), which inputs it gets right clean and which the attack
    fools, and its row of the attacks table (tensors returned on the CPU)."""
    model = rebuild(model, device)
    x, y, x_rand = x.to(device), y.to(device), x_rand.to(device)
    adv = pgd(model, x, y, eps=eps, norm="inf", steps=steps, bounds=tuple(bounds) if bounds else None, seed=seed)
    clean_ok = predict(model, x) == y
    fooled = predict(model, adv) != y
    row = {"model": model_id, "eps": eps, "steps": steps, "clean_acc": float(clean_ok.float().mean()),
           "random_sign_acc": float((predict(model, x_rand) == y).float().mean()),
           "pgd_acc": float((~fooled).float().mean())}
    return {"adv": adv.cpu(), "clean_ok": clean_ok.cpu(), "fooled": fooled.cpu(), "row": row}


def adversarial_stage(cfg, entries, data, saes: dict | None, device="cpu") -> AdversarialTables:
    """PGD per trained model (one job each), the transfer matrix, and (with SAEs) the projections of the
    activation change and the sharing of the latents an attack moves most."""
    trained = [e for e in entries if e.trained]
    n = min(cfg.n_attack, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    scale = 1.0 if data.bounds else float(data.x_train.std())
    eps = cfg.eps * scale
    steps = cfg.pgd_steps
    g = torch.Generator().manual_seed(cfg.seed)
    x_rand = x + eps * torch.sign(torch.randn(x.shape, generator=g))  # equal L-inf norm, random direction
    if data.bounds:
        x_rand = x_rand.clamp(*data.bounds)
    adv, clean_ok, fooled = {}, {}, {}
    jobs = [Job("analyses._universality_stages:attack_model", {
        "model": portable(e.model), "model_id": e.id, "x": x, "y": y, "x_rand": x_rand, "eps": eps, "steps": steps,
        "bounds": data.bounds, "seed": cfg.seed, "device": str(device)}, name=f"PGD {e.id}",
        resources=_device_jobs(device)) for e in trained]
    rows = []
    for e, res in zip(trained, run_jobs(jobs, desc="PGD")):
        adv[e.id], clean_ok[e.id], fooled[e.id] = res["adv"], res["clean_ok"], res["fooled"]
        rows.append(res["row"])
    attacks = pd.DataFrame(rows)
    ids = [e.id for e in trained]
    T = pd.DataFrame(np.nan, index=ids, columns=ids)
    for s, t in itertools.product(ids, ids):
        ok = clean_ok[s] & clean_ok[t] & fooled[s]
        if ok.any():
            T.loc[s, t] = float(fooled[t][ok].float().mean())
    tr_long = T.reset_index(names="source").melt(id_vars="source", var_name="target", value_name="transfer_rate")
    if saes is None:
        return AdversarialTables(attacks, tr_long, None, None, eps, n)
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
    return AdversarialTables(attacks, tr_long, pd.DataFrame(proj_rows), pd.DataFrame(shared_rows), eps, n)


def projection_sentence(proj: pd.DataFrame) -> str:
    if proj.empty:
        return "No successful adversarial examples to project."
    m = proj.groupby(["basis", "perturbation"])["frac_top5"].mean().unstack()
    bits = [f"{b}: PGD {m.loc[b, 'pgd']:.2f} vs random {m.loc[b, 'random_same_norm']:.2f}" for b in m.index]
    return ("Concentration of the activation change at the last hidden layer: `frac_top5` is the share of "
            "||delta||^2 captured by the best 5 directions of each basis (SAE: change of codes; neuron, random "
            "orthonormal and PCA bases: coordinates), averaged over successful attacks. The baseline is a "
            "random input perturbation with the same per-sample L2 norm, in the same basis, and the random "
            "basis for the same perturbation. Mean frac_top5 over models — " + "; ".join(bits) + ".")


def shared_sentence(df: pd.DataFrame) -> str:
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

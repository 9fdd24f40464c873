"""Reading the LM attacks' residual-stream changes for ``univ run adversarial_lm``: projections onto SAE, neuron,
PCA and random bases against the controls; latent sharing across models; transfer; the figures and the answer."""

from __future__ import annotations

import math
from itertools import permutations

import numpy as np
import pandas as pd
import torch

from univ import adversarial as adv
from univ.adversarial import lm as alm
from univ.report import heatmap, panels
from univ.sae import match

K = 5
TOP = 10
PCA_ROWS = 4096
"""Clean token activations the PCA basis is fitted on (pca_basis's full SVD grows with the square of the rows)."""


def mean_ci(v) -> tuple[float, float, float]:
    """Mean with a normal 95% interval (NaNs dropped)."""
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else np.nan
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """Rate k/n with its 95% Wilson score interval."""
    if n == 0:
        return np.nan, np.nan, np.nan
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, c - h), min(1.0, c + h)


CONTROLS = {"random (same edits)": "control", "random (same activation change)": "control_matched"}
"""Control name -> its key in a record (token attacks; embedding attacks add ``_delta``). The first keeps the
number of token edits (or the embedding norm); the second also the size of the residual change."""


@torch.no_grad()
def residual_triplet(model, recs: list[dict]) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Last-position residuals (n, n_layers, d), float64, of the starting and adversarial inputs of ``recs``
    (records of one model and one attack), and of each control (name -> residuals)."""
    start = torch.stack([r["start"] for r in recs])
    tokens = "adv" in recs[0]

    def resid(key):
        if tokens:
            return alm.last_residuals(model, torch.stack([r[key] for r in recs])).double()
        return alm.last_residuals(model, start, recs[0]["positions"],
                                  torch.stack([r[key + "_delta"] for r in recs])).double()

    return (alm.last_residuals(model, start).double(), resid("adv"),
            {c: resid(k) for c, k in CONTROLS.items()})


def _bases(sae, acts: torch.Tensor, seed: int) -> dict:
    d = acts.shape[1]
    D = adv.directions(sae)
    return {"SAE codes": (sae, "codes"), "SAE decoder (OMP)": (D, "omp"),
            "random dictionary (OMP)": (adv.random_dictionary(D.shape[0], d, seed=seed), "omp"),
            "neuron": (adv.neuron_basis(d), "lstsq"), "PCA (clean)": (adv.pca_basis(acts[:PCA_ROWS]), "lstsq"),
            "random orthonormal": (adv.random_orthonormal(d, seed=seed), "lstsq")}


def projection_tables(recs, models, saes, acts, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per model, layer, attack and basis: frac_top5 of the attack's and the control's residual change, paired;
    and the same pooled over models."""
    rows, pooled = [], {}
    df = pd.DataFrame({"model": [r["model"] for r in recs], "attack": [r["attack"] for r in recs]})
    for name, model in models.items():
        bases = [_bases(saes[name][layer], acts[name][layer], seed) for layer in range(model.n_layers)]
        for attack in dict.fromkeys(df.attack):
            sel = [recs[i] for i in np.flatnonzero((df.model == name) & (df.attack == attack))]
            if not sel:
                continue
            r0, ra, rcs = residual_triplet(model, sel)
            for layer in range(model.n_layers):
                da = ra[:, layer] - r0[:, layer]
                for control, rc in rcs.items():
                    dc = rc[:, layer] - r0[:, layer]
                    keep = (da.norm(dim=1) > 0) & (dc.norm(dim=1) > 0)
                    if int(keep.sum()) < 2:
                        continue
                    for bname, (basis, method) in bases[layer].items():
                        clean = r0[keep, layer] if method == "codes" else None
                        a, c = (adv.project(d[keep], basis, k=K, method=method, clean=clean)[f"frac_top{K}"].to_numpy()
                                for d in (da, dc))
                        pooled.setdefault((attack, control, layer, bname), []).append((a, c, da[keep], dc[keep]))
                        mean, lo, hi = mean_ci(a - c)
                        rows.append({"model": name, "layer": layer, "attack": attack, "control": control,
                                     "basis": bname, "attack_frac_top5": float(np.nanmean(a)),
                                     "control_frac_top5": float(np.nanmean(c)), "difference": mean, "ci_low": lo,
                                     "ci_high": hi, "n": int(keep.sum()),
                                     "norm_ratio": float((da[keep].norm(dim=1) / dc[keep].norm(dim=1)).median())})
    prow = []
    for (attack, control, layer, bname), parts in pooled.items():
        a, c = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        ratio = torch.cat([p[2].norm(dim=1) / p[3].norm(dim=1) for p in parts]).median()
        mean, lo, hi = mean_ci(a - c)
        prow.append({"attack": attack, "control": control, "layer": layer, "basis": bname,
                     "attack_frac_top5": float(np.nanmean(a)), "control_frac_top5": float(np.nanmean(c)),
                     "difference": mean, "ci_low": lo, "ci_high": hi, "n": len(a), "norm_ratio": float(ratio)})
    return pd.DataFrame(rows), pd.DataFrame(prow)


@torch.no_grad()
def _codes(sae, r: torch.Tensor) -> torch.Tensor:
    return sae.encode(r.float()).double()


def sharing_and_transfer(recs, models, saes, acts, seed: int):
    """Latent sharing of GCG suffixes across models (last block), suffix transfer, and whether sharing predicts
    transfer. Returns (sharing, transfer, prediction) tables."""
    suffix = {n: [r for r in recs if r["model"] == n and r["attack"] == "gcg suffix"] for n in models}
    last = {n: m.n_layers - 1 for n, m in models.items()}
    dz, top = {}, {}
    for n, m in models.items():
        r0, ra, _ = residual_triplet(m, suffix[n])
        sae = saes[n][last[n]]
        dz[n] = _codes(sae, ra[:, last[n]]) - _codes(sae, r0[:, last[n]])
        top[n] = set(dz[n].abs().mean(0).argsort(descending=True)[:TOP].tolist())
    g = torch.Generator().manual_seed(seed)
    share_rows, tr_rows, pred = [], [], []
    for a, b in permutations(models, 2):
        sa, sb = saes[a][last[a]], saes[b][last[b]]
        tab = match(sa, acts[a][last[a]], sb, acts[b][last[b]], method="correlation", n_permutations=1,
                    seed=seed).table
        partner = torch.as_tensor(tab.feature_b.to_numpy().copy())
        live = torch.nonzero(torch.as_tensor(tab.live.to_numpy().copy()))[:, 0]
        overlap = np.mean([int(partner[j]) in top[b] for j in top[a]])
        rand = np.mean([np.mean([int(partner[j]) in top[b] for j in live[torch.randperm(len(live), generator=g)[:TOP]]])
                        for _ in range(50)]) if len(live) else np.nan
        share_rows.append({"model_a": a, "model_b": b, "same_arch": a.split("-")[0] == b.split("-")[0],
                           "overlap_top10": overlap, "random_overlap": rand,
                           "partner_correlation_top10": float(tab.correlation.iloc[list(top[a])].mean())})
        # A's suffixes on B
        mb = models[b]
        tgt = torch.tensor([r["target"] for r in suffix[a]])
        with torch.no_grad():
            ok = mb(torch.stack([r["adv"] for r in suffix[a]]))[:, -1].argmax(-1) == tgt
            ok_c = mb(torch.stack([r["control"] for r in suffix[a]]))[:, -1].argmax(-1) == tgt
        n = len(tgt)
        t, tlo, thi = wilson(int(ok.sum()), n)
        c, clo, chi = wilson(int(ok_c.sum()), n)
        tr_rows.append({"source": a, "target": b, "same_arch": a.split("-")[0] == b.split("-")[0], "n": n,
                        "transfer_rate": t, "ci_low": tlo, "ci_high": thi, "control_rate": c, "control_ci_low": clo,
                        "control_ci_high": chi, "overlap_top10": overlap})
        # does the change A's suffix makes in A's shared latents recur in B's partners?
        rb0, rba, _ = residual_triplet(mb, suffix[a])
        dzb = _codes(sb, rba[:, last[b]]) - _codes(sb, rb0[:, last[b]])
        mapped = torch.zeros_like(dzb)
        keep = live[partner[live] >= 0]
        mapped.index_add_(1, partner[keep], dz[a][:, keep])
        cos = torch.nn.functional.cosine_similarity(mapped, dzb, dim=1)
        pred += [{"source": a, "target": b, "prompt": i, "cosine": float(cos[i]), "transferred": bool(ok[i])}
                 for i in range(n)]
    pdf = pd.DataFrame(pred)
    prow = []
    for scope, g_ in [("all pairs", pdf)] + [(f"{a} -> {b}", d) for (a, b), d in pdf.groupby(["source", "target"])]:
        yes, no = g_.cosine[g_.transferred].to_numpy(), g_.cosine[~g_.transferred].to_numpy()
        my, mn = (float(np.nanmean(v)) if len(v) else np.nan for v in (yes, no))
        both = min(len(yes), len(no)) > 1
        se = math.sqrt(np.nanvar(yes, ddof=1) / len(yes) + np.nanvar(no, ddof=1) / len(no)) if both else np.nan
        prow.append({"scope": scope, "n_transferred": len(yes), "n_not": len(no), "cosine_transferred": my,
                     "cosine_not": mn, "difference": my - mn, "ci_low": my - mn - 1.96 * se,
                     "ci_high": my - mn + 1.96 * se})
    return pd.DataFrame(share_rows), pd.DataFrame(tr_rows), pd.DataFrame(prow)


def figures(success, pooled, transfer, sharing) -> dict:
    """One figure per question: success, concentration, sharing, transfer."""
    out = {}
    allm = success[success.model == "all"].reset_index(drop=True)
    fig, (ax,) = panels(1, 1, (7.5, 3.4))
    x = np.arange(len(allm))
    for off, label, color in ((-0.25, "attack", "C3"), (0.0, "control", "C7"), (0.25, "projected", "C0")):
        if f"{label}_rate" not in allm:
            continue
        r = allm[f"{label}_rate"].to_numpy(dtype=float)
        err = np.vstack([r - allm[f"{label}_ci_low"], allm[f"{label}_ci_high"] - r]).astype(float)
        ok = np.isfinite(r)  # "projected" exists for the embedding attacks only
        ax.bar(x[ok] + off, r[ok], 0.25, yerr=err[:, ok], label=label, color=color, capsize=2)
    ax.set_xticks(x, allm.attack, rotation=20, fontsize=7)
    ax.set_ylabel("success rate")
    ax.legend(fontsize=7)
    ax.set_title("Do the attacks succeed where matched random edits do not? (95% Wilson)", fontsize=9)
    out["success"] = (fig, "Success per attack, pooled over models, beside its control.")
    layer = int(pooled.layer.max())
    last = pooled[pooled.layer == layer]
    attacks = list(dict.fromkeys(last.attack))
    fig, axes = panels(len(attacks), min(3, len(attacks)), (3.4, 2.6))
    for ax, attack in zip(axes, attacks):
        for j, (control, d) in enumerate(last[last.attack == attack].groupby("control", sort=False)):
            y = np.arange(len(d)) + 0.2 * j
            ax.errorbar(d.difference, y, xerr=[d.difference - d.ci_low, d.ci_high - d.difference], fmt="o", ms=3,
                        label=control, color=f"C{j}")
        ax.axvline(0, color="k", lw=0.6)
        ax.set_yticks(np.arange(len(d)), d.basis, fontsize=6)
        ax.legend(fontsize=5)
        ax.set_title(attack, fontsize=8)
        ax.set_xlabel("frac_top5: attack - control", fontsize=7)
    fig.suptitle(f"Is r more concentrated than a matched random edit? (last block, layer {layer})", fontsize=9)
    fig.tight_layout()
    out["concentration"] = (fig, "Paired difference in frac_top5 per basis; right of 0: the attack's change is more "
                            "concentrated than its control's.")
    fig, (ax,) = panels(1, 1, (5.0, 3.2))
    ax.scatter(sharing.random_overlap, sharing.overlap_top10, c=np.where(sharing.same_arch, "C0", "C1"), s=18)
    hi = float(np.nanmax([sharing.overlap_top10.max(), sharing.random_overlap.max(), 0.1]))
    ax.plot([0, hi], [0, hi], "k--", lw=0.6)
    ax.set_xlabel("random latents' partners in B's top 10")
    ax.set_ylabel("most-moved latents' partners in B's top 10")
    ax.set_title("Are the moved latents shared? (blue: same arch, orange: other arch)", fontsize=8)
    out["sharing"] = (fig, "Each point is a model pair (A, B); above the diagonal: A's most-moved latents have "
                      "partners that B's own attack also moves, more than random latents do.")
    mat = transfer.pivot_table(index="source", columns="target", values="transfer_rate")
    out["transfer"] = (heatmap(mat, "suffix transfer rate (rows: source)"), "Transfer of GCG suffixes between models.")
    return out


def answer(success, pooled, sharing, transfer, predict) -> str:
    """The Findings paragraph, from the numbers."""
    allm = success[success.model == "all"].set_index("attack")
    lines = ["**Findings** (numbers below; 95% intervals in brackets)."]

    def rate(a, col):
        r = allm.loc[a]
        return f"{r[f'{col}_rate']:.2f} [{r[f'{col}_ci_low']:.2f}, {r[f'{col}_ci_high']:.2f}]"

    for a in allm.index:
        extra = f", its nearest-token projection {rate(a, 'projected')}" if "PGD" in a else ""
        if "mean_kl" in allm and np.isfinite(allm.loc[a, "mean_kl"]):
            extra += (f"; output KL {allm.loc[a, 'mean_kl']:.3f} nats, ||r||/||h|| at the last block "
                      f"{allm.loc[a, 'mean_rel_change']:.2f}")
        lines.append(f"- {a}: success {rate(a, 'attack')} vs control {rate(a, 'control')}{extra}; mean edits "
                     f"{allm.loc[a, 'mean_edits']:.1f}.")
    layer = int(pooled.layer.max())
    order = list(dict.fromkeys(zip(pooled.attack, pooled.control)))
    last = pooled[pooled.layer == layer].set_index(["attack", "control", "basis"]).sort_index()
    verdicts = []
    for a, control in order:
        if (a, control, "SAE codes") not in last.index:
            continue
        s = last.loc[(a, control, "SAE codes")]
        others = last.loc[(a, control)].drop(index="SAE codes")
        more = s.ci_low > 0
        beyond = more and bool((s.ci_low > others.ci_high).all())
        word = "more" if s.ci_low > 0 else "less" if s.ci_high < 0 else "not detectably more"
        verdicts.append((a, control, more, beyond))
        lines.append(f"- r from {a} (layer {layer}) vs *{control}* (median ||r|| ratio {s.norm_ratio:.2f}): {word} "
                     f"concentrated on the top-{K} SAE codes ({s.attack_frac_top5:.3f} vs {s.control_frac_top5:.3f}, "
                     f"difference {s.difference:+.3f} [{s.ci_low:+.3f}, {s.ci_high:+.3f}]); other bases: "
                     + "; ".join(f"{b} {o.difference:+.3f}" for b, o in others.iterrows()) + ".")
    by_attack: dict = {}
    for a, _, more, beyond in verdicts:
        by_attack.setdefault(a, []).append((more, beyond))
    specific = [a for a, v in by_attack.items() if all(b for _, b in v)]
    partly = [a for a, v in by_attack.items() if a not in specific and all(m for m, _ in v)]
    rest = [a for a in by_attack if a not in specific and a not in partly]
    parts = []
    if specific:
        parts.append(f"Yes for {', '.join(specific)}: against both controls (same edits or norm, and same size of "
                     "activation change) the residual change is more concentrated in the SAE's codes, by more than in "
                     "every other basis, so r moves along a few learned features.")
    if partly:
        parts.append(f"{'Partly' if not specific else 'Only partly'} for {', '.join(partly)}: r is more concentrated "
                     "in the SAE codes than both controls, but not by more than in every other basis (PCA, neuron, "
                     "random), so that concentration is not specific to the SAE's features.")
    if rest:
        parts.append(f"No for {', '.join(rest)}: r is not more concentrated in the SAE codes than both controls.")
    head = " ".join(parts) or "No attack has enough samples to answer."
    share = sharing.overlap_top10.mean() - sharing.random_overlap.mean()
    tp = predict[predict.scope == "all pairs"].iloc[0]
    lines.append(f"- Sharing: on average {sharing.overlap_top10.mean():.2f} of A's 10 most-moved latents have "
                 f"partners among B's 10 most-moved (random latents: {sharing.random_overlap.mean():.2f}, difference "
                 f"{share:+.2f}). Suffix transfer: mean {transfer.transfer_rate.mean():.2f} (controls "
                 f"{transfer.control_rate.mean():.2f}). Transferred suffixes' code changes agree with the target's "
                 f"{tp.cosine_transferred:.3f} vs {tp.cosine_not:.3f} for those that do not (difference "
                 f"{tp.difference:+.3f} [{tp.ci_low:+.3f}, {tp.ci_high:+.3f}]).")
    return ("**Is r moving in an interesting direction (language models)?** " + head + "\n\n" + "\n".join(lines))

"""The Findings of ``univ run universality``: each question of the analysis answered from the run's tables with an
effect size, a 95% interval and a Benjamini-Hochberg-corrected p-value, and the results that cut against the
headline or show a measure failing a sanity check named as such.

Units: model pairs (similarity, feature matching, sharing of moved latents) or models (concentration of the
adversarial change). Pairs that share a model are not independent, so the intervals and p-values of the
pair-level tests are optimistic; the text says so. Every test of the table is in one BH family.
"""

from __future__ import annotations

import math

import pandas as pd

from univ.similarity.statistics import bh_qvalues, difference_test

ALPHA = 0.05
SAME, DIFF = "same arch, different seed", "different arch"
RAND_SAME, RAND_DIFF = "random init, same arch", "random init, different arch"


def _fmt(x: float, nd: int = 3) -> str:
    return "nan" if not math.isfinite(x) else f"{x:+.{nd}f}" if x < 0 else f"{x:.{nd}f}"


class _Tests:
    """Collects the tests; BH q-values once all are in."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, question: str, comparison: str, d, measure: str = "", units: str = "model pairs") -> dict:
        row = {"question": question, "measure": measure, "comparison": comparison, "effect": d.effect,
               "ci_low": d.ci_low, "ci_high": d.ci_high, "p_value": d.p_value, "p_min": d.p_min, "n_a": d.n_a,
               "n_b": d.n_b, "units": units}
        self.rows.append(row)
        return row

    def table(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        df.insert(df.columns.get_loc("p_value") + 1, "q_value", bh_qvalues(df["p_value"].to_numpy(dtype=float)))
        df["verdict"] = [_verdict(r) for r in df.itertuples()]
        return df


def _verdict(r) -> str:
    if not math.isfinite(r.p_value):
        return "too few units to test"
    if r.p_min > ALPHA:
        return f"too few units to test (smallest attainable p {r.p_min:.2g})"
    if r.q_value < ALPHA and (r.ci_low > 0 or r.ci_high < 0):
        return "positive" if r.effect > 0 else "negative"
    return "not distinguishable from 0"


def _testable(r: dict) -> bool:
    return not r["verdict"].startswith("too few")


def _say(r: dict, unit: str = "") -> str:
    """'+0.190 (95% CI [0.150, 0.230], q = 0.001)' for a row after BH."""
    return (f"{_fmt(r['effect'])}{unit} (95% CI [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}], "
            f"q = {r['q_value']:.2g}, {r['n_a']}{' vs ' + str(r['n_b']) if r['n_b'] else ''} {r['units']})")


def _last_hidden(sim: pd.DataFrame, last: dict) -> pd.DataFrame:
    keep = [last.get(a) == la and last.get(b) == lb for a, b, la, lb in
            zip(sim.model_a, sim.model_b, sim.layer_a, sim.layer_b)]
    return sim[keep]


def findings(sim: pd.DataFrame, last_layers: dict, matching: pd.DataFrame | None, projection: pd.DataFrame | None,
             shared: pd.DataFrame | None, warnings_seen: list[str], seed: int = 0) -> tuple[str, pd.DataFrame]:
    """(Markdown text, findings table). last_layers: {model id: its last hidden layer}."""
    T = _Tests()
    last = _last_hidden(sim, last_layers)
    sim_rows = {}
    for metric, g in last.groupby("metric", sort=False):
        v = {c: g[g.category == c]["value"].to_numpy() for c in (SAME, DIFF, RAND_SAME, RAND_DIFF)}
        sim_rows[metric] = {
            "same": T.add("similarity", "same arch: trained - untrained", difference_test(v[SAME], v[RAND_SAME],
                                                                                          seed=seed), metric),
            "diff": T.add("similarity", "cross arch: trained - untrained", difference_test(v[DIFF], v[RAND_DIFF],
                                                                                           seed=seed), metric),
            "gap": T.add("similarity", "trained: cross arch - same arch", difference_test(v[DIFF], v[SAME],
                                                                                          seed=seed), metric),
            "ratio": (v[DIFF].mean() / v[SAME].mean()) if len(v[DIFF]) and len(v[SAME]) else math.nan,
        }
    feat = {}
    if matching is not None and not matching.empty:
        for col in ("shared_fraction", "decoder_svcca"):
            m = {c: matching[matching.category == c][col].to_numpy() for c in (SAME, DIFF, RAND_SAME, RAND_DIFF)}
            feat[col] = {
                "same": T.add("shared features", "same arch: trained - untrained",
                              difference_test(m[SAME], m[RAND_SAME], seed=seed), col),
                "diff": T.add("shared features", "cross arch: trained - untrained",
                              difference_test(m[DIFF], m[RAND_DIFF], seed=seed), col),
            }
        tr = matching[matching.category.isin([SAME, DIFF])]
        feat["vs_shuffled"] = T.add("shared features", "trained pairs: shared - shuffled-input baseline",
                                    difference_test(tr.shared_fraction - tr.shared_fraction_shuffled, seed=seed),
                                    "shared_fraction")
        s, d = (matching[matching.category == c].shared_fraction.to_numpy() for c in (SAME, DIFF))
        feat["ceiling"] = (d.mean() / s.mean()) if len(s) and len(d) and s.mean() > 0 else math.nan
    adv = {}
    if projection is not None and not projection.empty:
        wide = projection.pivot_table(index=["model", "basis"], columns="perturbation", values="frac_top5")
        for basis in dict.fromkeys(projection.basis):
            sub = wide.xs(basis, level="basis")
            adv[basis] = T.add("adversarial concentration", "PGD - same-norm random perturbation",
                               difference_test(sub["pgd"] - sub["random_same_norm"], seed=seed),
                               f"frac_top5 ({basis} basis)", "models")
        pgd = wide["pgd"].unstack("basis")
        if {"sae", "pca"} <= set(pgd.columns):
            adv["sae_vs_pca"] = T.add("adversarial concentration", "PGD: SAE basis - PCA basis",
                                      difference_test(pgd["sae"] - pgd["pca"], seed=seed), "frac_top5", "models")
    link = {}
    if shared is not None and not shared.empty:
        link["moved"] = T.add("moved latents and transfer", "PGD-moved - randomly moved latents that are shared",
                              difference_test(shared.moved_latents_shared - shared.random_moved_latents_shared,
                                              seed=seed), "fraction shared", "(source, target) pairs")
        link["corr"] = T.add("moved latents and transfer", "corr(shared mass of the change, transfer)",
                             difference_test(shared.corr_shared_mass_vs_transfer, seed=seed), "Pearson r",
                             "(source, target) pairs")
    table = T.table()
    by_id = {id(r): i for i, r in enumerate(T.rows)}

    def row(r: dict) -> dict:
        return table.iloc[by_id[id(r)]].to_dict()

    lines, contra, failing, untestable = [], [], [], []
    # 1. similarity
    bits = []
    for metric, r in sim_rows.items():
        same, diff, gap = row(r["same"]), row(r["diff"]), row(r["gap"])
        bits.append(f"**{metric}**: trained minus untrained, same architecture {_say(same)}; across architectures "
                    f"{_say(diff)}; cross-architecture / same-architecture (seed ceiling) = {r['ratio']:.2f}, "
                    f"difference {_say(gap)}")
        bad = [f"{where} {_say(x)}" for where, x in (("same architecture", same), ("across architectures", diff))
               if _testable(x) and x["verdict"] != "positive"]
        if bad:
            failing.append(f"{metric} does not separate trained from untrained networks ({'; '.join(bad)}): "
                           "its values here do not show learned structure")
        untestable += [f"{metric} {where}" for where, x in (("same architecture", same),
                                                             ("across architectures", diff)) if not _testable(x)]
    tested = sim[sim.p_value.notna()]
    if len(tested):
        sig = tested.groupby("metric", sort=False)["q_value"].apply(lambda q: f"{(q < ALPHA).mean():.0%}")
        bits.append(f"against the row-permutation null, the share of trained layer pairs with q < {ALPHA} (BH over "
                    f"all {len(tested)} tests; smallest reachable p {tested.p_min.min():.2g}): "
                    + ", ".join(f"{m} {v}" for m, v in sig.items())
                    + " (this null only says two layers are related at all, as any two networks fed the same inputs "
                    "are; the comparison with untrained networks is the one that speaks to learned structure)")
    if bits:
        lines.append("**Are representations more similar than chance, within and across architectures?** "
                     "Last-hidden-layer similarity of model pairs, trained against the same pairs of untrained "
                     "networks. " + "; ".join(bits) + ".")
    # 2. features
    if feat:
        sf, sv = feat["shared_fraction"], feat["decoder_svcca"]
        lines.append(
            "**Do the models' SAEs share features?** Shared fraction (latents whose best activation correlation "
            f"in the other model is >= 0.7), trained minus untrained: same architecture {_say(row(sf['same']))}, "
            f"across architectures {_say(row(sf['diff']))}; trained pairs above their shuffled-input baseline by "
            f"{_say(row(feat['vs_shuffled']))}. Cross-architecture sharing is {feat['ceiling']:.2f} of the "
            "same-architecture (seed-to-seed) value, the ceiling any cross-model number should be read against.")
        bad = [f"{where}: {_say(row(sv[key]))}" for key, where in (("same", "same architecture"),
                                                                   ("diff", "across architectures"))
               if _testable(row(sv[key])) and row(sv[key])["verdict"] != "positive"]
        if bad:
            contra.append(f"decoder SVCCA of matched latents is not higher for trained than for untrained networks "
                          f"({'; '.join(bad)}): the SVCCA matching method does not detect learned shared features "
                          "here; read the correlation method with its untrained and shuffled baselines instead")
        for key, where in (("same", "same architecture"), ("diff", "across architectures")):
            r = row(sf[key])
            if _testable(r) and r["verdict"] != "positive":
                contra.append(f"the shared fraction of trained networks is not above that of untrained ones "
                              f"({where}: {_say(r)})")
    # 3. adversarial concentration
    if adv:
        bits = [f"{b}: {_say(row(adv[b]))}" for b in adv if b != "sae_vs_pca"]
        lines.append("**Is the adversarial change concentrated in a few directions?** Share of ||delta||^2 in the "
                     "best 5 directions of each basis, PGD minus a random perturbation of equal norm, per model: "
                     + "; ".join(bits) + ".")
        if "sae_vs_pca" in adv:
            r = row(adv["sae_vs_pca"])
            if _testable(r) and r["verdict"] != "positive":
                contra.append(f"the SAE basis does not concentrate the adversarial change more than the PCA basis "
                              f"(SAE - PCA: {_say(r)}): concentration alone is no evidence that the change moves "
                              "along interpretable features")
    # 4. link to transfer
    if link:
        rm, rc = row(link["moved"]), row(link["corr"])
        lines.append("**Are the latents an attack moves shared with other models, and does that predict transfer?** "
                     f"PGD-moved minus randomly moved latents that are shared: {_say(rm)}; correlation across examples "
                     f"between the share of the code change on shared latents and transfer: {_say(rc)}.")
        if rc["verdict"] == "negative":
            contra.append(f"examples whose code change falls more on shared latents transfer less, not more "
                          f"(mean r {_say(rc)})")
        elif _testable(rc) and rc["verdict"] != "positive":
            contra.append(f"moving shared latents does not predict transfer (mean r {_say(rc)})")
        if _testable(rm) and rm["verdict"] != "positive":
            contra.append(f"the latents PGD moves are not more often shared than those a random perturbation moves "
                          f"({_say(rm)})")
    text = ["Each answer gives the effect with its 95% bootstrap interval and a Benjamini-Hochberg q-value over "
            f"the {len(table)} tests of the `findings` table (permutation tests over model pairs or models). Pairs "
            "that share a model are not independent, so these intervals and q-values are optimistic.", ""]
    text += lines
    if contra:
        text += ["", "**Results that cut against the headline:** " + "; ".join(contra) + "."]
    if failing:
        text += ["", "**Measures failing a sanity check in this run:** " + "; ".join(failing) + "."]
    if untestable:
        text += ["", "**Too few model pairs to test** (the smallest attainable p-value exceeds 0.05; run more "
                 "seeds): " + ", ".join(untestable) + "."]
    if warnings_seen:
        text += ["", "**Warnings raised while computing (validity of a measure):** "
                 + " ".join(f"({i + 1}) {w}" for i, w in enumerate(warnings_seen))]
    return "\n".join(text), table


"""analyses/group_universality.py: the AUC helpers, the settings, and the analysis end to end on a tiny group."""

import numpy as np
import pytest


def test_auc_known_answers_and_interval():
    from analyses._group_universality_stages import auc, bootstrap_auc

    truth = np.array([True, True, False, False])
    assert auc(np.array([0.9, 0.8, 0.1, 0.2]), truth) == 1.0
    assert auc(np.array([0.1, 0.2, 0.9, 0.8]), truth) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), truth) == 0.5
    assert np.isnan(auc(np.array([0.1, 0.2]), np.array([True, True])))
    lo, hi = bootstrap_auc(np.array([0.9, 0.8, 0.1, 0.2]), truth, 50, 0)
    assert lo == hi == 1.0
    rng = np.random.default_rng(0)  # no signal: the interval straddles 0.5
    t = rng.random(200) < 0.5
    lo, hi = bootstrap_auc(rng.random(200), t, 200, 0)
    assert lo < 0.5 < hi


@pytest.mark.parametrize("settings, field", [
    ({"group": "Q8"}, "group"), ({"group": "S9"}, "group"), ({"seeds": 1}, "seeds"),
    ({"archs": ("cnn",)}, "archs"), ({"metrics": ("cka",)}, "metrics"), ({"train_fraction": 1.0}, "train_fraction"),
    ({"sae_k": 999}, "sae_k"),
])
def test_bad_settings_name_the_field(settings, field):
    from analyses.group_universality import Config
    from univ.config import SettingError

    with pytest.raises(SettingError) as e:
        Config.resolve(quick=True, **settings)
    assert e.value.field == field


def test_group_universality_end_to_end_on_d5(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path))
    from analyses.group_universality import Config, run
    from univ.groups import irreps, parse_group

    cfg = Config.resolve(quick=True, group="D5", seeds=3, width=16, max_steps=200, checkpoint_every=50,
                         sae_steps=50, sae_k=4, n_rows=100, n_bootstrap=20, metrics=("linear_cka", "svcca"))
    report = run(cfg)
    per_irrep, per_seed = report.tables["per_irrep"], report.tables["per_seed"]
    names = {f.name for f in irreps(parse_group("D5"))} - {"trivial"}
    assert set(per_irrep["irrep"]) == names and len(per_seed) == 3
    # the isotypic subspaces fill the centred functions on G: per model the embedding fractions sum to 1
    assert np.allclose(per_irrep.groupby("model")["embed_frac"].sum(), 1.0)
    assert np.allclose(per_irrep.groupby("model")["unembed_frac"].sum(), 1.0)
    assert (per_irrep[["hidden_frac", "logit_frac"]].to_numpy() <= 1 + 1e-9).all()
    for _, row in per_seed.iterrows():  # key irreps are the ones above the threshold of the logit variance
        mine = per_irrep[per_irrep["model"] == row["model"]]
        key = sorted(mine.loc[mine["logit_frac"] >= cfg.key_threshold, "irrep"])
        assert row["key_irreps"] == ("+".join(key) or "(none)")
    paper = report.tables["paper_vs_ours"]
    assert paper.loc[paper["measure"] == "trace similarity, standard irrep", "paper_S5_mlp"].item() == 0.767
    bench = report.tables["measure_benchmark"]
    assert set(bench["measure"]) == {"linear_cka", "svcca", "sae_match_correlation", "sae_shared_fraction"}
    assert ((bench["auc"].between(0, 1)) | bench["auc"].isna()).all()
    assert ((bench["spearman_jaccard"].between(-1, 1)) | bench["spearman_jaccard"].isna()).all()
    assert (bench["n_same"] + bench["n_different"] == 3).all()
    assert len(report.tables["sae_irrep_alignment"]) == 3

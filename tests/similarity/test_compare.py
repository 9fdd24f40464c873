"""compare(): tidy table over layer pairs, permutation baseline, bootstrap CI, grid."""

import numpy as np
import pandas as pd
import pytest
import torch

import univ.report
from univ import similarity as sim
from univ.similarity.compare import COLUMNS


@pytest.fixture(scope="module")
def acts():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5))
    a = {"l0": x, "l1": np.tanh(x @ rng.standard_normal((5, 8)))}
    b = {"m0": torch.from_numpy(x @ rng.standard_normal((5, 5))).float(),
         "m1": rng.standard_normal((60, 6)),
         "m2": np.tanh(x @ rng.standard_normal((5, 7)))}
    return a, b


def test_table_shape_and_nans(acts):
    df = sim.compare(*acts, metrics=["linear_cka", "svcca"])
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 * 3 * 2
    assert df[["baseline_mean", "p_value", "ci_low", "ci_high"]].isna().all().all()
    assert df["value"].between(0, 1).all()
    row = df[(df.layer_a == "l0") & (df.layer_b == "m0") & (df.metric == "linear_cka")]
    assert row["value"].item() == pytest.approx(sim.linear_cka(acts[0]["l0"], acts[1]["m0"]))


def test_baseline_and_ci(acts):
    df = sim.compare(*acts, metrics=["linear_cka"], baseline="permutation", n_permutations=30,
                     ci=0.9, n_bootstrap=30, seed=1)
    related = df[(df.layer_a == "l0") & (df.layer_b == "m0")].iloc[0]
    unrelated = df[(df.layer_a == "l0") & (df.layer_b == "m1")].iloc[0]
    assert related.p_value == pytest.approx(1 / 31) and related.baseline_mean < related.value
    assert unrelated.p_value > 0.05
    assert (df.ci_low <= df.ci_high).all()
    assert related.ci_low <= related.value <= related.ci_high
    again = sim.compare(*acts, metrics=["linear_cka"], baseline="permutation", n_permutations=30,
                        ci=0.9, n_bootstrap=30, seed=1)
    pd.testing.assert_frame_equal(df, again)
    # draws shared by the table and seeded by (seed, n): a sub-table reproduces the same numbers (except the
    # q-value, whose family is the table)
    sub = sim.compare({"l1": acts[0]["l1"]}, {"m2": acts[1]["m2"]}, metrics=["linear_cka"],
                      baseline="permutation", n_permutations=30, ci=0.9, n_bootstrap=30, seed=1)
    full = df[(df.layer_a == "l1") & (df.layer_b == "m2")].reset_index(drop=True)
    cols = [c for c in COLUMNS[3:] if c != "q_value"]
    assert sub[cols].iloc[0].to_numpy() == pytest.approx(full[cols].iloc[0].to_numpy())


def test_grid_and_figure(acts):
    df = sim.compare(*acts, metrics=["linear_cka", "procrustes"])
    g = sim.grid(df, "procrustes")
    assert list(g.index) == ["l0", "l1"] and list(g.columns) == ["m0", "m1", "m2"]
    assert g.loc["l1", "m2"] == df.query("metric == 'procrustes' and layer_a == 'l1' and layer_b == 'm2'").value.item()
    with pytest.raises(ValueError, match="unknown metric 'cca'"):
        sim.grid(df, "cca")
    fig = univ.report.grid_figure(df, "linear_cka")
    assert fig.axes


def test_matching_pairs_and_errors(acts):
    a, _ = acts
    df = sim.compare(a, a, metrics=["linear_cka"], pairs="matching")
    assert list(zip(df.layer_a, df.layer_b)) == [("l0", "l0"), ("l1", "l1")]
    assert np.allclose(df.value, 1.0)
    with pytest.raises(ValueError, match="same number of samples"):
        sim.compare(a, {"z": np.zeros((10, 3))})
    with pytest.raises(ValueError, match="baseline: unknown value"):
        sim.compare(a, a, baseline="shuffle")
    with pytest.raises(ValueError, match="ci: must be"):
        sim.compare(a, a, ci=95)
    with pytest.raises(ValueError, match=r"acts_b\['z'\]: contains"):
        sim.compare(a, {"z": np.full((60, 3), np.nan)})

"""match(): two seeds on the same activations share features well above the shuffled baseline; SAEs on
unrelated data sit near it."""

import pytest
import torch

import univ.sae as S
from univ.data import sparse_coding


@pytest.fixture(scope="module")
def saes():
    ds = sparse_coding(n_samples=4000, d=32, n_atoms=64, k=(3, 5), seed=1)
    x = ds.x_train
    kw = dict(max_steps=800, progress=False)
    a = S.TopKSAE(32, 128, k=4, seed=0).fit(x, **kw)
    b = S.TopKSAE(32, 128, k=4, seed=1).fit(x, **kw)
    noise = torch.randn(len(x), 32, generator=torch.Generator().manual_seed(5))
    c = S.TopKSAE(32, 128, k=4, seed=2).fit(noise, **kw)
    return a, b, c, x, noise


def test_correlation_two_seeds_vs_unrelated(saes):
    a, b, c, x, noise = saes
    same = S.match(a, x, b, x, method="correlation")
    assert isinstance(same, S.MatchResult) and same.method == "correlation"
    assert len(same.table) == 128 and {"feature_a", "feature_b", "correlation", "shared"} <= set(same.table)
    s = same.summary
    assert s["shared_fraction"] >= 0.5 and s["baseline_shared_fraction"] <= 0.05
    assert s["mean_max_correlation"] > s["baseline_mean_max_correlation"] + 0.4
    other = S.match(a, x, c, noise, method="correlation").summary
    assert other["shared_fraction"] <= other["baseline_shared_fraction"] + 0.05
    assert abs(other["mean_max_correlation"] - other["baseline_mean_max_correlation"]) < 0.1


def test_hungarian_two_seeds_vs_unrelated(saes):
    a, b, c, x, _ = saes
    same = S.match(a, None, b, None, method="hungarian")
    t = same.table
    assert t["shared"].equals((t.feature_b_encoder == t.feature_b_decoder) & (t.cos_encoder >= 0.7)
                              & (t.cos_decoder >= 0.7))
    assert same.summary["shared_fraction"] >= 0.4
    assert same.summary["baseline_shared_fraction"] <= 0.05
    other = S.match(a, None, c, None, method="hungarian").summary
    assert other["shared_fraction"] <= other["baseline_shared_fraction"] + 0.1
    with pytest.raises(ValueError, match="d_in"):
        S.match(a, None, S.TopKSAE(16, 32, k=4), None, method="hungarian")


def test_svcca_two_seeds_significant(saes):
    a, b, _, x, _ = saes
    r = S.match(a, x, b, x, method="svcca", n_permutations=20)
    assert list(r.table["metric"]) == ["svcca", "rsa"]
    s = r.summary
    assert s["svcca"] > s["svcca_baseline"] + 0.2 and s["rsa"] > s["rsa_baseline"] + 0.2
    assert s["svcca_p"] == pytest.approx(1 / 21) and s["rsa_p"] == pytest.approx(1 / 21)


@pytest.mark.parametrize("method", ["correlation", "hungarian", "svcca"])
def test_every_method_reports_comparable_null_and_calibrated_score(saes, method):
    a, b, c, x, noise = saes
    same = S.match(a, x, b, x, method=method, n_permutations=10).summary
    assert {"score", "baseline", "calibrated", "p_value"} <= set(same)
    assert same["calibrated"] == pytest.approx((same["score"] - same["baseline"]) / (1 - same["baseline"]))
    assert same["calibrated"] > 0.3 and same["p_value"] == pytest.approx(1 / 11)  # two seeds: far above chance
    if method != "svcca":  # unrelated SAEs: calibrated near 0 (svcca: too few correlated pairs to run)
        other = S.match(a, x, c, noise, method=method, n_permutations=10).summary
        assert abs(other["calibrated"]) < 0.1


def test_bad_inputs(saes):
    a, b, _, x, _ = saes
    with pytest.raises(ValueError, match="same number of samples"):
        S.match(a, x, b, x[:-1])
    with pytest.raises(ValueError, match="method"):
        S.match(a, x, b, x, method="cosine")
    with pytest.raises(ValueError, match="d_in"):
        S.match(a, x[:, :8], b, x)
    bad = x.clone()
    bad[3, 0] = float("inf")
    with pytest.raises(ValueError, match="acts_b.*NaN"):
        S.match(a, x, b, bad)

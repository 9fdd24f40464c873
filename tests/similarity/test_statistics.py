"""Statistics with known truth: null p-values are uniform, strong dependence reaches p < 0.001, the cheap
permutation null equals the naive one, BH q-values match scipy, bootstrap intervals cover."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from univ import similarity as sim
from univ.similarity.compare import _BUILTIN
from univ.similarity.resampling import boot_cell, plans_for
from univ.similarity.statistics import (
    basic_interval,
    bca_interval,
    besag_clifford,
    bh_qvalues,
    calibrated,
    ceiling_score,
    draws,
    infer,
    interval,
)

ALL = list(_BUILTIN)


def _pair(rng, n, d1=4, d2=3, signal=0.0):
    x = rng.standard_normal((n, d1))
    y = signal * x[:, :d2] + rng.standard_normal((n, d2))
    return x, y


@pytest.mark.parametrize("metric", ALL)
def test_cheap_null_equals_naive(metric):
    rng = np.random.default_rng(1)
    x, y = _pair(rng, 30, signal=0.5)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    perms, _, _ = draws(0, 30, n_permutations=20)
    (plan,) = plans_for({metric: _BUILTIN[metric]}, _BUILTIN)
    cheap = plan.null(plan.prepare(X), plan.prepare(Y), perms)[metric]
    naive = np.array([_BUILTIN[metric](X, Y[p]) for p in perms])
    np.testing.assert_allclose(cheap, naive, rtol=0, atol=1e-10)


# documented departures: RBF CKA's resamples keep the full sample's bandwidth; RSA drops the zero-distance
# pairs of copies of one input (univ.similarity.resampling.GramPlan)
@pytest.mark.parametrize("metric", [m for m in ALL if m not in ("rbf_cka", "rbf_cka_debiased", "rsa")])
def test_cheap_bootstrap_equals_naive(metric):
    """Every plan's resample (closed-form batched or per resample) gives the measure on the duplicated rows."""
    rng = np.random.default_rng(4)
    x, y = _pair(rng, 40, signal=0.5)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    _, counts, jack = draws(3, 40, n_bootstrap=6, n_groups=4)
    counts = torch.cat([counts, jack])
    (plan,) = plans_for({metric: _BUILTIN[metric]}, _BUILTIN)
    sx, sy = plan.prepare(X), plan.prepare(Y)
    cheap = boot_cell(plan, sx, sy, X, Y, counts)[metric]
    idx = [torch.repeat_interleave(torch.arange(40), c) for c in counts]
    naive = [_BUILTIN[metric](X[i], Y[i]) for i in idx]
    np.testing.assert_allclose(cheap, naive, rtol=0, atol=1e-8)


def _null_pvalues(metric, draws_, n=40):
    rng = np.random.default_rng(7)
    ps = []
    for i in range(draws_):
        x, y = _pair(rng, n)
        df = sim.compare({"x": x}, {"y": y}, metrics=[metric], baseline="permutation", seed=i, progress=False)
        ps.append(df.p_value.item())
    return np.array(ps)


# Attainable values of both p-value forms (h / l with h = 20, and k / 1001): P(p <= edge) = edge exactly
EDGES = np.array([0.0, 0.05, 0.1, 0.2, 0.5, 1.0])


def _chi2_uniform(ps):
    counts = np.bincount(np.searchsorted(EDGES[1:], ps, side="left"), minlength=len(EDGES) - 1)  # (a, b] bins
    expected = np.diff(EDGES) * len(ps)
    return scipy.stats.chisquare(counts, expected).pvalue


@pytest.mark.parametrize("metric", [m for m in ALL if m != "mutual_knn"])
def test_null_pvalues_uniform(metric):
    ps = _null_pvalues(metric, 200)
    assert _chi2_uniform(ps) > 0.001, np.sort(ps)


def test_null_pvalues_mutual_knn_valid():
    # a discrete measure: ties make the permutation p-value conservative, never anti-conservative
    ps = _null_pvalues("mutual_knn", 200)
    for a in (0.05, 0.1, 0.2, 0.5):
        assert np.mean(ps <= a) <= a + 3 * np.sqrt(a * (1 - a) / len(ps))


def test_uniformity_check_rejects_an_off_by_one_p():
    # the check can fail: with 19 draws, p = #{null >= value} / 20 (the +1 forgotten) is rejected, the
    # correct (1 + #{null >= value}) / 20 (besag_clifford) is not
    rng = np.random.default_rng(3)
    obs, null = rng.standard_normal(500), rng.standard_normal((500, 19))
    good = np.array([besag_clifford(o, z, 19, None)[0] for o, z in zip(obs, null)])
    bad = (null >= obs[:, None]).sum(1) / 20
    assert _chi2_uniform(good) > 0.001 and _chi2_uniform(bad) < 0.001


@pytest.mark.parametrize("metric", ALL)
def test_strong_dependence_reaches_small_p(metric):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 5))
    y = np.tanh(x @ rng.standard_normal((5, 6))) + 0.1 * rng.standard_normal((200, 6))
    df = sim.compare({"x": x}, {"y": y}, metrics=[metric], baseline="permutation", progress=False)
    row = df.iloc[0]
    assert row.p_value < 0.001 and row.p_min < 0.001 and row.n_null == 1000
    assert row.calibrated == pytest.approx((row.value - row.baseline_mean) / (1 - row.baseline_mean))


def test_besag_clifford():
    null = np.array([0.1, 0.9, 0.2, 0.8, 0.95])
    assert besag_clifford(0.5, null, 5, stop_after=2) == (2 / 4, 4)
    assert besag_clifford(0.5, null, 5, stop_after=None) == ((1 + 3) / 6, 5)
    assert besag_clifford(0.99, null, 5, stop_after=2) == (1 / 6, 5)


def test_bh_matches_scipy():
    p = np.random.default_rng(0).uniform(size=50) ** 3
    np.testing.assert_allclose(bh_qvalues(p), scipy.stats.false_discovery_control(p, method="bh"), atol=1e-15)
    q = bh_qvalues(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.02) and q[2] == pytest.approx(0.04)


def test_table_q_values_and_attrs():
    rng = np.random.default_rng(0)
    x, y = _pair(rng, 60, signal=0.8)
    df = sim.compare({"a": x, "b": rng.standard_normal((60, 3))}, {"y": y}, metrics=["linear_cka", "svcca"],
                     baseline="permutation", n_permutations=200, progress=False)
    np.testing.assert_allclose(df.q_value, scipy.stats.false_discovery_control(df.p_value, method="bh"))
    assert "permutation" in df.attrs["baseline"] and "4 p-values" in df.attrs["q_family"]


def test_calibrated_and_ceiling():
    assert calibrated(0.6, 0.2) == pytest.approx(0.5)
    s = ceiling_score(0.4, 0.35, 0.45, 0.8, 0.75, 0.85)
    assert s.ratio == pytest.approx(0.5) and s.ci_low < 0.5 < s.ci_high
    with pytest.raises(ValueError, match="ci"):
        ceiling_score(0.4, 0.35, 0.45, 0.8, 0.75, 0.85, ci=95)


def test_bca_matches_scipy():
    rng = np.random.default_rng(0)
    data = rng.exponential(size=80)
    idx = rng.integers(0, 80, (4000, 80))
    boots = data[idx].mean(1)
    jack = np.array([np.delete(data, i).mean() for i in range(80)])
    lo, hi = bca_interval(data.mean(), boots, jack, 0.95)
    ref = scipy.stats.bootstrap((data,), np.mean, n_resamples=4000, method="BCa", random_state=1)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.03)


def test_basic_interval_matches_scipy_and_auto_choice():
    rng = np.random.default_rng(2)
    data = rng.exponential(size=60)
    idx = rng.integers(0, 60, (4000, 60))
    boots = data[idx].mean(1)
    lo, hi = basic_interval(data.mean(), boots, 0.95)
    ref = scipy.stats.bootstrap((data,), np.mean, n_resamples=4000, method="basic", random_state=1)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.03)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.03)
    # auto: basic for the CCA family, BCa for the others
    assert interval("auto", "svcca", data.mean(), boots, boots[:50]) == (lo, hi)
    assert interval("auto", "linear_cka", data.mean(), boots, boots[:50]) == bca_interval(data.mean(), boots,
                                                                                          boots[:50])
    X = np.random.default_rng(0).standard_normal((30, 3))
    with pytest.raises(ValueError, match=r"ci_method: unknown value 'student'; choose one of \['auto'"):
        sim.compare({"x": X}, {"y": X}, ci=0.95, ci_method="student")


def _coverage(metric, draws_, n_bootstrap):
    """Data from a fixed Gaussian model; the truth is the measure on 200,000 draws of it. Returns the share of
    draws whose interval covers the truth (and checks the point estimate lies in every interval)."""
    rng = np.random.default_rng(11)
    d = 5
    Wx, Wy = rng.standard_normal((3, d)), rng.standard_normal((3, d))

    def sample(m):
        z = rng.standard_normal((m, 3))
        return z @ Wx + 0.5 * rng.standard_normal((m, d)), z @ Wy + 0.5 * rng.standard_normal((m, d))

    truth = sim.get_metric(metric)(*sample(200_000))
    fns = {metric: _BUILTIN[metric]}
    hits = 0
    for i in range(draws_):
        x, y = sample(150)
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        value = fns[metric](X, Y)
        st = infer({"x": X}, {"y": Y}, [("x", "y")], plans_for(fns, _BUILTIN), {("x", "y", metric): value},
                   n_permutations=None, n_bootstrap=n_bootstrap, seed=i, progress=False)[("x", "y", metric)]
        assert st.ci_low <= value <= st.ci_high
        hits += st.ci_low <= truth <= st.ci_high
    return hits / draws_


@pytest.mark.parametrize("metric", ["linear_cka", "linear_cka_debiased"])
def test_bootstrap_coverage_fast(metric):
    assert _coverage(metric, 20, 300) >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["linear_cka", "linear_cka_debiased", "svcca"])
def test_bootstrap_coverage(metric):
    assert _coverage(metric, 100, 1000) >= 0.90


def test_difference_test_exact_known_answers():
    from univ.similarity.statistics import difference_test

    d = difference_test([1.0, 2.0, 3.0])  # paired: 8 sign patterns, only all + and all - reach |mean| = 2
    assert d.effect == 2.0 and d.p_value == pytest.approx(2 / 8)
    d = difference_test([5.0, 6.0], [1.0, 2.0])  # 6 relabellings, |diff| >= 4 for the observed and its mirror
    assert d.effect == 4.0 and d.p_value == pytest.approx(2 / 6) and (d.n_a, d.n_b) == (2, 2)
    assert math.isnan(difference_test([1.0], [2.0, 3.0]).p_value)


def test_difference_test_null_uniform_and_interval_covers():
    from univ.similarity.statistics import difference_test

    rng = np.random.default_rng(5)
    ps, cover = [], 0
    for i in range(300):
        a, b = rng.normal(0, 1, 9), rng.normal(0, 1, 9)
        ps.append(difference_test(a, b, n_resamples=2000, seed=i).p_value)
        a2 = rng.normal(1.0, 1, 12)
        r = difference_test(a2, rng.normal(0.0, 1, 12), n_resamples=2000, seed=i)
        cover += r.ci_low <= 1.0 <= r.ci_high
    ps = np.array(ps)
    assert 0.02 <= (ps <= 0.05).mean() <= 0.09 and 0.05 <= (ps <= 0.2).mean() <= 0.3
    assert cover / 300 >= 0.88  # percentile bootstrap of a mean difference at n = 12 per group
    strong = difference_test(rng.normal(3, 1, 9), rng.normal(0, 1, 9))
    assert strong.p_value < 0.001 and strong.ci_low > 1.5


def test_pwcca_bootstrap_groups_resamples_whose_neuron_cut_differs():
    """A neuron active on one input is constant (cut by google's small-variance rule) in some resamples: those
    resamples form their own group, and every value still equals PWCCA on the duplicated rows."""
    from univ.similarity.resampling import PwccaPlan, boot_cell

    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 7, generator=g, dtype=torch.float64)
    X[:, 3] = 0.0
    X[0, 3] = 1.0  # active on one input: constant in the ~36% of resamples that miss it
    Y = torch.cat([X[:, :3] + 0.3 * torch.randn(60, 3, generator=g, dtype=torch.float64),
                   torch.randn(60, 5, generator=g, dtype=torch.float64)], 1)
    plan = PwccaPlan(["pwcca"])
    _, counts, _ = draws(1, 60, n_bootstrap=60)
    sx, sy = plan.prepare(X), plan.prepare(Y)
    assert len(plan.boot_prepare(sx, X, counts)["groups"]) == 2
    cheap = boot_cell(plan, sx, sy, X, Y, counts)["pwcca"]
    naive = [sim.pwcca(X[i], Y[i]) for i in (torch.repeat_interleave(torch.arange(60), c) for c in counts)]
    np.testing.assert_allclose(cheap, naive, rtol=0, atol=1e-10)


@pytest.mark.filterwarnings("ignore:pwcca. the side it weights by")  # the naive calls warn (tested below)
def test_pwcca_null_and_bootstrap_on_a_rank_deficient_side_equal_naive():
    """A side whose kept neurons span fewer directions than it has (e.g. a position-averaged patch embedding)
    makes google's direction matrix singular; the stacked QR path still gives PWCCA draw by draw."""
    from univ.similarity.resampling import PwccaPlan, boot_cell

    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    X = z @ torch.randn(3, 8, generator=g, dtype=torch.float64) + 0.2  # 8 neurons, rank 3
    Y = torch.cat([z + 0.3 * torch.randn(50, 3, generator=g, dtype=torch.float64),
                   torch.randn(50, 9, generator=g, dtype=torch.float64)], 1)
    from univ.similarity.cca import pwcca_side

    # D D^T = u^T C u + n m m^T has rank <= 4 < 8: singular, so google's QR decides
    assert np.linalg.matrix_rank(pwcca_side(X).scatter.numpy()) == 3
    plan = PwccaPlan(["pwcca"])
    sx, sy = plan.prepare(X), plan.prepare(Y)
    perms, counts, jack = draws(5, 50, n_permutations=60, n_bootstrap=40, n_groups=5)
    counts = torch.cat([counts, jack])  # jackknife resamples have fewer rows
    for a, b, sa, sb in ((X, Y, sx, sy), (Y, X, sy, sx)):  # the weighting side permuted, and not
        cheap = plan.null(sa, sb, perms)["pwcca"]
        # stacked products round apart from single ones, and the singular side's epsilon-regularised inverse
        # square root magnifies that (up to 1.2e-8 here; 1e-10 on full-rank sides, test_cheap_null_equals_naive)
        np.testing.assert_allclose(cheap, [sim.pwcca(a, b[p]) for p in perms], rtol=0, atol=1e-6)
    cheap = boot_cell(plan, sx, sy, X, Y, counts)["pwcca"]
    naive = [sim.pwcca(X[i], Y[i]) for i in (torch.repeat_interleave(torch.arange(50), c) for c in counts)]
    # the resamples' moments come from weights, not duplicated rows: rounding apart, magnified as above
    np.testing.assert_allclose(cheap, naive, rtol=0, atol=1e-6)


def test_pwcca_warns_when_its_weighting_side_is_rank_deficient():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    X = z @ torch.randn(3, 8, generator=g, dtype=torch.float64) + 0.2  # 8 neurons, rank 3
    Y = torch.randn(50, 12, generator=g, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match=r"^pwcca: the side it weights by \(8 kept neurons\) is rank-deficient"):
        sim.pwcca(X, Y)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.pwcca(torch.randn(50, 8, generator=g, dtype=torch.float64), Y)  # full rank: no warning


def test_pwcca_bounded_null_keeps_the_exact_p_value_and_the_null_mean_of_its_full_draws():
    """After min_draws draws, PWCCA's null settles a draw by its largest canonical correlation (PWCCA is at
    most that) where it lies below the observed value: the p-value and the draws used equal the naive loop's
    over every draw, the null mean is that of the first draws computed in full, and a draw near the observed
    value is still computed in full."""
    from univ.similarity.resampling import PwccaPlan
    from univ.similarity.statistics import _null

    full_draws = 100  # min_draws: the draws computed in full

    rng = np.random.default_rng(7)
    n, total = 60, full_draws + 150
    x = rng.standard_normal((n, 4))
    y = np.concatenate([x[:, :3] + 0.5 * rng.standard_normal((n, 3)), rng.standard_normal((n, 2))], 1)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    perms, _, _ = draws(11, n, n_permutations=total)
    plan = PwccaPlan(["pwcca"])
    sx, sy = plan.prepare(X), plan.prepare(Y)
    naive = np.array([sim.pwcca(X, Y[p]) for p in perms])
    top = np.array([np.linalg.svd(plan_arr, compute_uv=False).max() for plan_arr in
                    [_whitened_cross(sx, sy, p) for p in perms[full_draws:]]])
    for theta in (sim.pwcca(X, Y), float(np.quantile(naive, 0.97))):  # p near p_min, and p ~ 0.03
        got = _null(plan, sx, sy, ("a", "b"), {"pwcca": theta}, perms, None, full_draws)["a", "b", "pwcca"]
        p, used = besag_clifford(theta, naive, total, None)
        assert got["p_value"] == pytest.approx(p, abs=1e-15) and got["n_null"] == total
        assert got["baseline_mean"] == pytest.approx(naive[:full_draws].mean(), abs=1e-10)
    # the bound decided most later draws for the observed value, and not all for the 97% quantile
    assert (top < sim.pwcca(X, Y)).mean() > 0.9 and (top >= np.quantile(naive, 0.97)).any()
    vals = plan.null(sx, sy, perms[full_draws:], below={"pwcca": float(np.quantile(naive, 0.97))})["pwcca"]
    full = np.isfinite(vals)
    np.testing.assert_allclose(vals[full], naive[full_draws:][full], rtol=0, atol=1e-10)
    assert (naive[full_draws:][~full] < np.quantile(naive, 0.97)).all() and full.any() and (~full).any()
    # settled exactly where the bound lies below the threshold
    np.testing.assert_array_equal(~full, top < np.quantile(naive, 0.97))


def _whitened_cross(sx, sy, p):
    a, b = sx["side"], sy["side"]
    if int(a.keep.sum()) > int(b.keep.sum()):
        a, b = b, a
    n = a.centered.shape[0]
    return (a.centered @ a.inv_sqrt).numpy().T @ ((b.centered @ b.inv_sqrt).numpy() / (n - 1))[p.numpy()]

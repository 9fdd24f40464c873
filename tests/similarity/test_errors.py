"""Bad input raises ValueError (or warns) with a message naming the argument and the problem."""

import warnings

import numpy as np
import pytest

from univ import similarity as sim

rng = np.random.default_rng(0)
X = rng.standard_normal((30, 4))
Y = rng.standard_normal((30, 5))
ALL = sorted(sim.METRICS)


@pytest.mark.parametrize("name", ALL)
def test_mismatched_n(name):
    with pytest.raises(ValueError, match="same number of samples"):
        sim.get_metric(name)(X, Y[:-1])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(name, bad):
    Xb = X.copy()
    Xb[3, 1] = bad
    with pytest.raises(ValueError, match=r"X: contains 1 NaN/Inf"):
        sim.get_metric(name)(Xb, Y)
    with pytest.raises(ValueError, match=r"Y: contains 1 NaN/Inf"):
        sim.get_metric(name)(X, np.where(Y == Y[0, 0], bad, Y))


@pytest.mark.parametrize("name", ALL)
def test_one_dimensional(name):
    with pytest.raises(ValueError, match="X: expected a 2-D array"):
        sim.get_metric(name)(X[:, 0], Y)


@pytest.mark.parametrize("name,n_min", [("linear_cka", 2), ("linear_cka_debiased", 4), ("rbf_cka_debiased", 4),
                                        ("cca", 3), ("svcca", 3), ("rsa", 3)])
def test_too_few_samples(name, n_min):
    with pytest.raises(ValueError, match=f"needs at least {n_min} samples"):
        sim.get_metric(name)(X[: n_min - 1], Y[: n_min - 1])


def test_k_too_large():
    with pytest.raises(ValueError, match="k: must be an integer with 1 <= k < n = 30"):
        sim.mutual_knn(X, Y, k=30)
    assert 0 <= sim.mutual_knn(X, Y, k=29) <= 1


@pytest.mark.parametrize("fn", [sim.cca, sim.pwcca])
def test_cca_degenerate_raises(fn):
    wide = rng.standard_normal((30, 29))
    with pytest.raises(ValueError, match="degenerate.*Theorem 1"):
        fn(wide, Y)


def test_cca_partial_degeneracy_warns():
    with pytest.warns(RuntimeWarning, match="by construction"):
        sim.cca(rng.standard_normal((30, 20)), rng.standard_normal((30, 20)))


def test_svcca_warns_after_reduction():
    wide = rng.standard_normal((20, 100))  # d > n: the kept directions fill the sample space
    with pytest.warns(RuntimeWarning, match="svcca: degenerate"):
        v = sim.svcca(wide, rng.standard_normal((20, 100)))
    assert v == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim.svcca(X, Y)


def test_constant_input():
    with pytest.raises(ValueError, match="X: has zero variance.*linear CKA is undefined"):
        sim.linear_cka(np.ones((10, 3)), Y[:10])
    with pytest.raises(ValueError, match="X: has zero variance"):
        sim.procrustes(np.ones((10, 3)), Y[:10])


def test_argument_checks():
    with pytest.raises(ValueError, match="threshold: must be > 0"):
        sim.rbf_cka(X, Y, threshold=0)
    with pytest.raises(ValueError, match="variance_kept"):
        sim.svcca(X, Y, variance_kept=1.5)
    with pytest.raises(ValueError, match="kernel: unknown value 'poly'"):
        sim.minibatch_cka(X, Y, kernel="poly")
    with pytest.raises(ValueError, match="batch_size: must be >= 4"):
        sim.minibatch_cka(X, Y, batch_size=3)
    with pytest.raises(ValueError, match="distance: unknown value"):
        sim.rsa(X, Y, distance="manhattan")
    with pytest.raises(ValueError, match="X: expected a numpy array or torch tensor"):
        sim.linear_cka("abc", Y)


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown metric 'linear_ck'.*linear_cka"):
        sim.compare({"a": X}, {"b": Y}, metrics=["linear_ck"])

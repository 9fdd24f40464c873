"""StreamingSimilarity: linear CKA (biased, debiased), CCA, SVCCA and Procrustes from streamed moments equal the
in-memory functions on the concatenated rows, on several kinds of data and batchings."""

import warnings

import numpy as np
import pytest
import torch

from univ import similarity as sim
from univ.similarity.cca import cca_from_scatter, svcca_from_scatter

N = 700


def _kinds():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N, 12)) + 50.0  # a large mean: centring from moments must not cancel
    yield "offsets", X, np.tanh(X @ rng.standard_normal((12, 30)) / 5) + 0.3 * rng.standard_normal((N, 30)) - 40.0
    yield "widths", rng.standard_normal((N, 3)), rng.standard_normal((N, 3)) @ rng.standard_normal((3, 60)) \
        + rng.standard_normal((N, 60))
    Z = rng.standard_normal((N, 4))  # rank 4 of 15 and rank 7 of 9: CCA keeps the numerical rank
    yield "low_rank", Z @ rng.standard_normal((4, 15)), \
        np.hstack([Z, rng.standard_normal((N, 3))]) @ rng.standard_normal((7, 9))
    S = rng.standard_normal((N, 8)) * np.array([1e2, 1, 1, 1, 1, 1, 1, 1e-1])  # condition number 1e3
    yield "scales", S, S[:, :5] @ rng.standard_normal((5, 6)) + rng.standard_normal((N, 6))
    yield "identical", X, X


KINDS = {name: (X, Y) for name, X, Y in _kinds()}
CUTS = {"one": [0, N], "uneven": [0, 1, 5, 100, 333, 699, N], "even": list(range(0, N + 1, 100))}
IN_MEMORY = {
    "linear_cka": sim.linear_cka,
    "linear_cka_debiased": lambda X, Y: sim.linear_cka(X, Y, debiased=True),
    "cca": lambda X, Y: sim.cca(X, Y).mean,
    "cca_r2": lambda X, Y: sim.cca(X, Y).r2,
    "svcca": sim.svcca,
    "procrustes": sim.procrustes,
}


def _stream(X, Y, cuts, **kw):
    s = sim.StreamingSimilarity(**kw)
    for a, b in zip(cuts[:-1], cuts[1:]):
        s.update(X[a:b], torch.from_numpy(Y[a:b]))
    return s


@pytest.mark.parametrize("cuts", sorted(CUTS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_streamed_measures_equal_in_memory(kind, cuts):
    X, Y = KINDS[kind]
    s = _stream(X, Y, CUTS[cuts])
    assert s.n_ == N
    assert set(IN_MEMORY) == set(sim.STREAMABLE)
    for metric, fn in IN_MEMORY.items():
        assert abs(s.measure(metric) - fn(X, Y)) <= 1e-10, metric
    rho, ref = s.cca().rho, sim.cca(X, Y).rho
    assert rho.shape == ref.shape  # all min(r1, r2) correlations, the same numerical ranks
    assert np.abs(rho - ref).max() <= 1e-10


@pytest.mark.parametrize("v", [0.5, 0.9, 0.999, 1.0])
def test_svcca_variance_kept(v):
    X, Y = KINDS["widths"]
    assert abs(_stream(X, Y, CUTS["uneven"]).svcca(v) - sim.svcca(X, Y, variance_kept=v)) <= 1e-10


def test_batch_order_and_scale_do_not_matter():
    X, Y = KINDS["offsets"]
    base = _stream(X, Y, CUTS["even"])
    perm = np.random.default_rng(0).permutation(N)
    other = _stream(X[perm] * 2.0**300, Y[perm] * 2.0**-300, CUTS["uneven"])
    for m in sim.STREAMABLE:
        assert abs(other.measure(m) - base.measure(m)) <= 1e-10, m


def test_float32_batches_match_the_same_float32_data_in_memory():
    X, Y = (torch.from_numpy(a).float() for a in KINDS["widths"])
    s = sim.StreamingSimilarity()
    for i in range(0, N, 64):
        s.update(X[i:i + 64], Y[i:i + 64])
    for metric, fn in IN_MEMORY.items():
        assert abs(s.measure(metric) - fn(X, Y)) <= 1e-10, metric


def test_scatter_functions_match_cca_and_svcca():
    X, Y = KINDS["low_rank"]
    m = _stream(X, Y, CUTS["even"]).moments()
    assert m.n == N and m.cxx.shape == (15, 15) and m.cyy.shape == (9, 9) and m.cxy.shape == (15, 9)
    assert abs(cca_from_scatter(m.cxx, m.cyy, m.cxy, N).mean - sim.cca(X, Y).mean) <= 1e-10
    assert abs(svcca_from_scatter(m.cxx, m.cyy, m.cxy, N) - sim.svcca(X, Y)) <= 1e-10
    with pytest.raises(ValueError, match=r"Cxy: expected shape \(15, 9\)"):
        cca_from_scatter(m.cxx, m.cyy, m.cxy.T, N)
    with pytest.raises(ValueError, match="Cxx: expected a square"):
        cca_from_scatter(m.cxy, m.cyy, m.cxy, N)
    with pytest.raises(TypeError, match="n: must be an integer"):
        svcca_from_scatter(m.cxx, m.cyy, m.cxy, 700.0)


def test_ill_conditioned_cca_cuts_what_the_covariance_cannot_resolve():
    # column scales 1e5 .. 1e-5: the scatter's eigenvalues span 1e20, beyond float64, so the smallest
    # direction falls under the covariance rank cut (documented in cca_from_scatter); in-memory CCA's QR
    # still resolves it. The moment-only measures are unaffected.
    rng = np.random.default_rng(3)
    S = rng.standard_normal((N, 8)) * np.array([1e5, 1, 1, 1, 1, 1, 1, 1e-5])
    Y = S[:, :5] @ rng.standard_normal((5, 6)) + rng.standard_normal((N, 6))
    s = _stream(S, Y, CUTS["even"])
    assert np.abs(s.cca().rho - sim.cca(S[:, :7], Y).rho).max() <= 1e-5
    for metric in ("linear_cka", "linear_cka_debiased", "svcca", "procrustes"):
        assert abs(s.measure(metric) - IN_MEMORY[metric](S, Y)) <= 1e-10, metric


def test_streaming_linear_cka_is_the_same_accumulator():
    X, Y = KINDS["offsets"]
    for debiased in (False, True):
        s = sim.StreamingLinearCKA(debiased=debiased)
        for a, b in zip(CUTS["uneven"][:-1], CUTS["uneven"][1:]):
            s.update(X[a:b], Y[a:b])
        assert s.value() == _stream(X, Y, CUTS["uneven"]).linear_cka(debiased)


def test_errors_name_the_side_and_the_problem():
    X, Y = KINDS["widths"]
    s = sim.StreamingSimilarity().update(X[:10], Y[:10])
    with pytest.raises(ValueError, match="yb: expected 60 features as in earlier batches, got 5"):
        s.update(X[10:], Y[10:, :5])
    assert s.n_ == 10  # a refused batch changes nothing
    const = sim.StreamingSimilarity().update(np.ones((5, 3)), Y[:5]).update(np.ones((5, 3)), Y[5:10])
    for m in sim.STREAMABLE:
        with pytest.raises(ValueError, match="xb: has zero variance"):
            const.measure(m)
    with pytest.raises(ValueError, match="degenerate input"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sim.StreamingSimilarity().update(X[:50], Y[:50]).cca()  # 60 features, 50 samples
    with pytest.raises(ValueError, match="needs at least 4 samples in total for linear CKA"):
        sim.StreamingSimilarity().update(X[:3], Y[:3]).linear_cka(debiased=True)

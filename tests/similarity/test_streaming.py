"""Exact streaming CKA and the minibatch (Nguyen et al. 2021) estimator."""

import numpy as np
import pytest
import torch

from univ import similarity as sim


def data(seed=0, n=600, d1=20, d2=150, offset=50.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1)) + offset  # a large mean: centring from moments must not cancel
    Y = np.tanh(X @ rng.standard_normal((d1, d2))) + 0.3 * rng.standard_normal((n, d2)) - offset
    return X, Y


@pytest.mark.parametrize("debiased", [False, True])
def test_streaming_equals_in_memory_uneven_batches(debiased):
    X, Y = data()
    s = sim.StreamingLinearCKA(debiased=debiased)
    cuts = [0, 1, 8, 9, 200, 333, 599, 600]
    for a, b in zip(cuts[:-1], cuts[1:]):
        s.update(X[a:b], torch.from_numpy(Y[a:b]))
    assert s.n_ == 600
    assert s.value() == pytest.approx(sim.linear_cka(X, Y, debiased=debiased), abs=1e-10)


def test_streaming_validates():
    s = sim.StreamingLinearCKA(debiased=True)
    X, Y = data(n=10)
    s.update(X[:3], Y[:3])
    with pytest.raises(ValueError, match="at least 4"):
        s.value()
    with pytest.raises(ValueError, match="xb: expected 20 features"):
        s.update(X[3:, :5], Y[3:])
    with pytest.raises(ValueError, match="same number of samples"):
        s.update(X[3:], Y[4:])


def test_minibatch_single_batch_is_debiased_cka():
    X, Y = data(n=300)
    assert sim.minibatch_cka(X, Y, batch_size=300) == pytest.approx(sim.linear_cka(X, Y, debiased=True),
                                                                    abs=1e-12)
    assert sim.minibatch_cka(X, Y, batch_size=300, kernel="rbf") == pytest.approx(
        sim.rbf_cka(X, Y, debiased=True), abs=1e-12)


def test_minibatch_converges_to_debiased_full_value():
    errs = {8: [], 40: [], 200: []}
    for seed in range(3):
        X, Y = data(seed, n=1000, d1=10, d2=30)
        full = sim.linear_cka(X, Y, debiased=True)
        for bs in errs:
            perm = np.random.default_rng(seed).permutation(1000)
            errs[bs].append(abs(sim.minibatch_cka(X[perm], Y[perm], batch_size=bs) - full))
    e = {bs: np.mean(v) for bs, v in errs.items()}
    assert e[200] < e[40] < e[8]
    assert e[200] < 0.01


def test_minibatch_iterable_matches_arrays():
    X, Y = data(n=100)
    batches = [(X[i:i + 25], Y[i:i + 25]) for i in range(0, 100, 25)]
    assert sim.minibatch_cka(batches) == pytest.approx(sim.minibatch_cka(X, Y, batch_size=25), abs=1e-14)


def test_minibatch_unbiased_hsic_is_not_biased_by_batch_size():
    # the biased per-batch estimator of torch_cka drifts upward on small batches; the unbiased one
    # must not: independent data stays near 0 even with batches of 8
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(4000, 30, generator=g), torch.randn(4000, 30, generator=g)
    assert abs(sim.minibatch_cka(X, Y, batch_size=8)) < 0.05


def test_blocked_gram_helpers_match_plain_products():
    from univ.similarity._core import gram, sym_fro2

    X = torch.randn(50, 200, dtype=torch.float64)
    G = X.T @ X
    assert torch.allclose(gram(X), G, rtol=0, atol=1e-10)
    assert float(sym_fro2(X)) == pytest.approx(float((G * G).sum()), rel=1e-12)

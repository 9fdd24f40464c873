"""Numerical safety: exact invariance to the scale of either side (2^-900 .. 2^900), tiny but valid
inputs, truly constant inputs, and PWCCA that does not depend on the thread count."""

import math
import warnings

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from univ import similarity as sim

rng = np.random.default_rng(5)
X = rng.standard_normal((40, 6)) * rng.uniform(0.5, 2, 6)
Y = X[:, [0, 1, 2, 3]] @ rng.standard_normal((4, 5)) + rng.standard_normal((40, 5))


def _streaming(X, Y, debiased=False):
    s = sim.StreamingLinearCKA(debiased=debiased)
    for i in range(0, X.shape[0], 16):
        s.update(X[i:i + 16], Y[i:i + 16])
    return s.value()


# every metric in METRICS, procrustes_distance, and the other scale-invariant public measures
MEASURES = {name: sim.get_metric(name) for name in sim.METRICS}
MEASURES.update({
    "procrustes_distance": sim.procrustes_distance,
    "procrustes_distance_euclidean": lambda X, Y: sim.procrustes_distance(X, Y, kind="euclidean"),
    "linear_cka_mixed": lambda X, Y: sim.linear_cka(X, Y, precision="mixed"),
    "linear_cka_mixed_debiased": lambda X, Y: sim.linear_cka(X, Y, debiased=True, precision="mixed"),
    "rsa_euclidean_pearson": lambda X, Y: sim.rsa(X, Y, distance="euclidean", method="pearson"),
    "rsa_cosine": lambda X, Y: sim.rsa(X, Y, distance="cosine"),
    "mutual_knn_centered": lambda X, Y: sim.mutual_knn(X, Y, k=5, center=True),
    "mutual_knn_normalized": lambda X, Y: sim.mutual_knn(X, Y, k=5, normalize=True),
    "minibatch_cka": lambda X, Y: sim.minibatch_cka(X, Y, batch_size=16),
    "minibatch_cka_batches": lambda X, Y: sim.minibatch_cka([(X[:20], Y[:20]), (X[20:], Y[20:])]),
    "minibatch_cka_rbf": lambda X, Y: sim.minibatch_cka(X, Y, batch_size=16, kernel="rbf"),
    "streaming_cka": _streaming,
    "streaming_cka_debiased": lambda X, Y: _streaming(X, Y, True),
})
SCALES = [-900, -300, -30, 0, 30, 300, 900]


@pytest.mark.parametrize("s", SCALES)
@pytest.mark.parametrize("name", sorted(MEASURES))
def test_scale_invariance_exact(name, s):
    fn = MEASURES[name]
    base = fn(X, Y)
    for t in SCALES:  # both sides at 2^s and at 2^t, including the same scale
        got = fn(X * 2.0**s, Y * 2.0**t)
        tol = 1e-12 * (abs(base) if "distance" in name else 1.0)
        assert abs(got - base) <= tol, (s, t, got, base)


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_cka_scale_invariance_exact(debiased):
    Kx, Ky = X @ X.T, np.exp(-((Y[:, None] - Y[None]) ** 2).sum(-1) / 10)  # gram_cka takes Grams: scale those
    base = sim.gram_cka(Kx, Ky, debiased)
    for s in SCALES:
        for t in SCALES:
            assert abs(sim.gram_cka(Kx * 2.0**s, Ky * 2.0**t, debiased) - base) <= 1e-12, (s, t)
    with pytest.raises(ValueError, match="^Kx: has zero variance"):
        sim.gram_cka(np.full((40, 40), 3.0), Ky)
    with pytest.raises(ValueError, match="^Ky: has zero variance"):
        sim.gram_cka(Kx, np.zeros((40, 40)))


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_tiny_but_valid_inputs_work(name):
    fn = MEASURES[name]
    base = fn(X, Y)
    tol = 1e-6 if "mixed" in name else 1e-12  # float32 products see the rounding of the decimal scaling
    assert fn(X * 1e-300, Y * 1e-305) == pytest.approx(base, rel=tol, abs=tol)
    assert fn(X * 1e300, Y * 1e305) == pytest.approx(base, rel=tol, abs=tol)
    # small variation on a large offset is not "zero variance" (translation-invariant measures only
    # give the same value, so just ask for a finite one)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = fn(1e200 + X * 1e190, Y)
    assert math.isfinite(v)


def test_one_differing_row_is_not_constant():
    Xc = np.ones((40, 6))
    Xc[7, 2] = 1 + 2**-50
    assert math.isfinite(sim.linear_cka(Xc, Y))
    assert math.isfinite(sim.procrustes(Xc, Y))


CONSTANTS = {"zeros": np.zeros((40, 6)), "tenth": np.full((40, 6), 0.1), "huge": np.full((40, 6), -1e300),
             "rows_equal": np.tile(X[:1], (40, 1))}


@pytest.mark.parametrize("kind", sorted(CONSTANTS))
@pytest.mark.parametrize("name", sorted(MEASURES))
def test_constant_input_raises_naming_the_argument(name, kind):
    fn, C = MEASURES[name], CONSTANTS[kind]
    batches = "streaming" in name or name == "minibatch_cka_batches"  # then named after update's xb, yb
    with pytest.raises(ValueError, match="^xb: has zero variance" if batches else "^X: has zero variance"):
        fn(C, Y)
    with pytest.raises(ValueError, match="^yb: has zero variance" if batches else "^Y: has zero variance"):
        fn(X, C[:, :5])


# --- PWCCA does not depend on the number of BLAS / torch threads ------------------------------------


def _mlp_activations(seed: int, n: int = 500, widths=(64, 128)):
    """ReLU activations of a small random MLP on random inputs; the last eighth of each layer's
    columns are near-collinear copies of the first (as duplicated or redundant neurons are)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 32, generator=g)
    out = []
    for w in widths:
        h = torch.relu(h @ (torch.randn(h.shape[1], w, generator=g) / h.shape[1] ** 0.5)
                       + 0.1 * torch.randn(w, generator=g))
        a = h.clone()
        k = w // 8
        a[:, -k:] = 1.5 * a[:, :k] + 1e-6 * torch.randn(n, k, generator=g)
        out.append(a)
    return out


def _pwcca_with_threads(pairs, threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            return [sim.pwcca(a, b) for a, b in pairs]
    finally:
        torch.set_num_threads(before)


def test_pwcca_same_for_one_and_two_threads():
    A, B = _mlp_activations(1), _mlp_activations(2)
    shared = torch.cat([A[1][:, :64], B[1][:, :40]], 1)  # 64 canonical correlations equal to 1
    pairs = [(A[0], B[0]), (A[1], B[1]), (A[0], B[1]), (A[1], shared)]
    one, two = _pwcca_with_threads(pairs, 1), _pwcca_with_threads(pairs, 2)
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-12


def test_pwcca_null_and_bootstrap_draws_same_for_one_and_two_threads():
    """The batched PWCCA draws (torch GEMMs and triangular solves on numpy memory) do not depend on the thread
    count: a p-value or interval bound is reproducible."""
    from univ.similarity.resampling import PwccaPlan, boot_cell
    from univ.similarity.statistics import draws

    A, B = _mlp_activations(1), _mlp_activations(2)
    X, Y = A[1][:200].double(), B[0][:200].double()
    perms, counts, _ = draws(0, 200, n_permutations=60, n_bootstrap=40)
    plan = PwccaPlan(["pwcca"])
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(threads):
                sx, sy = plan.prepare(X), plan.prepare(Y)
                out.append((plan.null(sx, sy, perms)["pwcca"], boot_cell(plan, sx, sy, X, Y, counts)["pwcca"]))
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])

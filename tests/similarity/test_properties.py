"""Hypothesis property tests: symmetry, invariances exactly where each metric claims them, bounds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from univ import similarity as sim

SETTINGS = settings(max_examples=8, deadline=None)


def pair(seed: int, n: int, d1: int, d2: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1)) * rng.uniform(0.5, 3, d1)
    Y = X[:, rng.integers(0, d1, d2)] @ np.diag(rng.uniform(0.5, 2, d2)) + rng.standard_normal((n, d2))
    return X, Y


def orthogonal(seed: int, d: int):
    q, r = np.linalg.qr(np.random.default_rng(seed + 1).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def transform(X, seed, kind):
    rng = np.random.default_rng(seed + 2)
    if kind == "orthogonal":
        return X @ orthogonal(seed, X.shape[1])
    if kind == "scale":
        return X * rng.uniform(0.1, 10)
    return X + rng.normal(0, 5, X.shape[1])  # translation


def f(name, **kw):
    return lambda X, Y: sim.get_metric(name)(X, Y, **kw)


# metric -> the transformations it claims invariance to (applied to one side)
CLAIMS = {
    "linear_cka": ("orthogonal", "scale", "translation"),
    "linear_cka_debiased": ("orthogonal", "scale", "translation"),
    "rbf_cka": ("orthogonal", "scale", "translation"),
    "rbf_cka_debiased": ("orthogonal", "scale", "translation"),
    "cca": ("orthogonal", "scale", "translation"),
    "cca_r2": ("orthogonal", "scale", "translation"),
    "svcca": ("orthogonal", "scale", "translation"),
    "pwcca": ("scale",),
    "procrustes": ("orthogonal", "scale", "translation"),
    "rsa": ("scale",),
    "mutual_knn": ("orthogonal", "scale"),
}
SYMMETRIC = [m for m in CLAIMS if m != "pwcca"]
EXTRA = {  # variants with different claims
    "rsa_euclidean": (lambda X, Y: sim.rsa(X, Y, distance="euclidean"), ("orthogonal", "scale", "translation")),
    "mutual_knn_centered": (lambda X, Y: sim.mutual_knn(X, Y, k=5, center=True),
                            ("orthogonal", "scale", "translation")),
}
CASES = [(m, sim.get_metric(m), c) for m, c in CLAIMS.items()] + [(m, fn, c) for m, (fn, c) in EXTRA.items()]
shapes = st.tuples(st.integers(0, 10**6), st.integers(16, 40), st.integers(3, 6), st.integers(3, 6))


@pytest.mark.parametrize("name", SYMMETRIC)
@SETTINGS
@given(shapes)
def test_symmetric(name, s):
    X, Y = pair(*s)
    fn = sim.get_metric(name)
    assert fn(X, Y) == pytest.approx(fn(Y, X), abs=1e-9)


@pytest.mark.parametrize("name,fn,claims", CASES, ids=[c[0] for c in CASES])
@SETTINGS
@given(shapes)
def test_invariances(name, fn, claims, s):
    X, Y = pair(*s)
    base = fn(X, Y)
    for kind in claims:
        assert fn(transform(X, s[0], kind), Y) == pytest.approx(base, abs=1e-8), kind


@pytest.mark.parametrize("name,fn,claims", CASES, ids=[c[0] for c in CASES])
@SETTINGS
@given(shapes)
def test_bounds(name, fn, claims, s):
    X, Y = pair(*s)
    v = fn(X, Y)
    lo = -1.0 if name.startswith("rsa") else (-0.5 if "debiased" in name else 0.0)
    assert lo - 1e-12 <= v <= 1 + 1e-12


def test_mutual_knn_raw_not_translation_invariant():
    X, Y = pair(0, 60, 4, 4)
    Xt = X + 10.0
    assert sim.mutual_knn(Xt, Y, k=5) != sim.mutual_knn(X, Y, k=5)
    assert sim.mutual_knn(Xt, Y, k=5, center=True) == sim.mutual_knn(X, Y, k=5, center=True)


def test_pwcca_not_rotation_invariant():
    X, Y = pair(1, 60, 4, 4)
    assert abs(sim.pwcca(X @ orthogonal(1, 4), Y) - sim.pwcca(X, Y)) > 1e-6


def test_cca_invariant_to_invertible_map_but_cka_is_not():
    X, Y = pair(2, 80, 5, 5)
    A = np.random.default_rng(9).standard_normal((5, 5))
    assert sim.cca(X @ A, Y).mean == pytest.approx(sim.cca(X, Y).mean, abs=1e-9)
    assert abs(sim.linear_cka(X @ A, Y) - sim.linear_cka(X, Y)) > 1e-4


@SETTINGS
@given(st.integers(0, 10**6))
def test_procrustes_distance_consistent(seed):
    X, Y = pair(seed, 30, 4, 3)
    s = sim.procrustes(X, Y)
    assert np.cos(sim.procrustes_distance(X, Y)) == pytest.approx(s, abs=1e-12)
    assert sim.procrustes_distance(X, Y, kind="euclidean") == pytest.approx(np.sqrt(2 - 2 * s), abs=1e-12)
    # Euclidean Procrustes distance is the residual of the best orthogonal alignment
    Xh, Yh = X - X.mean(0), Y - Y.mean(0)
    Xh, Yh = Xh / np.linalg.norm(Xh), np.pad(Yh / np.linalg.norm(Yh), ((0, 0), (0, 1)))
    u, _, vt = np.linalg.svd(Yh.T @ Xh)
    assert np.linalg.norm(Xh - Yh @ (u @ vt)) == pytest.approx(np.sqrt(2 - 2 * s), abs=1e-9)

"""Standard names: property tests generated from each measure's declaration, reference values, round trips."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from univ.similarity import measure, names

PARAMS = {"sigma": 3.0, "dim": 3, "topk": 5, "alpha": 0.5, "folds": 4, "ridge": 2.0}
N, D = 40, 12


def call(name, X, Y):
    m = measure(name)
    return m(X, Y, **{k: PARAMS[k] for k in m.needs})


def _orth(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


TRANSFORMS = {
    "orthogonal": lambda Y, rng: Y @ _orth(rng, Y.shape[1]),
    "isotropic_scaling": lambda Y, rng: Y * 3.7,
    "translation": lambda Y, rng: Y + rng.standard_normal(Y.shape[1]) * 2,
    "invertible_linear": lambda Y, rng: Y @ (_orth(rng, Y.shape[1]) @ np.diag(rng.uniform(0.5, 2, Y.shape[1]))),
    "permutation": lambda Y, rng: Y[:, rng.permutation(Y.shape[1])],
}


def pair(seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)) @ rng.standard_normal((D, D))
    return rng, X, X + 0.7 * rng.standard_normal((N, D))


FAST = settings(max_examples=3, deadline=None, derandomize=True,  # the same examples in every run (CI)
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", names())
@FAST
@given(seed=st.integers(0, 2**16))
def test_declared_properties_hold(name, seed):
    rng, X, Y = pair(seed)
    props = measure(name).properties
    v = call(name, X, Y)
    lo, hi = props.bounds
    assert lo - 1e-9 <= v <= hi + 1e-9, (name, v, props.bounds)
    if props.symmetric:
        assert math.isclose(call(name, Y, X), v, rel_tol=1e-7, abs_tol=1e-9), name
    for inv in props.invariances:
        w = call(name, X, TRANSFORMS[inv](Y, rng))
        assert math.isclose(w, v, rel_tol=1e-6, abs_tol=1e-8), (name, inv, v, w)
        if not props.symmetric:  # a declared invariance holds for either argument
            w = call(name, TRANSFORMS[inv](X, rng), Y)
            assert math.isclose(w, v, rel_tol=1e-6, abs_tol=1e-8), (name, inv, "X", v, w)


@pytest.mark.parametrize("name", ["cka-kernel=linear-hsic=gretton-score", "procrustes-score", "cosine",
                                  "rsa-rdm=correlation-compare=pearson", "ridge-lambda=1-r2-cv=5folds",
                                  "linear_regression-pearsonr-cv=5folds", "permutation_metric-score",
                                  "hard_correlation_match", "soft_correlation_match", "jaccard_similarity",
                                  "cknna-topk=5", "cycle_knn-topk=5", "permutation_procrustes"])
def test_undeclared_invariance_is_really_absent(name):
    # the declarations are not vacuous: a transformation a measure does not declare does change it
    rng, X, Y = pair(1)
    props = measure(name).properties
    v = call(name, X, Y)
    absent = [inv for inv in TRANSFORMS if inv not in props.invariances]
    assert absent and any(not math.isclose(call(name, X, TRANSFORMS[i](Y, rng)), v, rel_tol=1e-6) for i in absent)


REFERENCE = {  # similarity_public.json key -> standard name
    "linear_cka": "cka-kernel=linear-hsic=gretton-score",
    "debiased_linear_cka": "cka-kernel=linear-hsic=song-score",
    "svcca_mean_rho_var99": "svcca-var=0.99-score",
    "pwcca": "pwcca-score",
    "mean_cca_rho": "cca-score",
    "r2_cca_mean_squared_rho": "cca-squared_score",
    "mutual_knn_k10": "mutual_knn-topk=10",
}


def test_reference_values():
    ref = json.loads((Path(__file__).parent / "similarity_public.json").read_text())["values"]
    rng = np.random.default_rng
    X = rng(0).standard_normal((500, 64))
    Y = X + 0.5 * rng(3).standard_normal((500, 64))
    for key, name in REFERENCE.items():
        # platonic-rep's mutual kNN returns float32: compare it at float32 resolution
        tol = 1e-7 if key.startswith("mutual") else 1e-8
        assert abs(measure(name)(X, Y) - ref[key]["value"]) < tol, (key, name)


def test_names_round_trip():
    listed = names()
    assert len(listed) == len(set(listed)) > 80
    for name in listed:
        m = measure(name)
        assert m.name == name
        assert set(m.needs) <= set(PARAMS)


def test_placeholder_equals_concrete_value():
    _, X, Y = pair(0)
    for template, value in [("cka-kernel=(rbf-sigma={sigma})-hsic=song-score", "sigma=3.0"),
                            ("svcca-dim={dim}-squared_score", "dim=3"), ("mutual_knn-topk={topk}", "topk=5"),
                            ("shape_metric-alpha={alpha}-distance=angular", "alpha=0.5")]:
        key = value.split("=")[0]
        concrete = template.replace("{" + key + "}", value.split("=")[1])
        assert call(template, X, Y) == measure(concrete)(X, Y)


def test_shape_metric_endpoints():
    _, X, Y = pair(2)
    assert math.isclose(measure("shape_metric-alpha=1-score")(X, Y), measure("procrustes-score")(X, Y), rel_tol=1e-12)
    assert math.isclose(measure("shape_metric-alpha=0-score")(X, Y), measure("cca-score")(X, Y), rel_tol=1e-6)


def test_euclidean_form_is_size_and_shape_distance():
    _, X, Y = pair(3)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    nuc = np.linalg.svd(Xc.T @ Yc, compute_uv=False).sum()
    want = math.sqrt((Xc**2).sum() + (Yc**2).sum() - 2 * nuc)
    assert math.isclose(measure("procrustes-distance=euclidean")(X, Y), want, rel_tol=1e-10)
    assert math.isclose(measure("bures_distance")(X, Y), want, rel_tol=1e-10)


def test_errors():
    with pytest.raises(ValueError, match="closest valid names.*cka-kernel=linear-hsic=gretton-score"):
        measure("cka-kernel=linear-hsic=gretton-scor")
    with pytest.raises(TypeError, match="name"):
        measure(3)
    with pytest.raises(ValueError, match="sigma"):
        measure("cka-kernel=(rbf-sigma=0)-hsic=gretton-score")
    with pytest.raises(ValueError, match="var"):
        measure("svcca-var=1.5-score")
    with pytest.raises(TypeError, match="sigma"):
        measure("cka-kernel=(rbf-sigma={sigma})-hsic=gretton-score")(np.eye(5), np.eye(5))
    with pytest.raises(TypeError, match="unexpected"):
        measure("cca-score")(np.eye(5), np.eye(5), sigma=1.0)

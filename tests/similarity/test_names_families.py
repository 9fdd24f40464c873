"""The measure families behind the standard names, against independent reference computations (scikit-learn,
dense numpy transcriptions of the peers' definitions, brute force), the Euclidean forms' norms, and the
bad-input table of every standard name."""

import math

import numpy as np
import pytest
from named_errors import assert_named_error, with_nan
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from univ.similarity import measure, names
from univ.similarity.matching import soft_correlation_match
from univ.similarity.neighbours import cknna, cycle_knn, jaccard_knn
from univ.similarity.predictivity import kfold, regression_predictivity

rng = np.random.default_rng(7)
X = rng.standard_normal((60, 9)) @ rng.standard_normal((9, 9))
Y = X @ rng.standard_normal((9, 7)) + 0.8 * rng.standard_normal((60, 7))


# ---------------------------------------------------------------------------------------------------
# regression predictivity: scikit-learn's KFold + Ridge / LinearRegression + per-column scores


def _sklearn_cv(X, Y, folds, ridge, score):
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold

    P = np.zeros_like(Y)
    for tr, te in KFold(folds, shuffle=False).split(X):
        model = Ridge(alpha=ridge) if ridge else LinearRegression()
        P[te] = model.fit(X[tr], Y[tr]).predict(X[te])
    if score == "r2":
        return r2_score(Y, P, multioutput="raw_values").mean()
    r = np.array([np.corrcoef(Y[:, j], P[:, j])[0, 1] for j in range(Y.shape[1])])
    return (r if score == "pearsonr" else r**2).mean()


@pytest.mark.parametrize("score", ["r2", "pearsonr", "pearsonr2"])
@pytest.mark.parametrize("ridge", [0.0, 1.0, 30.0])
@pytest.mark.parametrize("folds", [2, 5, 7])
def test_regression_matches_sklearn(score, ridge, folds):
    want = _sklearn_cv(X, Y, folds, ridge, score)
    assert regression_predictivity(X, Y, folds=folds, ridge=ridge, score=score) == pytest.approx(want, abs=1e-10)
    rev = _sklearn_cv(Y, X, folds, ridge, score)
    assert regression_predictivity(X, Y, folds=folds, ridge=ridge, score=score, reverse=True) == pytest.approx(
        rev, abs=1e-10)


def test_regression_names_route_to_the_right_computation():
    assert measure("ridge-lambda=1-r2-cv=5folds")(X, Y) == pytest.approx(_sklearn_cv(X, Y, 5, 1.0, "r2"), abs=1e-10)
    assert measure("linear_regression-pearsonr-cv=5folds-reverse")(X, Y) == pytest.approx(
        _sklearn_cv(Y, X, 5, 0.0, "pearsonr"), abs=1e-10)
    m = measure("ridge-lambda={ridge}-pearsonr2-cv={folds}folds")
    assert m(X, Y, ridge=4.0, folds=3) == pytest.approx(_sklearn_cv(X, Y, 3, 4.0, "pearsonr2"), abs=1e-10)


def test_ridge_wide_inputs_use_the_dual_and_agree():
    W = rng.standard_normal((30, 80))
    assert regression_predictivity(W, Y[:30], folds=3, ridge=2.0) == pytest.approx(
        _sklearn_cv(W, Y[:30], 3, 2.0, "r2"), abs=1e-9)


def test_kfold_is_sklearns_unshuffled_kfold():
    from sklearn.model_selection import KFold

    for n, k in [(10, 3), (11, 5), (12, 12)]:
        ours = [(tr.tolist(), te.tolist()) for tr, te in kfold(n, k)]
        assert ours == [(tr.tolist(), te.tolist()) for tr, te in KFold(k).split(np.zeros(n))]


def test_in_sample_regression_is_resis_variance_weighted_r2():
    # ReSi's linear_reg(R, Rp) projects R onto Rp's span: univ's measure(X, Y) scores Y from X
    from sklearn.linear_model import LinearRegression

    P = LinearRegression().fit(X, Y).predict(X)
    want = 1 - ((Y - P) ** 2).sum() / ((Y - Y.mean(0)) ** 2).sum()
    assert measure("linear_regression")(X, Y) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("A,B,lam", [(X, Y, 1.0), (rng.standard_normal((20, 50)), rng.standard_normal((20, 3)), 2.0)])
def test_in_sample_ridge_is_brain_language_nlps(A, B, lam):
    # brain_language_nlp: W = inv(X^T X + lambda I) X^T Y (kernel_ridge: its dual), no intercept, mean R^2
    W = np.linalg.inv(A.T @ A + lam * np.eye(A.shape[1])) @ A.T @ B
    want = np.mean(1 - np.mean((B - A @ W) ** 2, 0) / np.var(B, 0))
    assert measure(f"ridge-lambda={lam:g}-r2")(A, B) == pytest.approx(want, abs=1e-10)
    assert measure("ridge-lambda={ridge}-r2")(A, B, ridge=lam) == pytest.approx(want, abs=1e-10)
    assert measure(f"kernel_ridge-lambda={lam:g}-r2")(A, B) == pytest.approx(want, abs=1e-10)


def test_exact_linear_map_is_perfectly_predicted():
    Z = X @ rng.standard_normal((9, 4)) + 3.0
    assert measure("linear_regression-r2-cv=5folds")(X, Z) == pytest.approx(1.0, abs=1e-10)
    assert measure("linear_regression")(X, Z) == pytest.approx(1.0, abs=1e-12)
    assert measure("ridge-lambda=1-r2-cv=5folds")(X, Z) < 1.0  # the penalty shrinks the fit


# ---------------------------------------------------------------------------------------------------
# nearest neighbours


def _knn_sets(A, k, cosine=False):
    S = A @ A.T
    if cosine:
        nrm = np.linalg.norm(A, axis=1)
        S = S / np.outer(nrm, nrm)
    np.fill_diagonal(S, -np.inf)
    return np.argsort(-S, axis=1, kind="stable")[:, :k]


def test_jaccard_matches_sklearn_cosine_neighbours():
    from sklearn.neighbors import NearestNeighbors

    def sets(A):
        idx = NearestNeighbors(n_neighbors=11, metric="cosine").fit(A).kneighbors(A)[1][:, 1:]
        return [set(r) for r in idx]
    want = np.mean([len(a & b) / len(a | b) for a, b in zip(sets(X), sets(Y))])
    assert jaccard_knn(X, Y, k=10) == pytest.approx(want, abs=1e-12)
    assert measure("jaccard_similarity")(X, Y) == pytest.approx(want, abs=1e-12)
    centred = np.mean([len(a & b) / len(a | b) for a, b in zip(sets(X - X.mean(0)), sets(Y - Y.mean(0)))])
    assert jaccard_knn(X, Y, k=10, center=True) == pytest.approx(centred, abs=1e-12)  # llm_repsim's variant


def test_cycle_knn_brute_force():
    for k in (1, 3, 8):
        a, b = _knn_sets(X, k), _knn_sets(Y, k)
        want = np.mean([i in set(a[b[i]].ravel()) for i in range(len(X))])
        assert cycle_knn(X, Y, k=k) == pytest.approx(want, abs=1e-12)


def _hsic_unbiased(K, L):  # platonic-rep's hsic_unbiased, dense, float64
    m = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    v = (Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((m - 1) * (m - 2)) - 2 * (Kt @ Lt).sum() / (m - 2)
    return v / (m * (m - 3))


def _cknna_dense(A, B, k):
    K, L = A @ A.T, B @ B.T

    def mask(M):
        out = np.zeros_like(M)
        np.put_along_axis(out, _knn_sets_from(M, k), 1.0, axis=1)
        return out
    mk, ml = mask(K), mask(L)
    both = mk * ml
    return _hsic_unbiased(both * K, both * L) / math.sqrt(_hsic_unbiased(mk * K, mk * K) * _hsic_unbiased(ml * L,
                                                                                                          ml * L))


def _knn_sets_from(M, k):
    M = M.copy()
    np.fill_diagonal(M, -np.inf)
    return np.argsort(-M, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("k", [2, 5, 20])
def test_cknna_matches_dense_transcription(k):
    assert cknna(X, Y, k=k) == pytest.approx(_cknna_dense(X, Y, k), rel=1e-10)
    assert cknna(Y, X, k=k) == pytest.approx(_cknna_dense(Y, X, k), rel=1e-10)


def test_cknna_with_every_neighbour_is_song_cka_of_raw_gram():
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    want = _hsic_unbiased(K, L) / math.sqrt(_hsic_unbiased(K, K) * _hsic_unbiased(L, L))
    assert cknna(X, Y, k=n - 1) == pytest.approx(want, rel=1e-10)


# ---------------------------------------------------------------------------------------------------
# unit matching


def test_permutation_metric_recovers_a_shuffled_copy():
    perm = rng.permutation(9)
    Z = 2.5 * X[:, perm] + 1.0
    assert measure("permutation_metric-score")(X, Z) == pytest.approx(1.0, abs=1e-12)
    assert measure("hard_correlation_match")(X, Z) == pytest.approx(1.0, abs=1e-12)
    assert measure("soft_correlation_match")(X, Z) == pytest.approx(1.0, abs=1e-12)
    assert measure("permutation_procrustes")(X, X[:, perm]) == pytest.approx(0.0, abs=1e-9)


def test_permutation_metric_euclidean_is_the_aligned_residual():
    Xc, Yc = X - X.mean(0), np.pad(Y - Y.mean(0), ((0, 0), (0, 2)))
    r, c = linear_sum_assignment(Xc.T @ Yc, maximize=True)
    want = np.linalg.norm(Xc[:, r] - Yc[:, c])
    assert measure("permutation_metric-distance=euclidean")(X, Y) == pytest.approx(want, rel=1e-12)


def test_permutation_procrustes_is_resis_padded_residual():
    A, B = np.pad(X, ((0, 0), (0, 0))), np.pad(Y, ((0, 0), (0, 2)))  # ReSi zero-pads the narrower side
    r, c = linear_sum_assignment(A.T @ B, maximize=True)
    assert measure("permutation_procrustes")(X, Y) == pytest.approx(np.linalg.norm(A[:, r] - B[:, c]), rel=1e-12)
    assert measure("permutation_procrustes")(Y, X) == pytest.approx(np.linalg.norm(A[:, r] - B[:, c]), rel=1e-12)


def test_soft_matching_equals_hungarian_on_replicated_units():
    # marginals 1/d1 and 1/d2: replicating each X unit d2/g times and each Y unit d1/g times turns the transport
    # problem into an assignment problem of lcm(d1, d2) units, whose optimum is a permutation (Birkhoff)
    A, B = X[:, :4], Y[:, :6]
    C = np.corrcoef(A.T, B.T)[:4, 4:]
    big = np.repeat(np.repeat(C, 3, axis=0), 2, axis=1)  # (12, 12)
    r, c = linear_sum_assignment(big, maximize=True)
    assert soft_correlation_match(A, B) == pytest.approx(big[r, c].mean(), abs=1e-9)
    assert soft_correlation_match(B, A) == pytest.approx(big[r, c].mean(), abs=1e-9)
    assert soft_correlation_match(A, B) >= measure("hard_correlation_match")(A, B) * 4 / 6 - 1e-12


def test_hard_correlation_match_is_mean_matched_correlation():
    C = np.corrcoef(X.T, Y.T)[:9, 9:]
    r, c = linear_sum_assignment(C, maximize=True)
    assert measure("hard_correlation_match")(X, Y) == pytest.approx(C[r, c].mean(), abs=1e-12)


# ---------------------------------------------------------------------------------------------------
# the Euclidean forms use the norms of what each family compares


def _sqrt_kernel(A, sigma):  # the repository's sqrt_rbf_kernel: a feature map of the centred kernel
    K = np.exp(-cdist(A, A) ** 2 / (2 * sigma**2))
    H = np.eye(len(A)) - 1 / len(A)
    w, V = np.linalg.eigh(H @ K @ H)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


@pytest.mark.parametrize("hsic", ["gretton", "song", "lange"])
def test_rbf_cka_euclidean_form_uses_kernel_norms(hsic):
    sigma = 4.0
    base = f"cka-kernel=(rbf-sigma={sigma})-hsic={hsic}"
    s = measure(f"{base}-score")(X, Y)
    nx, ny = (np.linalg.norm(_sqrt_kernel(A, sigma)) for A in (X, Y))
    want = math.sqrt(nx**2 + ny**2 - 2 * nx * ny * s)
    assert measure(f"{base}-distance=euclidean")(X, Y) == pytest.approx(want, rel=1e-10)
    assert measure(f"{base}-distance=squared_euclidean")(X, Y) == pytest.approx(want**2, rel=1e-10)


@pytest.mark.parametrize("family,n_comp", [("svcca-dim=4", 4), ("svcca-var=0.95", 0.95)])
def test_svcca_euclidean_form_uses_pca_reduced_norms(family, n_comp):
    from sklearn.decomposition import PCA

    s = measure(f"{family}-score")(X, Y)
    nx, ny = (np.linalg.norm(PCA(n_components=n_comp).fit_transform(A)) for A in (X, Y))
    want = math.sqrt(nx**2 + ny**2 - 2 * nx * ny * s)
    assert measure(f"{family}-distance=euclidean")(X, Y) == pytest.approx(want, rel=1e-10)


def test_conventions_are_in_the_docstrings():
    assert "platonic-rep" in measure("svcca-dim={dim}-score").__doc__
    assert "sim_metric" in measure("pwcca-distance=one_minus_score").__doc__
    assert "Khosla" in measure("soft_correlation_match").__doc__
    assert "reverse" in measure("linear_regression-r2-cv=5folds").__doc__
    assert "PCA-reduced" in measure("svcca-var=0.99-distance=euclidean").__doc__
    assert "ReSi" in measure("linear_regression").__doc__
    assert "DeepDive" in measure("linear_regression-r2-cv=5folds").__doc__
    assert "llm_repsim" in measure("jaccard_similarity").__doc__


# ---------------------------------------------------------------------------------------------------
# bad input: one named, one-line ValueError for every standard name

ARGS = {"sigma": 3.0, "dim": 3, "topk": 5, "alpha": 0.5, "folds": 4, "ridge": 2.0}


def _call(name, A, B):
    m = measure(name)
    return m(A, B, **{k: ARGS[k] for k in m.needs})


@pytest.mark.parametrize("name", names())
def test_every_name_refuses_nan_and_mismatched_n(name):
    assert_named_error(lambda: _call(name, with_nan(X), Y), ValueError, r"^X: contains 1 NaN/Inf")
    assert_named_error(lambda: _call(name, X, with_nan(Y)), ValueError, r"^Y: contains 1 NaN/Inf")
    assert_named_error(lambda: _call(name, X, Y[:-1]), ValueError, "X and Y must have the same number of samples")


@pytest.mark.parametrize("name,kw,fragment", [
    ("ridge-lambda={ridge}-r2-cv=5folds", {"ridge": -1.0}, r"ridge \(the penalty lambda\) must be >= 0, got -1.0"),
    ("ridge-lambda={ridge}-r2-cv=5folds", {"ridge": math.nan}, "ridge must be finite"),
    ("linear_regression-r2-cv={folds}folds", {"folds": 1}, "folds must be an integer >= 2, got 1"),
    ("linear_regression-r2-cv={folds}folds", {"folds": 2.5}, "folds must be an integer >= 2, got 2.5"),
    ("linear_regression-r2-cv={folds}folds", {"folds": 61}, r"folds: must be <= n = 60"),
    ("cknna-topk={topk}", {"topk": 1}, "k: CKNNA needs k >= 2"),
    ("cycle_knn-topk={topk}", {"topk": 0}, "topk must be an integer >= 1, got 0"),
    ("cycle_knn-topk={topk}", {"topk": 60}, r"k: must be an integer with 1 <= k < n = 60"),
    ("cka-kernel=(rbf-sigma={sigma})-hsic=gretton-distance=euclidean", {"sigma": -2.0}, "sigma must be positive"),
])
def test_bad_parameters(name, kw, fragment):
    assert_named_error(lambda: measure(name)(X, Y, **kw), ValueError, fragment)


@pytest.mark.parametrize("name", ["ridge-lambda=-1-r2-cv=5folds", "linear_regression-r2-cv=1folds",
                                  "ridge-lambda=1-r3-cv=5folds", "cknna-topk=x", "jaccard_similarity-topk=3"])
def test_bad_names(name):
    assert_named_error(lambda: measure(name), ValueError, name.split("-")[0])


@pytest.mark.parametrize("name", ["hard_correlation_match", "soft_correlation_match"])
def test_constant_unit_is_named(name):
    Z = Y.copy()
    Z[:, 2] = 1.0
    assert_named_error(lambda: measure(name)(X, Z), ValueError, r"^Y: unit \(column\) 2 is constant")


def test_zero_row_for_cosine_neighbours_is_named():
    Z = Y.copy()
    Z[4] = 0.0
    assert_named_error(lambda: measure("jaccard_similarity")(X, Z), ValueError, "^Y: row 4 is all zero")

"""Bad input raises ValueError (or warns) with a message naming the argument and the problem."""

import math
import re
import warnings

import numpy as np
import pytest
import torch
from named_errors import BAD_MATRICES as COMMON_BAD_MATRICES
from named_errors import assert_named_error, with_inf

import univ.report
from univ import similarity as sim


def _inf(a):
    return with_inf(a, sign=-1.0)

rng = np.random.default_rng(0)
X = rng.standard_normal((30, 4))
Y = rng.standard_normal((30, 5))
ALL = sorted(sim.METRICS)


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


def test_unknown_metric_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown metric 'linear_ck'.*linear_cka"):
        sim.compare({"a": X}, {"b": Y}, metrics=["linear_ck"])


# --- one table: (public function, bad input, expected exception, message fragment) -----------------

K = X @ X.T  # a (30, 30) Gram
TWO_MATRICES = {  # public functions of two sample matrices: name -> (call, first and second argument names)
    "linear_cka": (sim.linear_cka, "X", "Y"),
    "linear_cka_mixed": (lambda A, B: sim.linear_cka(A, B, debiased=True, precision="mixed"), "X", "Y"),
    "rbf_cka": (sim.rbf_cka, "X", "Y"),
    "cca": (sim.cca, "X", "Y"),
    "svcca": (sim.svcca, "X", "Y"),
    "pwcca": (sim.pwcca, "X", "Y"),
    "pwcca_from_sides": (lambda A, B: sim.pwcca_from_sides(sim.pwcca_side(A), sim.pwcca_side(B, name="Y")),
                         "X", "Y"),
    "procrustes": (sim.procrustes, "X", "Y"),
    "procrustes_distance": (sim.procrustes_distance, "X", "Y"),
    "rsa": (sim.rsa, "X", "Y"),
    "mutual_knn": (lambda A, B: sim.mutual_knn(A, B, k=3), "X", "Y"),
    "moment_measures": (lambda A, B: sim.moment_measures(sim.layer_moments(A), sim.layer_moments(B, name="Y")),
                        "X", "Y"),
    "minibatch_cka": (lambda A, B: sim.minibatch_cka(A, B, batch_size=10), "X", "Y"),
    "StreamingLinearCKA": (lambda A, B: sim.StreamingLinearCKA().update(A, B).value(), "xb", "yb"),
    "StreamingSimilarity": (lambda A, B: sim.StreamingSimilarity().update(A, B).procrustes(), "xb", "yb"),
    "compare": (lambda A, B: sim.compare({"a": A}, {"b": B}), "acts_a['a']", "acts_b['b']"),
    "compare_grid": (lambda A, B: sim.compare_grid({"m": {"a": A}, "k": {"b": B}}, [("m", "k")], baseline=None,
                                                   ci=None), "acts['m']['a']", "acts['k']['b']"),
}
ONE_MATRIX = {"rbf_gram": (sim.rbf_gram, "X"), "knn_indices": (lambda A: sim.knn_indices(A, 3), "X"),
              "pwcca_side": (sim.pwcca_side, "X"), "span_basis": (sim.span_basis, "X"),
              "principal_basis": (sim.principal_basis, "X"), "layer_moments": (sim.layer_moments, "X")}
GRAMS = {"gram_cka": (sim.gram_cka, "Kx", "Ky"), "center_gram": (lambda A, B: sim.center_gram(A), "K", None)}




BAD_MATRICES = COMMON_BAD_MATRICES + [  # and this package's own
    ("ragged", lambda A: [[1.0, 2.0], [3.0]], ValueError, "could not convert to a numeric array"),
    ("not_an_array", lambda A: "abc", ValueError, "expected a numpy array or torch tensor"),
    ("none", lambda A: None, ValueError, "expected a numpy array or torch tensor"),
    ("constant", lambda A: np.full(A.shape, 0.1), ValueError, "has zero variance"),
    ("constant_columns_only", lambda A: np.tile(A[:1], (A.shape[0], 1)), ValueError, "has zero variance"),
]
CONSTANT_OK = {"knn_indices", "center_gram"}  # all neighbours tie / a constant Gram centres to 0: defined
CASES = []
for fname, (fn, a, b) in {**TWO_MATRICES, **GRAMS}.items():
    base = K if fname in GRAMS else X
    other = K if fname in GRAMS else Y
    for bid, make, exc, frag in BAD_MATRICES:
        if "constant" in bid and fname in CONSTANT_OK:
            continue
        names = (a, b) if fname not in ("compare", "compare_grid") or "constant" not in bid else (
            f"{a} (X) and {b} (Y): X", f"{a} (X) and {b} (Y): Y")  # a metric's X, Y in compare
        CASES.append((f"{fname}-{a}-{bid}", lambda fn=fn, make=make, base=base, other=other: fn(make(base), other),
                      exc, f"{re.escape(names[0])}: {frag}"))
        if b is not None and bid != "ndim3" and not (fname == "minibatch_cka" and bid == "none"):  # Y=None: batches
            CASES.append((f"{fname}-{b}-{bid}", lambda fn=fn, make=make, base=base, other=other: fn(other, make(base)),
                          exc, f"{re.escape(names[1])}: {frag}"))
    if b is not None:
        CASES.append((f"{fname}-mismatched_n", lambda fn=fn, base=base, other=other: fn(base, other[:-1]),
                      ValueError, "same number of samples"))
for fname, (fn, a) in ONE_MATRIX.items():
    for bid, make, exc, frag in BAD_MATRICES:
        if "constant" in bid and fname in CONSTANT_OK:
            continue
        CASES.append((f"{fname}-{bid}", lambda fn=fn, make=make: fn(make(X)), exc, f"{a}: {frag}"))

df = sim.compare({"a": X}, {"b": Y})
PARAMETERS = [  # (id, call, exception, message fragment)
    ("linear_cka-precision", lambda: sim.linear_cka(X, Y, precision="half"), ValueError, "precision: unknown value"),
    ("linear_cka-device", lambda: sim.linear_cka(X, Y, device="nowhere"), ValueError, "device: cannot move X"),
    ("rbf_cka-threshold0", lambda: sim.rbf_cka(X, Y, threshold=0), ValueError, "threshold: must be > 0"),
    ("rbf_cka-threshold-neg", lambda: sim.rbf_cka(X, Y, threshold=-1.0), ValueError, "threshold: must be > 0"),
    ("rbf_cka-threshold-nan", lambda: sim.rbf_cka(X, Y, threshold=np.nan), ValueError, "threshold: must be > 0"),
    ("rbf_cka-threshold-str", lambda: sim.rbf_cka(X, Y, threshold="0.5"), TypeError, "threshold: must be a real"),
    ("rbf_cka-threshold-huge", lambda: sim.rbf_cka(X, Y, threshold=1e200), ValueError, "threshold: .* too extreme"),
    ("rbf_gram-threshold", lambda: sim.rbf_gram(X, threshold=0), ValueError, "threshold: must be > 0"),
    ("gram_cka-not-square", lambda: sim.gram_cka(X, Y), ValueError, "Kx: expected a square"),
    ("center_gram-not-square", lambda: sim.center_gram(X), ValueError, "K: expected a square"),
    ("center_gram-unbiased-n2", lambda: sim.center_gram(np.eye(2), True), ValueError, "K: needs at least 3"),
    ("svcca-var0", lambda: sim.svcca(X, Y, variance_kept=0), ValueError, r"variance_kept: must be in \(0, 1\]"),
    ("svcca-var1.5", lambda: sim.svcca(X, Y, variance_kept=1.5), ValueError, r"variance_kept: must be in \(0, 1\]"),
    ("svcca-var-str", lambda: sim.svcca(X, Y, variance_kept="all"), TypeError, "variance_kept: must be a real"),
    ("cca-degenerate", lambda: sim.cca(rng.standard_normal((30, 29)), Y), ValueError, "degenerate input"),
    ("pwcca-eps-neg", lambda: sim.pwcca(X, Y, epsilon=-1e-10), ValueError, "epsilon: must be >= 0"),
    ("pwcca-eps1", lambda: sim.pwcca(X, Y, epsilon=1), ValueError, "epsilon: must be < 1"),
    ("pwcca_side-eps", lambda: sim.pwcca_side(X, epsilon=2.0), ValueError, "epsilon: must be < 1"),
    ("pwcca_from_sides-type", lambda: sim.pwcca_from_sides(X, Y), TypeError, "sx: expected a PWCCASide"),
    ("pwcca_from_sides-n", lambda: sim.pwcca_from_sides(sim.pwcca_side(X), sim.pwcca_side(Y[:20])), ValueError,
     "sx and sy must have the same number of samples"),
    ("procrustes_distance-kind", lambda: sim.procrustes_distance(X, Y, kind="cosine"), ValueError,
     "kind: unknown value"),
    ("rsa-distance", lambda: sim.rsa(X, Y, distance="manhattan"), ValueError, "distance: unknown value"),
    ("rsa-method", lambda: sim.rsa(X, Y, method="kendall"), ValueError, "method: unknown value"),
    ("rsa-cosine-zero-row", lambda: sim.rsa(np.vstack([X[:-1], 0 * X[:1]]), Y, distance="cosine"), ValueError,
     r"X: cosine distance is undefined for an all-zero sample \(row 29\)"),
    ("mutual_knn-k0", lambda: sim.mutual_knn(X, Y, k=0), ValueError, "k: must be an integer with 1 <= k < n = 30"),
    ("mutual_knn-k-n", lambda: sim.mutual_knn(X, Y, k=30), ValueError, "k: must be an integer with 1 <= k < n"),
    ("mutual_knn-k-float", lambda: sim.mutual_knn(X, Y, k=2.5), TypeError, "k: must be an integer"),
    ("mutual_knn-k-str", lambda: sim.mutual_knn(X, Y, k="3"), TypeError, "k: must be an integer"),
    ("mutual_knn-k-bool", lambda: sim.mutual_knn(X, Y, k=True), TypeError, "k: must be an integer"),
    ("knn_indices-k", lambda: sim.knn_indices(X, 0), ValueError, "k: must be an integer with 1 <= k"),
    ("knn_indices-chunk", lambda: sim.knn_indices(X, 3, chunk=0), ValueError, "chunk: must be >= 1"),
    ("minibatch-kernel", lambda: sim.minibatch_cka(X, Y, kernel="poly"), ValueError, "kernel: unknown value 'poly'"),
    ("minibatch-batch_size", lambda: sim.minibatch_cka(X, Y, batch_size=3), ValueError, "batch_size: must be >= 4"),
    ("minibatch-batch_size-float", lambda: sim.minibatch_cka(X, Y, batch_size=8.5), TypeError,
     "batch_size: must be an integer"),
    ("minibatch-threshold", lambda: sim.minibatch_cka(X, Y, threshold=0), ValueError, "threshold: must be > 0"),
    ("minibatch-not-iterable", lambda: sim.minibatch_cka(5), TypeError, "batches_or_X: expected an iterable"),
    ("minibatch-not-pairs", lambda: sim.minibatch_cka([X, Y]), TypeError, "batches_or_X: each batch must be"),
    ("minibatch-no-batch", lambda: sim.minibatch_cka([]), ValueError, "batches_or_X: no batch"),
    ("streaming-too-few", lambda: sim.StreamingLinearCKA().value(), ValueError, "needs at least 2 samples"),
    ("streaming-width", lambda: sim.StreamingLinearCKA().update(X[:5], Y[:5]).update(X[5:, :2], Y[5:]),
     ValueError, "xb: expected 4 features"),
    ("compare-metric", lambda: sim.compare({"a": X}, {"b": Y}, metrics=["linear_ck"]), ValueError,
     r"unknown metric 'linear_ck'.*linear_cka"),
    ("compare-acts", lambda: sim.compare([X], {"b": Y}), ValueError, "acts_a: expected a non-empty dict"),
    ("compare-baseline", lambda: sim.compare({"a": X}, {"b": Y}, baseline="shuffle"), ValueError, "baseline:"),
    ("compare-ci", lambda: sim.compare({"a": X}, {"b": Y}, ci=95), ValueError, r"ci: must be a confidence level"),
    ("compare-ci-str", lambda: sim.compare({"a": X}, {"b": Y}, ci="0.95"), ValueError, "ci: must be"),
    ("compare-n_permutations", lambda: sim.compare({"a": X}, {"b": Y}, baseline="permutation", n_permutations=0),
     ValueError, "n_permutations: must be >= 1"),
    ("compare-n_permutations-float", lambda: sim.compare({"a": X}, {"b": Y}, baseline="permutation",
                                                         n_permutations=9.5), TypeError, "n_permutations: must be an"),
    ("compare-n_bootstrap", lambda: sim.compare({"a": X}, {"b": Y}, ci=0.9, n_bootstrap=-1), ValueError,
     "n_bootstrap: must be >= 1"),
    ("compare-pairs", lambda: sim.compare({"a": X}, {"b": Y}, pairs="diagonal"), ValueError, "pairs: unknown value"),
    ("compare-sizes", lambda: sim.compare({"a": X}, {"b": Y, "c": Y[:20]}), ValueError, "same number of samples"),
    ("grid-df", lambda: sim.grid("table", "linear_cka"), ValueError, "df: expected compare"),
    ("grid-metric", lambda: sim.grid(df, "svcca"), ValueError, "unknown metric 'svcca'"),
    ("grid-value", lambda: sim.grid(df, "linear_cka", value="p"), ValueError, "df: expected .* 'p'"),
    ("register_metric-taken", lambda: sim.register_metric("svcca", sim.linear_cka), ValueError,
     "a metric named 'svcca' is already registered"),
    ("register_metric-name", lambda: sim.register_metric("", sim.linear_cka), ValueError, "non-empty string name"),
    ("grid_figure-metric", lambda: univ.report.grid_figure(df, "pwcca"), ValueError, "unknown metric 'pwcca'"),
    ("StreamingSimilarity-var", lambda: sim.StreamingSimilarity().update(X, Y).svcca(0), ValueError,
     r"variance_kept: must be in \(0, 1\]"),
    ("StreamingSimilarity-cca-too-few", lambda: sim.StreamingSimilarity().update(X[:2], Y[:2]).cca(), ValueError,
     "needs at least 3 samples in total for CCA"),
    ("StreamingSimilarity-measure", lambda: sim.StreamingSimilarity().update(X, Y).measure("rsa"), ValueError,
     r"metrics: \['rsa'\] cannot be computed from streamed statistics.*streamable metrics: \['linear_cka'"),
    ("StreamingSimilarity-measure-unknown", lambda: sim.StreamingSimilarity().update(X, Y).measure("cka"),
     ValueError, "unknown metric 'cka'"),
    ("compare_stores-type", lambda: sim.compare_stores({"a": X}, {"b": Y}), TypeError,
     "store_a: expected an ActivationStore"),
    ("get_metric-name", lambda: sim.get_metric("cka"), ValueError, "unknown metric 'cka'"),
    ("get_metric-type", lambda: sim.get_metric(["cka"]), TypeError, "metric: expected a metric name"),
]
PARAMETERS += [
    ("measure-name", lambda: sim.measure("cka-kernel=linear-hsic=gretton-scor"), ValueError, "closest valid names"),
    ("measure-type", lambda: sim.measure(3), TypeError, "name: expected a standard measure name"),
    ("names-args", lambda: sim.names(1), TypeError, "positional argument"),
    ("StandardMeasure-placeholder", lambda: sim.measure("svcca-dim={dim}-score")(np.eye(4), np.eye(4)),
     TypeError, "dim"),
]
CASES += PARAMETERS


@pytest.mark.parametrize("call,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(call, exc, fragment):
    assert_named_error(call, exc, fragment)


def test_every_public_function_is_in_the_table():
    covered = set(TWO_MATRICES) | set(ONE_MATRIX) | set(GRAMS) | {c[0].split("-")[0] for c in PARAMETERS}
    results = ("CCAResult", "PWCCASide", "LayerMoments", "ScatterMoments")  # result types, not functions of inputs
    public = {n for n in sim.__all__ if callable(getattr(sim, n)) and n not in results}
    assert public - covered - {"METRICS"} == set()


PAIR_METRICS = sorted(sim.METRICS) + ["procrustes_distance"]


def _metric(name):
    if name == "rsa":  # correlation distance is undefined for a row whose features are all equal
        return lambda A, B: sim.rsa(A, B, distance="euclidean")
    return sim.procrustes_distance if name == "procrustes_distance" else sim.get_metric(name)


@pytest.mark.parametrize("name", PAIR_METRICS)
def test_int_and_bool_inputs_are_converted(name):
    Xi = np.round(X * 3).astype(np.int64)
    for A, B in ((Xi, Y), (X, Y > 0), (torch.from_numpy(Xi).to(torch.int16), torch.from_numpy(Y > 0)),
                 (Xi.astype(np.uint32) + 7, Y.astype(np.float16))):
        assert math.isfinite(_metric(name)(A, B))


@pytest.mark.parametrize("name", PAIR_METRICS)
def test_rank_deficient_inputs_give_finite_values(name):
    low = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 5))  # rank 2 of 5
    dup = np.repeat(X[:, :1], 4, axis=1)  # one direction, four copies
    dead = np.c_[Y[:, :3], np.zeros((30, 2))]  # dead neurons
    scales = X * np.array([1e200, 1.0, 1e-200, 1.0])  # columns 400 orders of magnitude apart
    for A, B in ((low, Y), (dup, Y), (X, dead), (scales, Y)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v = _metric(name)(A, B)
        assert math.isfinite(v) and -1 - 1e-12 <= v <= 2


def test_numpy_integers_accepted_for_int_parameters():
    assert sim.mutual_knn(X, Y, k=np.int64(5)) == sim.mutual_knn(X, Y, k=5)
    assert torch.equal(sim.knn_indices(X, np.int32(3), chunk=np.int64(8)), sim.knn_indices(X, 3, chunk=8))
    assert sim.minibatch_cka(X, Y, batch_size=np.int64(10)) == sim.minibatch_cka(X, Y, batch_size=10)
    t = sim.compare({"a": X}, {"b": Y}, baseline="permutation", n_permutations=np.int64(3), ci=np.float64(0.9),
                    n_bootstrap=np.uint8(3))
    assert t["p_value"].notna().all() and t["ci_low"].notna().all()

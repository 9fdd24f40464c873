"""Known answers: Kornblith et al.'s CKA demo and the reference implementations' values."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from univ import similarity as sim

# the project's shared reference values; a copy travels with the tests so a checkout without
# ../shared (e.g. a CI clone) still checks them
SHARED_REF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "similarity_public.json"
REF = SHARED_REF if SHARED_REF.exists() else Path(__file__).with_name("similarity_public.json")


@pytest.fixture(scope="module")
def demo():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def test_kornblith_demo_values(demo):
    X, Y = demo
    assert round(sim.linear_cka(X, Y), 5) == 0.55761
    assert round(sim.rbf_cka(X, Y, threshold=0.5), 5) == 0.65483
    assert round(sim.linear_cka(X, Y, debiased=True), 5) == 0.51346


@pytest.fixture(scope="module")
def ref_pair():
    rng = np.random.default_rng
    X = rng(0).standard_normal((500, 64))
    Y = X + 0.5 * rng(3).standard_normal((500, 64))
    return X, Y


CALLS = {
    "linear_cka": lambda X, Y: sim.linear_cka(X, Y),
    "rbf_cka_sigma0.8median": lambda X, Y: sim.rbf_cka(X, Y, threshold=0.8),
    "debiased_linear_cka": lambda X, Y: sim.linear_cka(X, Y, debiased=True),
    "debiased_rbf_cka_sigma0.8median": lambda X, Y: sim.rbf_cka(X, Y, threshold=0.8, debiased=True),
    "svcca_mean_rho_var99": lambda X, Y: sim.svcca(X, Y, variance_kept=0.99),
    "pwcca": lambda X, Y: sim.pwcca(X, Y),
    "mean_cca_rho": lambda X, Y: sim.cca(X, Y).mean,
    "r2_cca_mean_squared_rho": lambda X, Y: sim.cca(X, Y).r2,
    "mutual_knn_k10": lambda X, Y: sim.mutual_knn(X, Y, k=10),
    "mutual_knn_k10_l2norm": lambda X, Y: sim.mutual_knn(X, Y, k=10, normalize=True),
}


@pytest.mark.parametrize("key", sorted(CALLS))
def test_reference_values(key, ref_pair):
    want = json.loads(REF.read_text())["values"][key]["value"]
    got = CALLS[key](*ref_pair)
    assert abs(got - want) <= (1e-3 if key.startswith("mutual_knn") else 1e-6)


def test_reference_keys_all_covered():
    assert set(json.loads(REF.read_text())["values"]) == set(CALLS)


@pytest.mark.skipif(not SHARED_REF.exists(), reason="no ../shared checkout to compare the copy with")
def test_reference_copy_matches_shared():
    copy = Path(__file__).with_name("similarity_public.json")
    assert json.loads(copy.read_text()) == json.loads(SHARED_REF.read_text())


def test_identity_gives_one(ref_pair):
    X = ref_pair[0][:200, :16]
    for name in ["linear_cka", "linear_cka_debiased", "rbf_cka", "rbf_cka_debiased", "cca", "cca_r2",
                 "svcca", "pwcca", "procrustes", "rsa", "mutual_knn"]:
        assert sim.get_metric(name)(X, X) == pytest.approx(1.0, abs=1e-9), name


def test_independent_gaussians_debiased_cka_near_zero():
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(2000, 50, generator=g), torch.randn(2000, 50, generator=g)
    assert abs(sim.linear_cka(X, Y, debiased=True)) < 0.01
    assert sim.linear_cka(X, Y) > 0.015  # the biased estimator is visibly positive at d/n = 1/40


def test_cca_result_fields(ref_pair):
    X, Y = ref_pair
    r = sim.cca(X[:, :10], Y)
    assert r.rho.shape == (10,)
    assert np.all(np.diff(r.rho) <= 1e-12) and r.rho.max() <= 1 and r.rho.min() >= 0
    assert r.mean == pytest.approx(r.rho.mean()) and r.r2 == pytest.approx((r.rho**2).mean())


def test_pwcca_either_order_and_wider_first(ref_pair):
    X, Y = ref_pair
    narrow = X[:, :20]
    # the narrower side's directions are used whichever argument it is
    assert sim.pwcca(narrow, Y) == sim.pwcca(Y, narrow)
    assert 0 < sim.pwcca(Y, narrow) <= 1


def test_gram_and_feature_forms_agree(ref_pair):
    X, Y = ref_pair[0][:40], ref_pair[1][:40]  # n < d: linear CKA switches to n x n Grams
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    Xc, Yc = Xt - Xt.mean(0), Yt - Yt.mean(0)
    for debiased in (False, True):
        want = sim.gram_cka(Xc @ Xc.T, Yc @ Yc.T, debiased)
        assert sim.linear_cka(X, Y, debiased=debiased) == pytest.approx(want, abs=1e-12)


def test_dtypes_and_numpy_torch_agree(ref_pair):
    X, Y = ref_pair
    a = sim.linear_cka(X, Y)
    assert sim.linear_cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(a, abs=1e-14)
    assert sim.linear_cka(X.astype(np.float32), Y.astype(np.float32)) == pytest.approx(a, abs=1e-6)
    assert sim.linear_cka(torch.from_numpy(X).half(), torch.from_numpy(Y).half()) == pytest.approx(a, abs=1e-3)


def test_mixed_precision_close_to_float64(ref_pair):
    X, Y = ref_pair
    for debiased in (False, True):
        exact = sim.linear_cka(X, Y, debiased=debiased)
        assert sim.linear_cka(X, Y, debiased=debiased, precision="mixed") == pytest.approx(exact, abs=1e-6)


def test_mixed_precision_multi_chunk_with_large_offset():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((9000, 16)) + 100.0  # three row chunks; a mean far from zero
    Y = X @ rng.standard_normal((16, 12)) + rng.standard_normal((9000, 12))
    for debiased in (False, True):
        exact = sim.linear_cka(X, Y, debiased=debiased)
        assert sim.linear_cka(X, Y, debiased=debiased, precision="mixed") == pytest.approx(exact, abs=1e-6)


def _brute_knn_scores(X: torch.Tensor, k: int) -> torch.Tensor:
    """Sorted float64 scores of each row's true top-k (self excluded): compares neighbour SETS up to
    exact ties, whose members are interchangeable."""
    S = X @ X.T
    S.fill_diagonal_(-math.inf)
    return torch.topk(S, k, dim=1).values.sort(1).values


@pytest.mark.parametrize("kind", ["gauss", "duplicates", "near_ties", "integers", "sparse", "huge", "tiny"])
def test_knn_indices_equal_float64_sets(kind):
    # several row blocks (chunk=64), including rows whose float32 top-k is ambiguous (near-ties that
    # only float64 resolves, exact ties from duplicated rows and integer data) and values that would
    # under/overflow float32 unscaled
    g = torch.Generator().manual_seed(3)
    X = torch.randn(300, 24, generator=g, dtype=torch.float64)
    if kind == "duplicates":
        X[150:] = X[:150]
    elif kind == "near_ties":  # 80 rows float32 cannot tell apart, but float64 can
        X[1:81] = X[1] + 1e-9 * torch.randn(80, 24, generator=g, dtype=torch.float64)
    elif kind == "integers":
        X = torch.randint(0, 3, (300, 24), generator=g).double()
    elif kind == "sparse":
        X = torch.relu(X - 1.5)
    elif kind == "huge":
        X = X * 1e150
    elif kind == "tiny":
        X = X * 1e-150
    for k in (1, 7, 40, 299):
        idx = sim.knn_indices(X, k, chunk=64)
        assert idx.shape == (300, k)
        assert bool((idx != torch.arange(300)[:, None]).all())  # self is never a neighbour
        assert all(len(set(row.tolist())) == k for row in idx)  # no index twice
        S = X @ X.T
        got = torch.gather(S, 1, idx).sort(1).values
        assert torch.equal(got, _brute_knn_scores(X, k))


def test_cca_rank_of_float32_activations_is_their_float32_rank():
    """A Linear(6 -> 16) layer has rank 6; captured in float32 its rounding adds 10 tiny directions that
    float64's rank cut would count as signal (CCA 0.49 instead of the true value near 0.96)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 6, generator=g, dtype=torch.float64)
    W = torch.randn(6, 16, generator=g, dtype=torch.float64)
    X64 = z @ W  # exactly rank 6
    Y = z @ torch.randn(6, 8, generator=g, dtype=torch.float64) + 0.3 * torch.randn(500, 8, generator=g,
                                                                                     dtype=torch.float64)
    exact = sim.cca(z, Y)
    got32 = sim.cca(X64.float(), Y)
    assert len(got32.rho) == 6 and got32.mean == pytest.approx(exact.mean, abs=1e-5)
    assert sim.span_basis(X64.float()).shape[1] == 6 and sim.span_basis(X64).shape[1] == 6

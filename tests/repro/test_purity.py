"""Invariants of univ.repro.purity (neuron purity against a known dictionary, feature purification)."""

import pytest
import torch

from univ.repro import purity


@pytest.fixture(scope="module")
def ortho():
    return purity.orthonormal_dictionary(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))


def test_purity_of_an_atom_is_one(ortho):
    W = 2.5 * ortho.T[:6]  # six atoms, rescaled: purity ignores the norm
    assert torch.allclose(purity.purity(W, ortho, k=1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(purity.participation(W, ortho), torch.ones(6, dtype=torch.float64))
    mix = ortho[:, 0] + ortho[:, 1]
    assert purity.purity(mix, ortho, k=1).item() == pytest.approx(0.5)
    assert purity.purity(mix, ortho, k=2).item() == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 3])
def test_random_direction_purity_matches_expectation(ortho, k):
    expected = purity.expected_random_purity(32, k)
    W = torch.randn(8000, 32, generator=torch.Generator().manual_seed(1))
    p = purity.purity(W, ortho, k)
    se = float(p.std()) / len(p) ** 0.5
    assert abs(float(p.mean()) - expected) < 4 * se
    assert expected < 0.5  # well below an atom's 1
    mc_mean, _ = purity.random_purity(ortho, k, n=8000, seed=2)
    assert mc_mean == pytest.approx(expected, abs=4 * se)


def test_expected_random_purity_limits():
    assert purity.expected_random_purity(1, 1) == pytest.approx(1.0, abs=1e-6)
    assert purity.expected_random_purity(10, 10) == pytest.approx(1.0, abs=1e-6)
    # E[max of 2 chi2_1] = 1 + 2/pi, so the top-1 share of a random 2-D direction is 1/2 + 1/pi
    assert purity.expected_random_purity(2, 1) == pytest.approx(0.5 + 1 / torch.pi, abs=1e-6)


def test_decompose_recovers_beta():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(5, 20, generator=g, dtype=torch.float64)
    V = torch.randn(5, 20, generator=g, dtype=torch.float64)
    V = V - ((V * B).sum(1) / (B * B).sum(1))[:, None] * B  # orthogonal to B
    beta = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.0], dtype=torch.float64)
    dec = purity.decompose(beta[:, None] * B + V, B)
    assert torch.allclose(dec.beta, beta) and torch.allclose(dec.v, V)
    with pytest.raises(ValueError, match="W_other"):
        purity.decompose(B, B[:, :3])

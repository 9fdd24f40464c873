"""Per-layer moments: the grid path equals the pairwise measures; the per-layer bases equal CCA / SVCCA."""

import numpy as np
import pytest
import torch

from univ import similarity as sim


@pytest.mark.parametrize("scale", [1.0, 2.0**-600, 2.0**600])
def test_moment_measures_equal_the_pairwise_functions(scale):
    g = np.random.default_rng(0)
    X0 = g.standard_normal((300, 12))
    Y = (np.maximum(X0 @ g.standard_normal((12, 7)) + 0.3 * g.standard_normal((300, 7)), 0) + 5) * scale
    X = X0 * scale
    got = sim.moment_measures(sim.layer_moments(X), sim.layer_moments(Y))
    assert got["linear_cka"] == pytest.approx(sim.linear_cka(X, Y), abs=1e-12)
    assert got["linear_cka_debiased"] == pytest.approx(sim.linear_cka(X, Y, debiased=True), abs=1e-12)
    assert got["procrustes"] == pytest.approx(sim.procrustes(X, Y), abs=1e-12)


def test_moments_refuse_bad_input():
    a = sim.layer_moments(np.random.default_rng(1).standard_normal((20, 3)))
    b = sim.layer_moments(np.random.default_rng(2).standard_normal((21, 3)))
    with pytest.raises(ValueError, match="same number of samples"):
        sim.moment_measures(a, b)
    with pytest.raises(ValueError, match="X: has zero variance"):
        sim.layer_moments(np.ones((10, 3)))


def test_bases_give_cca_and_svcca():
    g = np.random.default_rng(3)
    X = g.standard_normal((200, 10))
    Y = X[:, :6] @ g.standard_normal((6, 8)) + 0.5 * g.standard_normal((200, 8))
    rho = torch.linalg.svdvals(sim.span_basis(X).T @ sim.span_basis(Y)).clamp(0, 1).numpy()
    np.testing.assert_allclose(rho, sim.cca(X, Y).rho, atol=1e-12)
    sv = float(torch.linalg.svdvals(sim.principal_basis(X).T @ sim.principal_basis(Y)).clamp(0, 1).mean())
    assert sv == pytest.approx(sim.svcca(X, Y), abs=1e-12)
    wide = g.standard_normal((30, 50))  # d > n: the sample-space route
    sv = float(torch.linalg.svdvals(sim.principal_basis(wide).T @ sim.principal_basis(wide[:, ::-1].copy()))
               .clamp(0, 1).mean())
    assert sv == pytest.approx(1.0, abs=1e-9)

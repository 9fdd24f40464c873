import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import univ
import univ.adversarial as adv
from univ.adversarial import controls
from univ.adversarial.project import (
    code_changes,
    latent_class_association,
    most_changed_latents,
    neuron_basis,
    pca_basis,
    project,
    random_dictionary,
    random_orthonormal,
)


class ToySAE:
    """A ReLU 'SAE' with a fixed overcomplete dictionary (the interface project() needs)."""

    def __init__(self, D):
        self.D = D
        self.d_sae = D.shape[0]

    def encode(self, x):
        return torch.relu(torch.as_tensor(x, dtype=torch.float64) @ self.D.T - 0.5)

    def decode(self, z):
        return torch.as_tensor(z, dtype=torch.float64) @ self.D


def test_one_direction_is_fully_concentrated():
    Q = random_orthonormal(8, seed=3)
    delta = 2.5 * Q[[2, 5]]  # each sample moves along one basis direction
    df = project(delta, Q)
    assert np.allclose(df["frac_top1"], 1) and np.allclose(df["participation_ratio"], 1)
    nb = project(delta, neuron_basis(8))
    assert (nb["frac_top1"] < 0.9).all() and (nb["participation_ratio"] > 1.5).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12))
def test_orthonormal_invariants(seed, d):
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(5, d, generator=g, dtype=torch.float64)
    Q = random_orthonormal(d, seed=seed)
    df = project(delta, Q, k=(1, 2, d))
    assert np.allclose(df[f"frac_top{d}"], 1)
    assert (df["frac_top1"] <= df["frac_top2"] + 1e-12).all()
    assert np.allclose(df["frac_top2"], df["share_top2"])  # orthonormal: span fraction == energy share
    assert ((df["participation_ratio"] >= 1 - 1e-9) & (df["participation_ratio"] <= d + 1e-9)).all()
    # OMP equals least squares for an orthonormal basis; scale invariance
    omp = project(3 * delta, Q, k=(1, 2, d), method="omp")
    assert np.allclose(omp["frac_top2"], df["frac_top2"])


def test_pca_basis_and_overcomplete_dictionary():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor([5, 3, 1, 1, 0.5, 0.1])
    B = pca_basis(acts)
    assert torch.allclose(B @ B.T, torch.eye(6, dtype=torch.float64), atol=1e-10)
    assert abs(B[0, 0]) > 0.99
    D = random_dictionary(40, 6)
    delta = D[[0, 7, 13]] * 0.3
    df = project(delta, D)
    assert (df["method"] == "omp").all() and np.allclose(df["frac_top1"], 1)


def test_sae_codes_and_class_association():
    D = random_dictionary(24, 8, seed=1)
    sae = ToySAE(D)
    g = torch.Generator().manual_seed(0)
    clean = 2 * D[torch.randint(0, 24, (30,), generator=g)] + 0.01 * torch.randn(30, 8, generator=g,
                                                                                  dtype=torch.float64)
    delta = torch.zeros_like(clean)
    df = project(delta + 1e-9 * D[0], sae, clean=clean)
    assert (df["method"] == "codes").all()
    perturbed = clean + 3 * D[5]
    ch = code_changes(sae, clean, perturbed)
    assert (ch.table["n_changed"] >= 1).all() and (ch.table["jaccard"] <= 1).all()
    assert ch.dz.shape == (30, sae.d_sae) and torch.equal(ch.active_union, (sae.encode(clean) > 0)
                                                          | (sae.encode(perturbed) > 0))
    same = code_changes(sae, clean, clean)
    assert (same.table["n_changed"] == 0).all() and (same.table["jaccard"] == 1).all() and not same.dz.any()
    df = project(perturbed - clean, sae, clean=clean)
    assert df["frac_top1"].mean() > 0.5
    lsq = project(perturbed - clean, sae, clean=clean, method="lstsq", support="active")
    assert (lsq["frac_top10"] > 0.9).all()
    y = torch.arange(30) % 3
    assoc = latent_class_association(sae.encode(clean), y)
    assert set(assoc.columns) >= {"latent", "top_class", "class_share"}
    top = most_changed_latents(sae, clean, perturbed, y, top=3)
    assert top[top.direction == "raised"].iloc[0]["latent"] == 5


def test_project_bad_input():
    with pytest.raises(ValueError, match="delta"):
        project(torch.ones(4), neuron_basis(4))
    with pytest.raises(ValueError, match="basis"):
        project(torch.ones(3, 4), neuron_basis(5))
    with pytest.raises(ValueError, match="method"):
        project(torch.ones(3, 4), neuron_basis(4), method="magic")
    with pytest.raises(ValueError, match="clean"):
        project(torch.ones(3, 4), neuron_basis(4), method="codes")
    with pytest.raises(ValueError, match="NaN"):
        project(torch.full((3, 4), np.nan), neuron_basis(4))


def test_matched_controls(mlp, data):
    x, y = data.x_test[:50], data.y_test[:50]
    x_adv = adv.pgd(mlp, x, y, eps=0.1, steps=10, bounds=data.bounds)
    r = controls.matched_random(x, x_adv, bounds=data.bounds)
    target = adv.per_sample_norm(x_adv - x, "2")
    assert torch.allclose(adv.per_sample_norm(r - x, "2"), target, rtol=0.05)
    assert float(r.min()) >= 0 and float(r.max()) <= 1
    gn = controls.gaussian_noise(x, x_adv, bounds=data.bounds)
    assert gn.shape == x.shape and float(gn.min()) >= 0
    acts = {k: univ.capture(mlp, v, "2", dtype=torch.float64)["2"] for k, v in (("clean", x), ("adv", x_adv))}
    assert acts["clean"].shape == (50, 64)

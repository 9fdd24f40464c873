"""Szegedy et al.'s box-constrained L-BFGS attack (univ.adversarial.lbfgs)."""

import pytest
import torch

import univ.adversarial as adv
from univ.adversarial.lbfgs import lbfgs, lbfgs_search
from univ.models import predict
from univ.repro.szegedy import rms_distortion


def test_lbfgs_finds_the_minimal_distortion(linear):
    model, x, y, dist = linear
    x_adv, info = lbfgs_search(model, x, y, search_steps=14, bounds=(0.0, 1.0))
    assert info["success"].all()
    assert (predict(model, x_adv) != y).all()
    l2 = torch.tensor(info["l2"].to_numpy(), dtype=torch.float32)
    assert torch.allclose(l2, dist, rtol=0.05, atol=1e-3)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_lbfgs_digits_targets(mlp, data):
    x, y = data.x_test[:8], data.y_test[:8]
    t = (y + 3) % 10
    x_adv, info = lbfgs_search(mlp, x, y, target=t, search_steps=5, maxiter=50,
                        bounds=data.bounds)
    assert info["success"].mean() > 0.9
    ok = torch.tensor(info["success"].to_numpy())
    assert (predict(mlp, x_adv)[ok] == t[ok]).all()
    assert torch.allclose(torch.tensor(info["rms_distortion"].to_numpy()), rms_distortion(x, x_adv))


def test_registry_has_minimal_attacks(mlp, data):
    x, y = data.x_test[:10], data.y_test[:10]
    for name in ("lbfgs", "deepfool"):
        x_adv = adv.make_attack(name, bounds=data.bounds)(mlp, x, y) if name == "deepfool" else adv.make_attack(
            name, search_steps=2, maxiter=20, bounds=data.bounds)(mlp, x[:4], y[:4])
        assert x_adv.shape[1:] == x.shape[1:]


def test_lbfgs_bad_input(mlp, data):
    x, y = data.x_test[:10], data.y_test[:10]
    with pytest.raises(ValueError, match="outside the declared box"):
        lbfgs(mlp, x + 2, y, bounds=data.bounds)

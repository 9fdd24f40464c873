import pytest
import torch
from torch import nn

import univ.adversarial as adv
from univ.adversarial.lbfgs import SZEGEDY_TABLE1, lbfgs, minimal_distortion_table, rms_distortion
from univ.adversarial.minimal import deepfool
from univ.models import predict


@pytest.fixture(scope="module")
def linear():
    """A 2-class linear model whose exact minimal L2 adversarial distance is |w.x + b| / ||w||."""
    torch.manual_seed(0)
    model = nn.Linear(16, 2)
    x = 0.4 + 0.2 * torch.rand(12, 16)  # interior of the box: the box constraint is inactive
    with torch.no_grad():  # put the boundary through the middle of the data
        s = model(x)
        model.bias[1] -= (s[:, 1] - s[:, 0]).median() + 1e-3
    y = model(x).argmax(1)
    w = model.weight[1] - model.weight[0]
    dist = ((model(x)[:, 1] - model(x)[:, 0]).abs() / w.norm()).detach()
    keep = dist < 0.3  # the nearest boundary point stays inside [0, 1]
    return model, x[keep], y[keep], dist[keep]


def test_lbfgs_finds_the_minimal_distortion(linear):
    model, x, y, dist = linear
    x_adv, info = lbfgs(model, x, y, return_info=True, search_steps=14)
    assert info["success"].all()
    assert (predict(model, x_adv) != y).all()
    l2 = torch.tensor(info["l2"].to_numpy(), dtype=torch.float32)
    assert torch.allclose(l2, dist, rtol=0.05, atol=1e-3)
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_deepfool_is_exact_on_a_linear_model(linear):
    model, x, y, dist = linear
    x_adv = deepfool(model, x, y, overshoot=0.0)
    assert (predict(model, x_adv) != y).all()
    assert torch.allclose(adv.per_sample_norm(x_adv - x, "2"), dist, rtol=1e-3, atol=2e-4)


def test_deepfool_on_digits(mlp, data):
    x, y = data.x_test[:100], data.y_test[:100]
    x_adv = deepfool(mlp, x, y)
    assert float((predict(mlp, x_adv) == y).float().mean()) < 0.05
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    capped = deepfool(mlp, x, y, eps=0.1)
    assert float(adv.per_sample_norm(capped - x, "2").max()) <= 0.1 + 1e-5


def test_lbfgs_digits_targets_and_table(mlp, data):
    x, y = data.x_test[:8], data.y_test[:8]
    t = (y + 3) % 10
    x_adv, info = lbfgs(mlp, x, y, target=t, return_info=True, search_steps=5, maxiter=50)
    assert info["success"].mean() > 0.9
    ok = torch.tensor(info["success"].to_numpy())
    assert (predict(mlp, x_adv)[ok] == t[ok]).all()
    assert torch.allclose(torch.tensor(info["rms_distortion"].to_numpy()), rms_distortion(x, x_adv))
    table = minimal_distortion_table({"mlp": mlp}, x[:4], y[:4], search_steps=4, maxiter=50)
    assert len(table) == 1 + len(SZEGEDY_TABLE1)
    mine = table.iloc[0]
    assert 0 < mine["av_min_distortion"] < 0.3 and mine["success_rate"] > 0.9


def test_registry_has_minimal_attacks(mlp, data):
    x, y = data.x_test[:10], data.y_test[:10]
    for name in ("lbfgs", "deepfool"):
        x_adv = adv.make_attack(name)(mlp, x, y) if name == "deepfool" else adv.make_attack(
            name, search_steps=2, maxiter=20)(mlp, x[:4], y[:4])
        assert x_adv.shape[1:] == x.shape[1:]


def test_minimal_bad_input(mlp, data):
    x, y = data.x_test[:10], data.y_test[:10]
    with pytest.raises(ValueError, match="outside the declared box"):
        lbfgs(mlp, x + 2, y)
    with pytest.raises(ValueError, match="y: labels"):
        deepfool(mlp, x, y - 20)

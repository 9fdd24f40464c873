"""DeepFool (univ.adversarial.deepfool): exact on a linear model, and on a digits MLP."""

import pytest
import torch

import univ.adversarial as adv
from univ.adversarial.deepfool import deepfool
from univ.models import predict


def test_deepfool_is_exact_on_a_linear_model(linear):
    model, x, y, dist = linear
    x_adv = deepfool(model, x, y, overshoot=0.0, bounds=(0.0, 1.0))
    assert (predict(model, x_adv) != y).all()
    assert torch.allclose(adv.per_sample_norm(x_adv - x, "2"), dist, rtol=1e-3, atol=2e-4)


def test_deepfool_on_digits(mlp, data):
    x, y = data.x_test[:100], data.y_test[:100]
    x_adv = deepfool(mlp, x, y, bounds=data.bounds)
    assert float((predict(mlp, x_adv) == y).float().mean()) < 0.05
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    capped = deepfool(mlp, x, y, eps=0.1, bounds=data.bounds)
    assert float(adv.per_sample_norm(capped - x, "2").max()) <= 0.1 + 1e-5


def test_deepfool_bad_input(mlp, data):
    x, y = data.x_test[:10], data.y_test[:10]
    with pytest.raises(ValueError, match="y: labels"):
        deepfool(mlp, x, y - 20, bounds=data.bounds)

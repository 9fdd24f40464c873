"""A new attack is one function and one registry line, and then works everywhere an attack does."""

import json

import pytest
import torch

import univ.adversarial as adv
from univ.data import Dataset
from univ.models import build_model
from univ.train import TrainConfig, train

CALLS = []


def fixed_sign_step(model, x, y, *, bounds, step=0.1):
    """A toy attack: one signed-gradient step of fixed size ``step``, clipped to ``bounds``."""
    CALLS.append(len(x))
    x, y, bounds, _ = adv.check_inputs(model, x, y, bounds)
    x_in = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x_in), y)
        grad, = torch.autograd.grad(loss, x_in)
    return adv.clip_to_box(x + step * grad.sign(), bounds).detach()


@pytest.fixture
def toy():
    adv.register_attack("toy", fixed_sign_step)
    yield "toy"
    adv.ATTACKS.unregister("toy")


@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 6, generator=g)
    y = (x[:, 0] > x[:, 1]).long()
    return Dataset("tiny", x[:64], y[:64], x[64:], y[64:], (6,), 2, (0.0, 1.0))


def test_toy_attack_through_the_public_api(toy, tiny):
    model = build_model("mlp", seed=0, input_shape=(6,), widths=[8], n_classes=2)
    attack = adv.make_attack(toy, step=0.05, bounds=tiny.bounds)
    assert attack.spec == {"name": "toy", "kwargs": {"step": 0.05, "bounds": [0.0, 1.0]}}
    assert json.loads(json.dumps(attack.spec)) == attack.spec

    x, y = tiny.x_test, tiny.y_test
    x_adv = attack(model, x, y)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0

    CALLS.clear()
    trained, metrics = train(model, tiny, TrainConfig(epochs=1, batch_size=16, seed=0), attack=attack,
                             progress=False)
    assert metrics["steps"] == 4 and len(CALLS) == 4  # the training loop attacked every batch
    robust = adv.robust_accuracy(trained, x, y, attack)
    clean = adv.robust_accuracy(trained, x, y, adv.make_attack(toy, step=0.0, bounds=tiny.bounds))
    assert 0.0 <= robust <= clean  # a zero step gives clean accuracy; the attack does not raise it

    with pytest.raises(ValueError, match="already registered"):
        adv.register_attack("toy", lambda model, x, y, *, bounds: x)


def test_unregistered_toy_is_unknown(tiny):
    assert "toy" not in adv.ATTACKS
    with pytest.raises(ValueError, match="unknown attack 'toy'"):
        adv.make_attack("toy", bounds=tiny.bounds)

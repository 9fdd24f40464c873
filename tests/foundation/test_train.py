import pytest
import torch

from univ import data
from univ.cache import cached_model
from univ.models import build_model
from univ.train import TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def digits():
    return data.digits()


def test_training_learns_digits(digits):
    m = build_model("mlp", widths=(32,), seed=0)
    before = evaluate(m, digits.x_test, digits.y_test)
    m, metrics = train(m, digits, TrainConfig(epochs=8), progress=False)
    assert metrics["test_acc"] > 0.85 > before
    assert metrics["test_acc"] == evaluate(m, digits.x_test, digits.y_test)
    assert len(metrics["history"]) == 8 and metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]


def test_training_is_deterministic(digits):
    a, _ = train(build_model("mlp", widths=(16,), seed=1), digits, TrainConfig(epochs=2, seed=5), progress=False)
    b, _ = train(build_model("mlp", widths=(16,), seed=1), digits, TrainConfig(epochs=2, seed=5), progress=False)
    assert torch.equal(a.fc1.weight, b.fc1.weight)


def test_attack_hook_and_callback_are_used(digits):
    calls = {"attack": 0, "steps": 0}

    def attack(model, x, y):
        calls["attack"] += 1
        return x + 0.01

    def cb(step, model):
        calls["steps"] = step

    m = build_model("mlp", widths=(8,), seed=0)
    train(m, digits.subset(256), TrainConfig(epochs=1, batch_size=64), attack=attack, callback=cb,
          progress=False)
    assert calls == {"attack": 4, "steps": 4}


def test_bad_train_config():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="noise_sigma"):
        TrainConfig(noise_sigma=-1)


def test_model_cache_reuses(tmp_path, digits):
    small = digits.subset(200, 50)
    cfg = TrainConfig(epochs=1)
    m1, met1 = cached_model("mlp", small, seed=0, train_cfg=cfg, model_cfg={"widths": [8]}, root=tmp_path,
                            progress=False)
    m2, met2 = cached_model("mlp", small, seed=0, train_cfg=cfg, model_cfg={"widths": [8]}, root=tmp_path,
                            progress=False)
    assert torch.equal(m1.fc1.weight, m2.fc1.weight) and met1["test_acc"] == met2["test_acc"]
    assert len(list(tmp_path.iterdir())) == 1
    cached_model("mlp", small, seed=1, train_cfg=cfg, model_cfg={"widths": [8]}, root=tmp_path, progress=False)
    untrained, _ = cached_model("mlp", small, seed=0, train_cfg=None, model_cfg={"widths": [8]}, root=tmp_path)
    assert torch.equal(untrained.fc1.weight, build_model("mlp", seed=0, widths=[8]).fc1.weight)
    assert len(list(tmp_path.iterdir())) == 3

import numpy as np
import pytest
import torch

import univ.adversarial as adv
from univ.models import predict

BOX = (0.0, 1.0)  # the digits data's box (data.bounds), which every attack is told


def acc(model, x, y):
    return float((predict(model, x) == y).float().mean())


@pytest.fixture(scope="module")
def batch(data):
    return data.x_test[:200], data.y_test[:200]


def test_models_learn(mlp, cnn, batch):
    x, y = batch
    assert acc(mlp, x, y) > 0.9 and acc(cnn, x, y) > 0.9


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_eps_zero_is_clean(mlp, batch, attack, norm):
    x, y = batch
    x_adv = adv.make_attack(attack, eps=0.0, norm=norm, bounds=BOX)(mlp, x, y)
    assert torch.equal(x_adv, x)


@pytest.mark.parametrize("norm,grid", [("inf", [0.0, 0.02, 0.05, 0.1, 0.2, 0.5]),
                                       ("2", [0.0, 0.25, 0.5, 1.0, 2.0, 5.0])])
def test_accuracy_falls_with_eps(mlp, batch, norm, grid):
    x, y = batch
    accs = [adv.robust_accuracy(mlp, x, y, adv.make_attack("pgd", eps=e, norm=norm, steps=20, bounds=BOX))
            for e in grid]
    assert accs[0] == pytest.approx(acc(mlp, x, y))
    assert all(b <= a + 0.01 for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] <= 0.02, accs


@pytest.mark.parametrize("norm,eps", [("inf", 0.05), ("2", 0.5)])
def test_more_restarts_never_weaker(mlp, batch, norm, eps):
    x, y = batch
    m1 = adv.margin(mlp(adv.pgd(mlp, x, y, eps=eps, norm=norm, steps=5, restarts=1, bounds=BOX)), y)
    x3 = adv.pgd(mlp, x, y, eps=eps, norm=norm, steps=5, restarts=4, bounds=BOX)
    m3 = adv.margin(mlp(x3), y)
    fooled1, fooled3 = m1 > 0, m3 > 0
    assert bool((fooled3 | ~fooled1).all())  # every sample fooled with 1 restart stays fooled
    assert bool((m3[~fooled1] >= m1[~fooled1] - 1e-5).all())
    assert int(fooled3.sum()) >= int(fooled1.sum())


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 1.0)])
@pytest.mark.parametrize("flat", [False, True])
def test_ball_and_box(mlp, batch, attack, norm, eps, flat):
    x, y = batch
    if flat:
        x = x.reshape(len(x), -1)
    kw = dict(random_start=True) if attack == "fgsm" else dict(restarts=2, steps=10)
    x_adv = adv.make_attack(attack, eps=eps, norm=norm, bounds=BOX, **kw)(mlp, x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(adv.per_sample_norm(x_adv - x, adv.canonical_norm(norm)).max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert acc(mlp, x_adv, y) < acc(mlp, x, y)


def test_unbounded_inputs(mlp, batch):
    x, y = batch
    x_adv = adv.pgd(mlp, x * 3 - 1, y, eps=0.2, bounds=None)
    assert float(adv.per_sample_norm(x_adv - (x * 3 - 1), "inf").max()) <= 0.2 + 1e-6


def test_mode_restored_and_no_param_grads(cnn, batch):
    x, y = batch
    cnn.train()
    cnn[3].eval()  # a mixed state must come back exactly
    before = [m.training for m in cnn.modules()]
    x_adv = adv.pgd(cnn, x, y, eps=0.1, steps=3, bounds=BOX)
    assert [m.training for m in cnn.modules()] == before
    assert all(p.grad is None or not p.grad.any() for p in cnn.parameters())
    cnn.eval()
    # in eval mode during the attack: the result is deterministic though dropout is present
    assert torch.equal(x_adv, adv.pgd(cnn, x, y, eps=0.1, steps=3, bounds=BOX))
    assert acc(cnn, x_adv, y) < acc(cnn, x, y) - 0.2


def test_targeted(mlp, batch):
    x, y = batch
    t = (y + 1) % 10
    x_adv = adv.pgd(mlp, x, y, eps=0.3, steps=30, targeted=True, target=t, bounds=BOX)
    assert float((predict(mlp, x_adv) == t).float().mean()) > 0.9
    gen = torch.Generator().manual_seed(0)
    x_adv = adv.pgd(mlp, x, y, eps=0.3, steps=30, targeted=True, target=adv.random_other_class(gen),
                    bounds=BOX)
    assert float((predict(mlp, x_adv) != y).float().mean()) > 0.9
    x_ll = adv.pgd(mlp, x, y, eps=0.3, steps=30, targeted=True, bounds=BOX)  # default: least-likely class
    assert float((predict(mlp, x_ll) != y).float().mean()) > 0.9


def test_margin_loss_and_numpy_input(mlp, batch):
    x, y = batch
    x_adv = adv.pgd(mlp, x.numpy(), y.numpy(), eps=0.1, loss="margin", bounds=BOX)
    assert isinstance(x_adv, torch.Tensor)
    assert acc(mlp, x_adv, y) < 0.5


@pytest.mark.parametrize("kw,match", [
    (dict(eps=-0.1), "eps"),
    (dict(norm="l3"), "norm"),
    (dict(steps=0), "steps"),
    (dict(bounds=(1, 0)), "bounds"),
    (dict(loss="hinge"), "loss"),
])
def test_bad_arguments(mlp, batch, kw, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        adv.pgd(mlp, x, y, **{"bounds": BOX, **kw})


def test_bad_inputs(mlp, batch):
    x, y = batch
    with pytest.raises(ValueError, match="y: expected integer labels of shape"):
        adv.pgd(mlp, x, y[:-1], bounds=BOX)
    with pytest.raises(ValueError, match="y: expected integer labels of shape"):
        adv.fgsm(mlp, x, y[:, None], bounds=BOX)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 10\)"):
        adv.pgd(mlp, x, y + 5, bounds=BOX)
    with pytest.raises(ValueError, match="outside the declared box"):
        adv.pgd(mlp, x * 2, y, bounds=BOX)
    with pytest.raises(ValueError, match="NaN"):
        adv.pgd(mlp, torch.full_like(x, np.nan), y, bounds=BOX)
    with pytest.raises(ValueError, match="target"):
        adv.pgd(mlp, x, y, targeted=True, target=y[:3], bounds=BOX)
    with pytest.raises(ValueError, match="unknown attack 'pgdd'"):
        adv.make_attack("pgdd")


def test_make_attack_is_a_training_callable(mlp, batch):
    x, y = batch
    attack = adv.make_attack("pgd", eps=0.1, steps=3, bounds=BOX)
    with torch.no_grad():  # a training loop may call it under no_grad
        x_adv = attack(mlp, x, y)
    assert not torch.equal(x_adv, x)


def test_float64_numpy_input_to_float32_model(mlp, batch):
    x, y = batch
    x_adv = adv.pgd(mlp, x.double().numpy(), y.numpy(), eps=0.05, steps=3, bounds=BOX)
    assert x_adv.dtype == torch.float32
    assert float(adv.per_sample_norm(x_adv - x, "inf").max()) <= 0.05 + 1e-6


def test_adversarial_training_through_univ_train(data):
    """make_attack plugs into univ.train (Madry-style); the result resists PGD better than standard."""
    from univ.models import build_model
    from univ.train import TrainConfig, train

    small = data.subset(n_train=600, n_test=200)
    cfg = TrainConfig(epochs=10, lr=3e-3, batch_size=64, seed=0)
    std, _ = train(build_model("mlp", seed=0, widths=[64]), small, cfg, progress=False)
    rob, _ = train(build_model("mlp", seed=0, widths=[64]), small, cfg, progress=False,
                   attack=adv.make_attack("fgsm", eps=0.2, random_start=True, bounds=small.bounds))
    attack = adv.make_attack("pgd", eps=0.2, steps=10, bounds=small.bounds)
    x, y = small.x_test, small.y_test
    assert adv.robust_accuracy(rob, x, y, attack) > adv.robust_accuracy(std, x, y, attack) + 0.1
    assert not rob.training


def test_bounds_is_required(mlp, batch):
    """No attack assumes a [0, 1] box: the caller passes the data's box, or None for unbounded inputs."""
    x, y = batch
    with pytest.raises(TypeError, match="bounds"):
        adv.pgd(mlp, x, y, eps=0.1)
    for name in ("pgd", "fgsm", "deepfool", "lbfgs"):
        with pytest.raises(ValueError, match="bounds: required"):
            adv.make_attack(name)
    with pytest.raises(ValueError, match="epz"):
        adv.make_attack("pgd", epz=0.1, bounds=BOX)


class _Output:
    """A HuggingFace-style output object: the logits are an attribute, not the return value."""

    def __init__(self, logits):
        self.logits = logits


@pytest.mark.parametrize("wrap", [lambda z: {"logits": z}, lambda z: (z,), _Output])
@pytest.mark.parametrize("attack", ["pgd", "fgsm", "deepfool", "lbfgs"])
def test_non_tensor_outputs_name_the_model(mlp, batch, wrap, attack):
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = mlp

        def forward(self, x):
            return wrap(self.inner(x))

    x, y = batch
    with pytest.raises(ValueError, match="model: expected its forward to return a logits tensor"):
        adv.make_attack(attack, bounds=BOX)(Wrapped(), x[:4], y[:4])


class _Scale(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, x):
        return x * self.s


def test_integer_inputs_become_the_models_dtype(mlp, batch):
    x, y = batch
    model = torch.nn.Sequential(_Scale(1 / 255), mlp)  # reads 0..255 integer pixels
    x255 = (x * 255).round().long()
    x_adv = adv.pgd(model, x255, y, eps=25.5, steps=10, bounds=(0, 255))
    assert x_adv.dtype == torch.float32
    assert float(adv.per_sample_norm(x_adv - x255, "inf").max()) <= 25.5 + 1e-3
    assert acc(model, x_adv, y) < acc(model, x255.float(), y)


def test_attack_spec_is_json_and_keys_the_model_cache(tmp_path, data):
    import json

    from univ.cache import cached_model
    from univ.train import TrainConfig

    attack = adv.make_attack("fgsm", eps=0.1, random_start=True, bounds=data.bounds)
    assert isinstance(attack, adv.Attack)
    assert attack.spec == {"name": "fgsm", "kwargs": {"eps": 0.1, "random_start": True, "bounds": [0.0, 1.0]}}
    assert json.loads(json.dumps(attack.spec)) == attack.spec
    with_tensor = adv.make_attack("pgd", targeted=True, target=torch.zeros(3, dtype=torch.long), bounds=BOX)
    with pytest.raises(ValueError, match="kwargs"):
        _ = with_tensor.spec
    small, cfg = data.subset(200, 50), TrainConfig(epochs=1)
    for eps in (0.1, 0.1, 0.2):
        cached_model("mlp", small, train_cfg=cfg, model_cfg={"widths": [8]}, root=tmp_path, progress=False,
                     attack=adv.make_attack("fgsm", eps=eps, random_start=True, bounds=small.bounds))
    assert len(list(tmp_path.iterdir())) == 2  # one folder per distinct spec
    with pytest.raises(ValueError, match="attack: expected an Attack"):
        cached_model("mlp", small, train_cfg=cfg, root=tmp_path, attack=lambda m, x, y: x)

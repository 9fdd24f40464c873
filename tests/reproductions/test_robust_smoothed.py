"""Building blocks of the Ilyas et al. and Kaur et al. reproductions, on tiny digits MLPs."""

import pytest
import torch
from torch import nn

from univ.adversarial.datasets import invert_representation, layer_output, nonrobust_dataset, robust_dataset
from univ.adversarial.smoothing import smoothed_ascent, smoothed_gradient, smoothed_proba
from univ.data import digits


@pytest.fixture(scope="module")
def data():
    return digits().subset(n_train=400, n_test=100)


@pytest.fixture(scope="module")
def mlp(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(),
                          nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    return model.eval()


def test_layer_output_is_differentiable_in_the_input(mlp, data):
    x = data.x_train[:5].clone().requires_grad_(True)
    r = layer_output(mlp, "4", x)
    assert r.shape == (5, 16)
    g, = torch.autograd.grad(r.sum(), x)
    assert g.abs().sum() > 0


def test_inversion_reduces_representation_distance(mlp, data):
    xt, xs = data.x_train[:32], data.x_train[32:64]
    inv = invert_representation(mlp, "4", xt, xs, steps=200, step_size=0.1)
    assert inv.x.shape == xt.shape
    assert inv.x.min() >= 0 and inv.x.max() <= 1
    assert bool((inv.rep_dist_end < inv.rep_dist_start).all())
    assert inv.rep_dist_end.mean() < 0.3 * inv.rep_dist_start.mean()


def test_robust_dataset_keeps_labels_and_starts_elsewhere(mlp, data):
    small = data.subset(n_train=50)
    out = robust_dataset(mlp, small, "4", steps=50, seed=1)
    assert torch.equal(out.data.y_train, small.y_train)
    assert bool((out.start != out.source).all())  # a derangement: never starts at its own target
    assert torch.equal(out.data.x_test, small.x_test)
    assert out.stats["rep_dist_end"] < out.stats["rep_dist_start"]


@pytest.mark.parametrize("target", ["det", "random"])
def test_nonrobust_dataset_labels_are_the_targets(mlp, data, target):
    small = data.subset(n_train=60)
    out = nonrobust_dataset(mlp, small, target=target, eps=2.0, steps=30, seed=0)
    y_new = out.data.y_train
    if target == "det":
        assert torch.equal(y_new, (small.y_train + 1) % 10)
    else:
        assert y_new.min() >= 0 and y_new.max() < 10
    assert bool((out.l2_from_source <= 2.0 + 1e-4).all())
    assert out.data.x_train.min() >= 0 and out.data.x_train.max() <= 1
    # the attack mostly reaches its target at this (large) eps, so the new labels are the model's view
    pred = mlp(out.data.x_train).argmax(1)
    assert (pred == y_new).float().mean() > 0.8


def test_smoothed_gradient_converges_with_samples(mlp, data):
    x, t = data.x_test[:10], (data.y_test[:10] + 3) % 10
    ref = smoothed_gradient(mlp, x, t, sigma=0.5, n_samples=8192, chunk=512, seed=123).grad

    def err(m):
        return torch.stack([(smoothed_gradient(mlp, x, t, 0.5, n_samples=m, seed=s).grad - ref).norm()
                            for s in range(4)]).mean()

    e16, e256, e2048 = err(16), err(256), err(2048)
    assert e256 < 0.6 * e16
    assert e2048 < 0.6 * e256


def test_smoothed_gradient_chunks_agree_and_sigma0_is_plain(mlp, data):
    x, t = data.x_test[:6], data.y_test[:6]
    a = smoothed_gradient(mlp, x, t, 0.3, n_samples=64, chunk=64, seed=5)
    b = smoothed_gradient(mlp, x, t, 0.3, n_samples=64, chunk=16, seed=5)
    assert torch.allclose(a.log_prob, b.log_prob, atol=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    x_ = x.clone().requires_grad_(True)
    plain, = torch.autograd.grad(torch.log_softmax(mlp(x_), 1).gather(1, t[:, None]).sum(), x_)
    assert torch.allclose(smoothed_gradient(mlp, x, t, 0.0).grad, plain, atol=1e-6)
    p = smoothed_proba(mlp, x, 0.3, n_samples=64, seed=5)
    assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-5)
    assert torch.allclose(p.gather(1, t[:, None])[:, 0].log(), a.log_prob, atol=1e-4)


def test_smoothed_ascent_stays_in_ball_and_raises_target_probability(mlp, data):
    x, t = data.x_test[:8], (data.y_test[:8] + 1) % 10
    x_adv = smoothed_ascent(mlp, x, t, sigma=0.25, eps=1.5, steps=10, n_samples=16)
    assert bool(((x_adv - x).flatten(1).norm(dim=1) <= 1.5 + 1e-4).all())
    before = smoothed_proba(mlp, x, 0.25, 256).gather(1, t[:, None])
    after = smoothed_proba(mlp, x_adv, 0.25, 256).gather(1, t[:, None])
    assert after.mean() > before.mean() + 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["robust_features", "smoothed_gradients"])
def test_quick_analysis_runs(name):
    import importlib

    mod = importlib.import_module(f"analyses.{name}")
    report = mod.run(mod.Config.resolve(quick=True))
    assert report.summary in report.tables
    main = report.tables[report.summary]
    assert len(main) > 0 and not main.select_dtypes("number").isna().all().any()
    if name == "robust_features":
        det = main.set_index("train set").loc["D_det"]
        assert det["clean_acc"] > 15  # well above 10% chance: D_det's non-robust features generalise
    else:
        rows = main.set_index("method")
        assert rows.loc["robust (adv. trained)", "cos_robust_grad"] == pytest.approx(1.0, abs=1e-4)
        assert rows.loc["smoothed s=0.5", "cos_robust_grad"] > rows.loc["standard", "cos_robust_grad"]

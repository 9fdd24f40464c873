"""Lipschitz bounds of ReLU networks (univ.repro.lipschitz) on tiny models."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from univ.models import build_model
from univ.repro import lipschitz as B


def _circular_conv_matrix(w, n):
    """Dense matrix of the stride-1 circular conv of kernel w (c_out, c_in, k, k) on an n x n grid."""
    c_in, k = w.shape[1], w.shape[-1]
    d = c_in * n * n
    eye = torch.eye(d, dtype=torch.float64).reshape(d, c_in, n, n)
    p = k // 2
    out = F.conv2d(F.pad(eye, (p, k - 1 - p, p, k - 1 - p), mode="circular"), w.double())
    return out.reshape(d, -1).T


def _pair_ratios(model, lo, hi, n=400, seed=0):
    """||f(a) - f(b)|| / ||a - b|| for random pairs a, b in the box [lo, hi]."""
    g = torch.Generator().manual_seed(seed)
    a = lo + (hi - lo) * torch.rand((n, *lo.shape), generator=g)
    b = lo + (hi - lo) * torch.rand((n, *lo.shape), generator=g)
    with torch.no_grad():
        num = (model(a).double() - model(b).double()).norm(dim=1)
    return num / (a - b).reshape(n, -1).double().norm(dim=1)


def test_linear_norm_is_exact_and_bounds_ratios():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 5, generator=g)
    s = B.spectral_norm(W)
    assert s == pytest.approx(float(torch.linalg.svdvals(W.double())[0]), rel=1e-10)
    X = torch.randn(1000, 5, generator=g)
    ratios = (X @ W.T).norm(dim=1) / X.norm(dim=1)
    assert float(ratios.max()) <= s * (1 + 1e-6)
    assert float(ratios.max()) > 0.8 * s  # the bound is not vacuous
    big = torch.randn(600, 300, generator=g, dtype=torch.float64)  # Gram-matrix path
    assert B.spectral_norm(big) == pytest.approx(float(torch.linalg.svdvals(big)[0]), rel=1e-9)
    pi = B.power_iteration(lambda v: W.double() @ v, lambda u: W.double().T @ u, 5, iters=500)
    assert pi == pytest.approx(s, rel=1e-6)


def test_fft_conv_norm_matches_unrolled_circular_conv():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    for n in (4, 5):
        exact = float(torch.linalg.svdvals(_circular_conv_matrix(w, n))[0])
        assert B.conv_norm_fft(w, n, padding="circular") == pytest.approx(exact, rel=1e-10)


def test_fft_conv_bound_on_zero_padded_layer():
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(2)))
    M = B.dense_matrix(conv, (2, 6, 6))
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    assert torch.allclose(x.reshape(3, -1) @ M.T, F.conv2d(x, conv.weight.double(), padding=1).reshape(3, -1))
    exact = B.spectral_norm(M)
    fft = B.conv_norm_fft(conv.weight.detach(), 6, padding=1)
    assert exact <= fft * (1 + 1e-9)
    assert fft < 1.5 * exact  # the padding caveat costs little here
    xs = torch.randn(2000, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        r = conv(xs).reshape(2000, -1).norm(dim=1) / xs.reshape(2000, -1).norm(dim=1)
    assert float(r.max()) <= exact * (1 + 1e-6)
    # 1-D convs too
    c1 = nn.Conv1d(2, 3, 5, padding=2, bias=False)
    assert B.spectral_norm(B.dense_matrix(c1, (2, 9))) <= B.conv_norm_fft(c1.weight.detach(), 9, 2) * (1 + 1e-9)


@pytest.fixture(scope="module")
def nets():
    mlp = build_model("mlp", seed=0, input_shape=(1, 4, 4), widths=(12, 10), n_classes=5)
    cnn = build_model("cnn", seed=0, input_shape=(1, 4, 4), channels=(3, 4), hidden=8, n_classes=5)
    return {"mlp": mlp.eval(), "cnn": cnn.eval()}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_measured_le_split_le_product(nets, name):
    model = nets[name]
    table = B.layer_bounds(model)
    assert (table["exact"] <= table["bound"] * (1 + 1e-9)).all()
    product = B.product_bound(table["bound"])
    product_exact = B.product_bound(table["exact"])
    split = B.split_bound(model)
    x = torch.rand(300, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    jac = float(B.jacobian_norms(model, x).max())
    sampled = float(B.sampled_ratios(model, x, radius=0.05, n_samples=16).max())
    pairs = float(_pair_ratios(model, torch.zeros(1, 4, 4) - 1, torch.ones(1, 4, 4)).max())
    measured = max(jac, sampled, pairs)
    assert 0 < measured <= split * (1 + 1e-9)
    assert split <= product_exact * (1 + 1e-9) <= product * (1 + 1e-9)
    assert split < 0.95 * product_exact  # strictly tighter on these random nets


def test_split_bound_is_exact_for_a_linear_net():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Linear(4, 3))
    exact = B.spectral_norm(lin[2].weight.detach().double() @ lin[1].weight.detach().double())
    assert B.split_bound(lin, (6,)) == pytest.approx(exact, rel=1e-9)
    assert B.product_bound(B.layer_bounds(lin, (6,))["bound"]) >= exact


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_local_bound_holds_in_its_box(nets, name):
    model = nets[name]
    center = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(5))
    lo, hi = center - 0.05, center + 0.05
    local = B.local_split_bound(model, lo, hi)
    assert local <= B.split_bound(model) * (1 + 1e-12)
    ib = B.interval_bounds(model, lo, hi)
    inside = lo + (hi - lo) * torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    acts = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: acts.__setitem__(n, i[0].reshape(len(i[0]), -1)))
             for n, m in model.named_children()]
    with torch.no_grad():
        model(inside)
    for h in hooks:
        h.remove()
    for layer, (l, u) in ib.items():
        assert (acts[layer].double() >= l - 1e-5).all() and (acts[layer].double() <= u + 1e-5).all(), layer
    measured = max(float(_pair_ratios(model, lo, hi).max()), float(B.jacobian_norms(model, inside).max()))
    assert measured <= local * (1 + 1e-9)


def test_local_bound_is_exact_where_every_relu_is_stably_on():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(4, 3) + 0.1)
        net[0].bias.fill_(5.0)  # every hidden unit > 0 on the box
    W = net[2].weight.detach().double() @ net[0].weight.detach().double()
    local = B.local_split_bound(net, torch.zeros(3), torch.ones(3), input_shape=(3,))
    assert local == pytest.approx(B.spectral_norm(W), rel=1e-9)


def test_bounds_reject_unsupported_layers():
    with pytest.raises(ValueError, match="not supported"):
        B.chain(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), (3,))
    with pytest.raises(ValueError, match="overlapping"):
        B.chain(nn.Sequential(nn.MaxPool1d(3, stride=1)), (1, 6))
    with pytest.raises(ValueError, match="bounds"):
        B.product_bound([1.0, float("nan")])
    with pytest.raises(ValueError, match="input_size"):
        B.conv_norm_fft(torch.randn(2, 2, 5, 5), 1, padding="circular")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_local_bound_shrinks_to_the_jacobian_norm(nets, name):
    """On a tiny box every ReLU and pool window is fixed: the local bound is the exact local constant."""
    model = nets[name]
    center = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(7)) + 0.5
    local = B.local_split_bound(model, center - 1e-7, center + 1e-7)
    assert local == pytest.approx(float(B.jacobian_norms(model, center[None])[0]), rel=1e-6)
    wider = B.local_split_bound(model, center - 0.2, center + 0.2)
    assert local <= wider * (1 + 1e-9)

"""The certified-gap Lipschitz ladder (univ.lipschitz): upper >= exact >= lower on random small nets, in
L2 and L-inf, globally and over boxes; known answers for linear layers and 1-D inputs."""

import numpy as np
import pytest
import torch
from torch import nn

from univ.lipschitz import (
    as_affine_net,
    branch_and_bound,
    eclipse,
    eclipse_fast,
    exact_lipschitz,
    forward,
    jacobians,
    lipsdp,
    lower_bound,
    operator_norm,
)
from univ.lipschitz.directions import direction_gains
from univ.lipschitz.ladder import ladder, tightest
from univ.repro import lipschitz as classic

TOL = 1e-7


def _net(widths, n_in=2, n_out=2, seed=0):
    torch.manual_seed(seed)
    sizes = [n_in, *widths, n_out]
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    with torch.no_grad():
        for m in layers[::2]:
            m.bias.mul_(3.0)  # spread the kinks across the unit box
    return nn.Sequential(*layers[:-1]).double()


def _check_one(model, box, fast=True, found=0.9):
    lo, hi = box if box is not None else (None, None)
    for norm in ("2", "inf"):
        ex = exact_lipschitz(model, norm, lo, hi)
        bab = branch_and_bound(model, norm, lo, hi)
        uppers = {"LipSDP-Neuron": lipsdp(model, "neuron", norm, lo, hi).value,
                  "LipSDP-Layer": lipsdp(model, "layer", norm, lo, hi).value, "branch-and-bound": bab.value}
        if norm == "2" and box is None:
            uppers.update({"ECLipsE": eclipse(model).value, "ECLipsE-Fast": eclipse_fast(model).value,
                           "split": classic.split_bound(model, (2,)),
                           "product": classic.product_bound(classic.layer_bounds(model, (2,))["exact"])})
        if norm == "2" and box is not None:
            uppers["split-local"] = classic.local_split_bound(model, torch.full((2,), lo), torch.full((2,), hi), (2,))
        low = lower_bound(model, norm, lo, hi, n_starts=24 if fast else 64, steps=80 if fast else 200)
        for name, u in uppers.items():
            assert u >= ex.value * (1 - TOL), (norm, box, name, u, ex.value)
        assert low.value <= ex.value * (1 + TOL), (norm, box, low, ex.value)
        # the searches are not vacuous: the lower bound finds most of the exact constant
        assert low.value >= found * ex.value, (norm, box, low, ex.value)
        assert uppers["LipSDP-Neuron"] <= uppers["LipSDP-Layer"] * (1 + 1e-4)
        # these nets are small enough for the branch and bound to close its gap (default tol 1e-3)
        assert bab.status == "converged" and bab.value <= ex.value * (1 + 1e-3) + 1e-12, (norm, box, bab, ex.value)
        assert bab.lower <= ex.value * (1 + TOL)


@pytest.mark.parametrize("widths,seed", [((6,), 0), ((4, 4), 1), ((3, 3, 3), 2)])
def test_upper_exact_lower_on_small_nets(widths, seed):
    model = _net(widths, seed=seed)
    _check_one(model, None)
    _check_one(model, (-0.4, 0.6))


@pytest.mark.slow
def test_upper_exact_lower_on_many_random_nets():
    rng = np.random.default_rng(0)
    for seed in range(16):
        widths = tuple(int(w) for w in rng.integers(2, 7, size=rng.integers(1, 4)))
        model = _net(widths, seed=100 + seed)
        c = rng.uniform(-1, 1)
        # unbounded domains hide their steepest region far out: the search must find half of it there
        _check_one(model, None, fast=False, found=0.5)
        _check_one(model, (c - 0.3, c + 0.3), fast=False)


def test_branch_and_bound_closes_on_the_exact_value_and_is_sound_at_every_budget():
    model = _net((5, 4, 3), seed=100)  # the family's net the SDP bounds overshoot (LipSDP-Neuron / exact > 1.5)
    for norm, box in (("2", None), ("inf", None), ("2", (-2.0, 2.0))):
        lo, hi = box if box is not None else (None, None)
        ex = exact_lipschitz(model, norm, lo, hi).value
        full = branch_and_bound(model, norm, lo, hi, tol=0.0)
        assert full.status == "converged"
        assert full.value == pytest.approx(ex, rel=1e-9) and full.lower == pytest.approx(ex, rel=1e-9)
        # stopped early, the bound reached is still an upper bound, and it never rises with more nodes
        values = []
        for n in (1, 2, 4, 8, 16):
            r = branch_and_bound(model, norm, lo, hi, max_nodes=n, tol=0.0)
            assert r.value >= ex * (1 - TOL) and r.lower <= ex * (1 + TOL)
            assert r.status in ("node budget", "converged") and r.n_nodes <= n
            values.append(r.value)
        assert all(b <= a * (1 + 1e-12) for a, b in zip(values, values[1:])), values
        assert values[0] > ex * (1 + 1e-3)  # one node is not enough: the budget is what stopped it
    stopped = branch_and_bound(model, max_seconds=1e-9)
    assert stopped.status == "time budget" and stopped.value >= exact_lipschitz(model).value * (1 - TOL)


def test_exact_matches_a_dense_grid_on_one_dimensional_inputs():
    model = _net((5, 4), n_in=1, n_out=3, seed=3)
    xs = torch.linspace(-8, 8, 400_001, dtype=torch.float64)[:, None]
    J = jacobians(as_affine_net(model), xs)
    for norm in ("2", "inf"):
        ex = exact_lipschitz(model, norm)
        assert float(operator_norm(J, norm).max()) == pytest.approx(ex.value, rel=1e-9)
        sub = exact_lipschitz(model, norm, -0.5, 0.5)
        inside = (xs[:, 0] >= -0.5) & (xs[:, 0] <= 0.5)
        assert float(operator_norm(J[inside], norm).max()) == pytest.approx(sub.value, rel=1e-9)


def test_single_linear_layer_every_bound_is_the_spectral_norm():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 3)).double()
    sigma = float(torch.linalg.matrix_norm(model[0].weight.detach(), 2))
    rowsum = float(model[0].weight.detach().abs().sum(1).max())
    for value in (lipsdp(model).value, lipsdp(model, "layer").value, eclipse(model).value,
                  eclipse_fast(model).value, exact_lipschitz(model).value, lower_bound(model, steps=20).value,
                  lipsdp(model, lower=-1.0, upper=1.0).value, exact_lipschitz(model, "2", -1.0, 1.0).value,
                  classic.split_bound(model, (4,)), branch_and_bound(model).value):
        assert value == pytest.approx(sigma, rel=1e-9)
    assert exact_lipschitz(model, "inf").value == pytest.approx(rowsum, rel=1e-12)
    assert branch_and_bound(model, "inf").value == pytest.approx(rowsum, rel=1e-12)
    assert lipsdp(model, norm="inf").value == pytest.approx(rowsum, rel=1e-9)


def test_a_tiny_box_gives_the_local_jacobian_norm():
    model = _net((5, 5), seed=7)
    x = torch.tensor([0.13, -0.27], dtype=torch.float64)
    jn = float(operator_norm(jacobians(as_affine_net(model), x[None]), "2")[0])
    b = lipsdp(model, lower=x - 1e-6, upper=x + 1e-6)
    assert b.value == pytest.approx(jn, rel=1e-9)
    assert b.status == "closed form"  # IBP fixed every ReLU, no SDP needed


def test_cnn_is_unrolled_exactly_and_bounded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).double()
    net = as_affine_net(model, (1, 8, 8))
    assert net.widths == [32, 8]
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    low = lower_bound(net, steps=60, n_starts=16).value
    neuron = lipsdp(net).value
    assert neuron >= low * (1 - TOL)
    assert eclipse_fast(net).value >= neuron * (1 - 1e-4)
    assert classic.split_bound(model, (1, 8, 8)) >= low
    with torch.no_grad():
        assert torch.allclose(model(x).reshape(16, -1), forward(net, x), atol=1e-10)


def test_ladder_orders_its_rungs():
    model = _net((4, 4), seed=11)
    df = ladder(model, (2,), n_starts=16, steps=60)
    assert list(df.method) == ["product", "split", "ECLipsE-Fast", "ECLipsE", "LipSDP-Layer", "LipSDP-Neuron",
                               "branch-and-bound", "exact", "lower bound"]
    assert (df.status == "ok").all(), df
    v = dict(zip(df.method, df.value))
    for m in ("product", "split", "ECLipsE-Fast", "ECLipsE", "LipSDP-Layer", "LipSDP-Neuron", "branch-and-bound"):
        assert v[m] >= v["exact"] * (1 - TOL) >= v["lower bound"] * (1 - 2 * TOL)
    assert v["split"] <= v["product"] * (1 + 1e-9) and v["LipSDP-Neuron"] <= v["LipSDP-Layer"] * (1 + 1e-4)
    assert tightest(df)["value"] == min(v[m] for m in ("product", "split", "ECLipsE-Fast", "ECLipsE",
                                                       "LipSDP-Layer", "LipSDP-Neuron", "branch-and-bound"))
    assert v["branch-and-bound"] <= v["exact"] * (1 + 1e-3)
    capped = ladder(model, (2,), methods=("branch-and-bound",), bab_max_nodes=1).iloc[0]
    assert capped.status.startswith("budget: stopped by the node budget (1 nodes)") and capped.value >= v["exact"]
    skipped = ladder(model, (2,), methods=("branch-and-bound",), bab_max_relus=7).iloc[0]
    assert skipped.status == "skipped: 8 ReLUs > bab_max_relus 7" and skipped.value != skipped.value


def test_direction_gains_known_answers_on_a_linear_map():
    torch.manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))
    S = torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    W = U @ torch.diag(S) @ V[:5]
    model = nn.Linear(40, 5).double()
    with torch.no_grad():
        model.weight.copy_(W)
    x = torch.randn(6, 40, dtype=torch.float64)
    top = V[0].expand(6, 40)
    df = direction_gains(nn.Sequential(model), x, {"top": top}, n_random=2000).set_index(["layer", "direction"])
    e2e = df.loc["end to end"]
    assert e2e.loc["top", "gain_mean"] == pytest.approx(10.0, rel=1e-9)
    assert e2e.loc["top", "cos_top"] == pytest.approx(1.0, rel=1e-9)
    assert e2e.loc["worst", "gain_mean"] == pytest.approx(10.0, rel=1e-9)
    fro = float(W.norm()) / np.sqrt(40)
    assert e2e.loc["random", "frobenius_estimate"] == pytest.approx(fro, rel=1e-9)
    # E||Wr||^2 / ||r||^2 = ||W||_F^2 / d, so the RMS random gain is the Frobenius estimate
    assert e2e.loc["random", "gain_rms"] == pytest.approx(fro, rel=0.05)
    assert e2e.loc["random", "gain_mean"] < 0.9 * fro  # a few large singular values: mean < RMS (Jensen)
    assert e2e.loc["random", "row_space_frac"] == pytest.approx(5 / 40, rel=0.15)


def test_adversarial_directions_gain_more_than_random_ones(mlp, data):
    from univ.adversarial import pgd
    from univ.adversarial.deepfool import deepfool

    x, y = data.x_test[:20], data.y_test[:20]
    r_pgd = pgd(mlp, x, y, eps=0.05, norm="2", steps=10, bounds=None) - x
    r_df = deepfool(mlp, x, y, bounds=None) - x
    df = direction_gains(mlp, x, {"PGD": r_pgd, "DeepFool": r_df}, input_shape=(1, 8, 8))
    e2e = df[df.layer == "end to end"].set_index("direction")
    assert e2e.loc["PGD", "gain_mean"] > 2 * e2e.loc["random", "gain_mean"]
    assert e2e.loc["PGD", "cos_top"] > 3 * e2e.loc["random", "cos_top"]
    assert (e2e["gain_mean"] <= e2e.loc["worst", "gain_mean"] * (1 + 1e-9)).all()

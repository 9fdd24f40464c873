"""Metrics: known answers, invariants (hypothesis), dictionary recovery, spliced accuracy."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import univ.sae as S


def test_known_values():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 2.0]])
    # total variance: (1 + 1) + (1 + 1) = 4; error 1
    assert S.fvu(x, x_hat) == pytest.approx(0.25)
    assert S.explained_variance(x, x_hat) == pytest.approx(0.75)
    assert S.mse(x, x_hat) == pytest.approx(0.25)
    z = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 3.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    assert S.l0(z) == pytest.approx(5 / 3)
    assert S.dead_fraction(z) == pytest.approx(0.25)
    assert S.dense_fraction(z, threshold=0.5) == pytest.approx(0.25)


finite = st.floats(-100, 100, allow_nan=False, width=64)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(3, 12), st.integers(1, 5)), elements=finite))
def test_fvu_invariants(x):
    if np.ptp(x, axis=0).max() < 1e-3:
        return
    assert S.fvu(x, x) == 0.0
    assert S.fvu(x, np.broadcast_to(x.mean(0), x.shape)) == pytest.approx(1.0)
    y = 3 * x + 1  # FVU is invariant to scaling and shifting both arguments together
    assert S.fvu(y, y + 0.3 * (y - y.mean(0))) == pytest.approx(0.09)


def test_bad_metric_inputs():
    with pytest.raises(ValueError, match="same number of samples"):
        S.fvu(np.ones((4, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="zero variance"):
        S.fvu(np.ones((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="x.*NaN"):
        S.fvu(np.array([[np.nan, 1.0], [1.0, 2.0]]), np.ones((2, 2)))
    x = np.arange(8.0).reshape(4, 2)
    for f in (S.fvu, S.mse):  # a (4, 1) or (4, 3) x_hat must not broadcast against (4, 2)
        with pytest.raises(ValueError, match="x_hat.*features"):
            f(x, x[:, :1])
        with pytest.raises(ValueError, match="x_hat.*features"):
            f(x, np.ones((4, 3)))
    with pytest.raises(TypeError, match="x: complex"):
        S.fvu(x.astype(np.complex128), x)


def test_dictionary_recovery_known_answers():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(8, 10, generator=g)
    M = M / M.norm(dim=0)
    perm = torch.randperm(10, generator=g)
    D = torch.cat([-M.T[perm], torch.randn(5, 8, generator=g)])  # sign flips and extra rows don't matter
    assert S.dictionary_recovery(D, M) == pytest.approx((1.0, 1.0))
    assert S.dictionary_recovery(D[:5], M)[1] == pytest.approx(0.5, abs=0.11)
    with pytest.raises(ValueError, match="dims"):
        S.dictionary_recovery(D[:, :4], M)


def test_evaluate_on_perfect_and_trained_sae():
    torch.manual_seed(0)
    sae = S.ReluSAE(4, 8)
    with torch.no_grad():  # an exact, sparse code: latents 0-3 are +e_i, 4-7 are -e_i
        eye = torch.eye(4)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_dec.zero_()
    x = torch.randn(50, 4)
    m = S.evaluate(sae, x)
    assert m.fvu == pytest.approx(0.0, abs=1e-10) and m.explained_variance == pytest.approx(1.0)
    assert m.l0 == pytest.approx(4.0) and m.dead_fraction == 0.0


def _identity_relu_sae(d: int):
    """A ReLU SAE with 2d latents (x+ and x- per input dimension) that reconstructs its input exactly."""
    sae = S.ReluSAE(d, 2 * d)
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    return sae


def test_spliced_accuracy_identity_and_broken():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    x = torch.randn(200, 4)
    y = model(x).argmax(-1)
    sae = _identity_relu_sae(4)
    res = S.spliced_accuracy(model, x, y, "0", sae)
    assert isinstance(res, S.SpliceResult)
    assert res.clean == 1.0 and res.spliced == pytest.approx(1.0) and res.recovered == pytest.approx(1.0)
    with torch.no_grad():
        sae.W_dec.mul_(0)
    res = S.spliced_accuracy(model, x, y, "0", sae, batch_size=64)
    assert res.spliced == res.zero_ablated and res.recovered == pytest.approx(0.0)
    with pytest.raises(ValueError, match="layer"):
        S.spliced_accuracy(model, x, y, "fc9", sae)
    with pytest.raises(ValueError, match="same number of samples"):
        S.spliced_accuracy(model, x, y[:-1], "0", sae)


def test_spliced_accuracy_on_a_transformerlens_hook_point():
    """A HookPoint's (batch, pos, d) output is reconstructed per position, as capture reads it."""
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    class Tiny(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(3, 4)
            self.hook_resid = HookPoint()
            self.unembed = torch.nn.Linear(4, 2)
            self.setup()

        def forward(self, x):  # x: (n, pos, 3) -> logits at the last position (n, 2)
            return self.unembed(self.hook_resid(torch.relu(self.embed(x))))[:, -1]

    torch.manual_seed(0)
    model = Tiny()
    x = torch.randn(64, 5, 3)
    y = model(x).argmax(-1)
    sae = _identity_relu_sae(4)
    res = S.spliced_accuracy(model, x, y, "hook_resid", sae)
    assert res.clean == 1.0 and res.spliced == pytest.approx(1.0)

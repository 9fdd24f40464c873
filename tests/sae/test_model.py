"""SAE kinds: shapes, invariants, input validation, training mechanics (streaming, checkpoint/resume)."""

import math

import pytest
import torch

import univ.sae as S

KINDS = list(S.SAE_KINDS)


def make(kind, d_in=8, d_sae=32, seed=0):
    cls = S.SAE_KINDS[kind]
    return cls(d_in, d_sae, seed=seed, **({"k": 4} if "k" in cls.hparam_names() else {}))




@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(400, 8, generator=g) * 3 + 1


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_nonnegative_codes(kind, x):
    sae = make(kind).fit(x, max_steps=30, eval_every=10, progress=False)
    z = sae.encode(x)
    assert z.shape == (400, 32) and bool((z >= 0).all())
    assert sae.decode(z).shape == (400, 8)
    out = sae(x)
    assert out.x_hat.shape == (400, 8) and out.loss.ndim == 0
    assert set(out.losses) >= {"mse"}


@pytest.mark.parametrize("kind", ["relu", "topk", "jumprelu"])
def test_forward_is_decode_of_encode(kind, x):
    sae = make(kind).fit(x, max_steps=30, eval_every=10, progress=False)
    with torch.no_grad():
        out = sae(x)
        torch.testing.assert_close(out.codes, sae.encode(x))
        torch.testing.assert_close(out.x_hat, sae.decode(sae.encode(x)))


def test_topk_keeps_at_most_k(x):
    z = make("topk").encode(x)
    assert int((z != 0).sum(1).max()) <= 4


def test_batchtopk_threshold_learned_and_used(x):
    sae = make("batchtopk")
    assert float(sae.threshold) < 0
    sae.fit(x, max_steps=40, eval_every=10, progress=False)
    th = float(sae.threshold)
    assert th > 0
    z = sae.encode(x)
    assert bool(((z == 0) | (z > th)).all())
    assert 1 <= (z != 0).sum(1).double().mean() <= 16


def test_jumprelu_threshold_gets_gradient(x):
    sae = make("jumprelu", seed=1)
    with torch.no_grad():
        sae.log_threshold.fill_(math.log(0.5))
    out = sae(x)
    out.loss.backward()
    assert sae.log_threshold.grad is not None and float(sae.log_threshold.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_fit_keeps_unit_decoder_rows_and_normalises_inputs(kind, x):
    sae = make(kind).fit(x, max_steps=40, eval_every=10, progress=False)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    assert float(sae.norm_scale) * float(x.norm(dim=1).mean()) == pytest.approx(math.sqrt(8), rel=1e-4)
    assert sae.n_steps_ == 40 and len(sae.history_) == 4


def test_fit_stops_early_on_plateau(x):
    sae = make("topk").fit(x, max_steps=20_000, eval_every=50, patience=2, tol=0.02, progress=False)
    assert sae.converged_ and sae.n_steps_ < 16_000  # stopped before the cap's own decay phase


def test_fit_loss_goes_down(x):
    sae = make("relu").fit(x, max_steps=300, eval_every=50, progress=False, sparsity_warmup_steps=1)
    h = sae.history_
    assert h["loss_mse"].iloc[-1] < 0.5 * h["loss_mse"].iloc[0]


def test_streaming_inputs(x):
    batches = [x[i:i + 70] for i in range(0, 400, 70)]  # ragged batches, re-chunked
    a = make("topk").fit(batches, batch_size=64, max_steps=30, eval_every=10, progress=False)
    b = make("topk").fit(lambda: iter(batches), batch_size=64, max_steps=30, eval_every=10, progress=False)
    torch.testing.assert_close(a.W_dec, b.W_dec)
    c = make("topk").fit((t for t in batches), batch_size=64, max_steps=1000, progress=False)
    assert c.n_steps_ == 400 // 64 + 1  # a one-shot generator: one pass, the last partial batch included


def test_checkpoint_resume_matches_uninterrupted(x, tmp_path):
    kw = dict(max_steps=60, eval_every=10, progress=False, patience=None, batch_size=64)
    ref = make("topk").fit(x, **kw)

    def crash(step, sae, rec):
        if step == 40:
            raise KeyboardInterrupt

    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        make("topk").fit(x, checkpoint=ck, checkpoint_every=20, callback=crash, **kw)
    resumed = make("topk").fit(x, checkpoint=ck, resume=True, **kw)
    assert resumed.n_steps_ == 60
    torch.testing.assert_close(resumed.W_dec, ref.W_dec, rtol=0, atol=0)
    torch.testing.assert_close(resumed.b_enc, ref.b_enc, rtol=0, atol=0)


def test_checkpoint_resume_of_a_stream(x, tmp_path):
    batches = [x[i:i + 64] for i in range(0, 384, 64)]  # re-iterable: a resumed run skips what it used
    kw = dict(max_steps=30, eval_every=10, progress=False, patience=None, batch_size=64, init_samples=128)
    ref = make("relu").fit(batches, **kw)

    def crash(step, sae, rec):
        if step == 20:
            raise KeyboardInterrupt

    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        make("relu").fit(batches, checkpoint=ck, checkpoint_every=10, callback=crash, **kw)
    resumed = make("relu").fit(batches, checkpoint=ck, resume=True, **kw)
    torch.testing.assert_close(resumed.W_enc, ref.W_enc, rtol=0, atol=0)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="k"):
        S.TopKSAE(8, 16, k=17)
    with pytest.raises(ValueError, match="k"):
        S.BatchTopKSAE(8, 16, k=0)
    with pytest.raises(ValueError, match="d_sae"):
        S.ReluSAE(8, 0)


@pytest.mark.parametrize("kind", KINDS)
def test_d_in_mismatch(kind, x):
    sae = make(kind)
    with pytest.raises(ValueError, match="d_in"):
        sae.encode(torch.randn(5, 9))
    with pytest.raises(ValueError, match="d_in"):
        sae.fit(torch.randn(50, 9), progress=False)


def test_nan_activations_name_the_batch(x):
    bad = x.clone()
    bad[123, 2] = float("nan")
    with pytest.raises(ValueError, match=r"acts.*NaN/Inf.*\(123, 2\)"):
        make("topk").fit(bad, progress=False)
    batches = [x[:100], x[100:200], bad[100:200].clone().fill_(float("inf"))]
    with pytest.raises(ValueError, match="acts batch 2"):
        make("relu").fit(batches, batch_size=50, init_samples=100, progress=False)
    with pytest.raises(ValueError, match="x.*NaN"):
        make("topk").encode(bad)


def test_numpy_and_float64_inputs(x):
    sae = make("topk").fit(x.double().numpy(), max_steps=20, eval_every=10, progress=False)
    assert sae.encode(x.double().numpy()).dtype == torch.float32


def test_sparse_topk_gradients_match_dense_reference():
    """TopK's sparse backward (univ.sae._sparse) equals autograd through the dense computation."""
    torch.manual_seed(0)
    sae = S.TopKSAE(6, 20, k=3, aux_k=4, dtype=torch.float64)
    x = torch.randn(30, 6, dtype=torch.float64)
    dead = torch.zeros(20, dtype=torch.bool)
    dead[::3] = True
    out = sae.training_step(x, dead, 1.0, False)
    sum(out.losses.values()).backward()
    sparse_grads = [p.grad.clone() for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec)]
    sae.zero_grad()
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    vals, idx = pre.topk(3, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    x_hat = z @ sae.W_dec + sae.b_dec
    mse = (x_hat - x).pow(2).sum(-1).mean() / 6
    av, ai = torch.where(dead, pre, torch.full_like(pre, -math.inf)).topk(4, dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, ai, torch.relu(av)) @ sae.W_dec
    e = (x - x_hat).detach()
    aux = sae.aux_coefficient * (e_hat - e).pow(2).sum() / (e - e.mean(0)).pow(2).sum()
    (mse + aux).backward()
    for got, p in zip(sparse_grads, (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec), strict=True):
        torch.testing.assert_close(got, p.grad)

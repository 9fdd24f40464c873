"""Crosscoders and universal SAEs: round trips per kind, errors that name the model, training plumbing,
tags with known answers."""

import numpy as np
import pytest
import torch

import univ.data
import univ.sae as S
from tests.named_errors import assert_named_error
from univ.sae import tags as T

D_INS = [6, 8, 10]


def _data(n=400, seed=0):
    return univ.data.shared_features(n=n, d_ins=D_INS, features_per_subset=2, p_active=0.1, seed=seed)


def _models():
    out = {kind: S.Crosscoder(D_INS, 24, kind=kind, k=3, seed=2) for kind in S.CROSSCODER_KINDS}
    out["universal"] = S.UniversalSAE(D_INS, 24, k=3, seed=2)
    return out


@pytest.fixture(scope="module")
def trained():
    gt = _data()
    return gt, {name: m.fit(gt.xs, max_steps=40, eval_every=10, progress=False) for name, m in _models().items()}


def test_kind_dispatch_and_hparams():
    cc = S.Crosscoder(D_INS, 24, kind="l1")
    assert type(cc) is S.L1Crosscoder and cc.kind == "l1" and cc.d_in == sum(D_INS) and cc.n_models == 3
    assert type(S.Crosscoder(D_INS, 48)) is S.BatchTopKCrosscoder
    assert [w.shape for w in cc.W_decs] == [(24, d) for d in D_INS]
    assert [w.shape for w in cc.W_encs] == [(d, 24) for d in D_INS]
    assert type(cc)(**cc.hparams()).hparams() == cc.hparams()
    assert_named_error(lambda: S.Crosscoder(D_INS, 24, kind="nope"), ValueError, "nope")
    assert_named_error(lambda: S.BatchTopKCrosscoder(D_INS, 24, kind="l1"), ValueError, "kind")


@pytest.mark.parametrize("name", ["batchtopk", "topk", "l1", "universal"])
def test_round_trip_bit_identical(name, trained, tmp_path):
    gt, models = trained
    m = models[name]
    back = S.load(S.save(m, tmp_path / name))
    assert type(back) is type(m) and back.hparams() == m.hparams()
    for (n1, t1), (n2, t2) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1
    z, z2 = T.joint_codes(m, gt.xs), T.joint_codes(back, gt.xs)
    assert torch.equal(z, z2)
    for a, b in zip(m.decode(z), back.decode(z2), strict=True):
        assert torch.equal(a, b)


def test_interrupted_save_refused(trained, tmp_path):
    _, models = trained
    S.save(models["topk"], tmp_path / "a")
    S.save(models["l1"], tmp_path / "b")
    (tmp_path / "b" / "cfg.json").replace(tmp_path / "a" / "cfg.json")
    assert_named_error(lambda: S.load(tmp_path / "a"), ValueError, "different saves")


def test_training_reduces_error_and_fits_each_block(trained):
    gt, models = trained
    for name, m in models.items():
        z = T.joint_codes(m, gt.xs)
        for x, x_hat in zip(gt.xs, m.decode(z), strict=True):
            fvu = float(((x - x_hat.detach()) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
            assert fvu < 0.9, (name, fvu)
        # each model's block normalised to mean norm sqrt(d_m)
        scales = m.split(m.norm_scale)
        for x, s, d in zip(gt.xs, scales, D_INS, strict=True):
            assert float((x * s).norm(dim=1).mean()) == pytest.approx(d ** 0.5, rel=0.05)


def test_batchtopk_codes_have_k_per_row_on_average():
    gt = _data(n=600)
    cc = S.Crosscoder(D_INS, 24, kind="batchtopk", k=3, seed=0)
    cc.train()
    out = cc.training_step(cc.check_inputs(gt.xs), None, 1.0, True)
    assert int((out.codes > 0).sum()) <= 3 * 600
    assert float(out.l0) == pytest.approx(float((out.codes > 0).sum(1).float().mean()))
    assert float(cc.threshold) > 0


def test_sparse_batchtopk_matches_dense_gradients():
    gt = _data(n=64)
    cc = S.Crosscoder(D_INS, 24, kind="batchtopk", k=3, seed=1, dtype=torch.float64)
    xn = cc.check_inputs(gt.xs)
    out = cc.training_step(xn, None, 1.0, True)
    out.losses["mse"].backward()
    sparse = {n: p.grad.clone() for n, p in cc.named_parameters()}
    cc.zero_grad()
    mask = out.codes.detach() > 0
    codes = torch.relu(cc.pre_activations(xn)) * mask
    cc.reconstruction_loss(codes @ cc.W_dec + cc.b_dec, xn).backward()
    for n, p in cc.named_parameters():
        assert torch.allclose(sparse[n], p.grad, atol=1e-10), n


class _Stop(Exception):
    pass


def _stop_at(step):
    def cb(s, model, rec):
        if s == step:
            raise _Stop
    return cb


@pytest.mark.parametrize("make", [lambda: S.Crosscoder(D_INS, 24, kind="batchtopk", k=3),
                                  lambda: S.UniversalSAE(D_INS, 24, k=3)], ids=["crosscoder", "universal"])
def test_stream_and_resume_match_uninterrupted(make, tmp_path):
    gt = _data(n=300)
    batches = [[x[i:i + 50] for x in gt.xs] for i in range(0, 300, 50)]  # a re-iterable stream of batch lists
    kw = {"max_steps": 30, "eval_every": 10, "batch_size": 64, "progress": False, "patience": None,
          "checkpoint": tmp_path / "ck", "checkpoint_every": 10}
    full = make().fit(batches, **{**kw, "checkpoint": tmp_path / "full"})
    with pytest.raises(_Stop):
        make().fit(batches, **kw, callback=_stop_at(20))
    resumed = make().fit(batches, **kw, resume=True)
    assert resumed.n_steps_ == 30
    for (n1, t1), (n2, t2) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1


def test_bad_inputs_name_the_model():
    gt = _data(n=50)
    cc = S.Crosscoder(D_INS, 24, kind="topk", k=3)
    xs = [x.numpy() for x in gt.xs]
    nan = [xs[0], xs[1].copy(), xs[2]]
    nan[1][3, 2] = np.nan
    assert_named_error(lambda: cc.encode(nan), ValueError, r"xs\[1\] \(model 1\): contains 1 NaN")
    assert_named_error(lambda: cc.fit(nan, progress=False), ValueError, r"model 1")
    assert_named_error(lambda: cc.encode(xs[:2]), ValueError, r"expected 3 arrays .* got 2")
    assert_named_error(lambda: cc.encode([xs[0], xs[1][:40], xs[2]]), ValueError,
                       r"xs\[1\] \(model 1\): has 40 rows but model 0 has 50")
    assert_named_error(lambda: cc.encode([xs[0], xs[2], xs[1]]), ValueError,
                       r"xs\[1\] \(model 1\): expected 8 features")
    bad_stream = [[x[:20] for x in xs], nan]
    assert_named_error(lambda: cc.fit(bad_stream, progress=False, max_steps=5), ValueError,
                       r"xs batch 1\[1\] \(model 1\)")
    assert_named_error(lambda: S.Crosscoder(D_INS, 24, kind="topk", k=25), ValueError, r"k: .*24")
    assert_named_error(lambda: S.UniversalSAE(D_INS, 24, k=25), ValueError, r"k: .*24")
    assert_named_error(lambda: S.Crosscoder([6], 24), ValueError, "at least 2 models")
    assert_named_error(lambda: S.Crosscoder([6, 0], 24), ValueError, r"d_ins\[1\] \(model 1\)")
    u = S.UniversalSAE(D_INS, 24, k=3)
    assert_named_error(lambda: u.encode(xs[0], model=3), ValueError, "model")
    assert_named_error(lambda: u.encode(xs[0], model=1), ValueError, r"x \(model 1\): expected 8 features")


def test_tags_known_answer_from_decoder_norms():
    cc = S.Crosscoder([4, 4, 4], 5, kind="l1")
    norms = torch.tensor([[1, 1, 1], [1, 0.5, 0], [1, 0.1, 0], [0, 0, 1], [1, 0.12, 0.0]], dtype=torch.float32)
    with torch.no_grad():
        for m, w in enumerate(cc.W_decs):
            w.mul_(norms[:, m:m + 1] / w.norm(dim=1, keepdim=True))
    t = S.latent_tags(cc, model_names=["a", "b", "c"], n_bootstrap=50)
    assert t.table["subset"].tolist() == ["a+b+c", "a+b", "a", "c", "a+b"]
    assert t.subsets() == [(0, 1, 2), (0, 1), (0,), (2,), (0, 1)]
    counts = t.counts.set_index("subset")
    assert counts.loc["a+b", "count"] == 2 and counts.loc["shared (size>=2)", "count"] == 3
    assert counts.loc["size=1", "fraction"] == pytest.approx(0.4)
    assert counts.loc["a+b", "count_low"] <= 2 <= counts.loc["a+b", "count_high"]


def test_seed_stability_and_shuffle():
    a = S.Crosscoder(D_INS, 12, kind="topk", k=2, seed=0)
    b = S.Crosscoder(D_INS, 12, kind="topk", k=2, seed=1)
    with torch.no_grad():
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
        b.W_dec.copy_(a.W_dec[perm])
        b.W_dec[[0]] = torch.randn(sum(D_INS), generator=torch.Generator().manual_seed(5)) / sum(D_INS) ** 0.5
    st = S.seed_stability(b, a)
    assert torch.equal(st.partner, perm) and st.stable.sum() == 11 and not st.stable[0]
    xs = [torch.arange(10.0)[:, None] * torch.ones(1, d) for d in (2, 3)]
    sh = S.shuffle_pairing(xs, seed=0)
    assert torch.equal(sh[0], xs[0]) and not torch.equal(sh[1], xs[1])
    assert torch.equal(sh[1].sort(0).values, xs[1])


def test_universal_cross_r2_and_entropy(trained):
    gt, models = trained
    u = models["universal"]
    r2 = u.cross_r2(gt.xs)
    assert r2.shape == (3, 3) and bool((r2.diagonal() > 0.1).all())
    ent, rates = u.firing_entropy(gt.xs)
    live = ~torch.isnan(ent)
    assert bool(((ent[live] >= -1e-9) & (ent[live] <= 1 + 1e-9)).all()) and rates.shape == (24, 3)


def test_ground_truth_is_what_it_says():
    gt = univ.data.shared_features(n=500, d_ins=(5, 7), features_per_subset=3, noise=0.0, gain_spread=3.0)
    assert gt.subsets() == [(0,)] * 3 + [(1,)] * 3 + [(0, 1)] * 3
    for m, x in enumerate(gt.xs):
        expect = (gt.coefficients.double() * gt.gains[:, m].double()) @ gt.directions[m].double()
        assert torch.allclose(x.double(), expect, atol=1e-5)
        assert torch.equal(gt.directions[m].norm(dim=1) > 0, gt.membership[:, m])
    g = gt.gains[gt.membership.sum(1) > 1]
    assert bool(((g >= 1 / 3 - 1e-6) & (g <= 1)).all()) and float(g.min()) < 0.9
    assert torch.equal(gt.gains[:6].sum(1), torch.ones(6))
    assert_named_error(lambda: univ.data.shared_features(d_ins=(5,)), ValueError, "at least 2 models")
    assert_named_error(lambda: univ.data.shared_features(d_ins=(5, 6), subsets=[(0, 2)]), ValueError,
                       r"subsets\[0\]")


def test_pairwise_subsets_known_answer():
    gt = _data(n=300)
    sae = S.TopKSAE(6, 12, k=2).fit(gt.xs[0], max_steps=20, progress=False)
    other = S.TopKSAE(6, 12, k=2, seed=9)  # untrained, another seed: codes unrelated to sae's
    codes, subsets, decs = T.pairwise_subsets([sae, sae], [gt.xs[0], gt.xs[0]])
    live = (sae.encode(gt.xs[0]) > 0).any(0).tolist() * 2
    assert codes.shape == (300, 24) and [s for s, a in zip(subsets, live) if a] == [(0, 1)] * sum(live)
    _, subsets, _ = T.pairwise_subsets([sae, other], [gt.xs[0], torch.randn(300, 6)])
    assert all(s in ((0,), (1,)) for s in subsets)


@pytest.mark.parametrize("kind", ["batchtopk", "topk", "l1"])
def test_model_sae_view_is_the_crosscoder_without_the_others(kind, trained, tmp_path):
    gt, models = trained
    cc = models[kind]
    m = 1
    view = cc.model_sae(m)
    quiet = [b / s[0] for b, s in zip(cc.split(cc.b_dec.detach()), cc.split(cc.norm_scale))]
    xs = [gt.xs[i] if i == m else quiet[i].expand(len(gt.xs[m]), -1) for i in range(3)]
    assert torch.allclose(view.encode(gt.xs[m]), cc.encode(xs), atol=1e-5)
    assert torch.allclose(view.decode(view.encode(gt.xs[m])), cc.decode(cc.encode(xs))[m], atol=1e-5)
    back = S.load(S.save(view, tmp_path / "view", hook_name="blocks.0.hook"))
    assert torch.equal(back.encode(gt.xs[m]), view.encode(gt.xs[m]))


@pytest.mark.parametrize("kind", ["batchtopk", "topk"])
def test_calibrated_encoder_reconstructs_at_the_least_squares_scale(kind):
    gt = _data(n=600)
    cc = S.Crosscoder(D_INS, 48, kind=kind, k=3, seed=1)
    x = torch.cat(gt.xs, 1)
    with torch.no_grad():
        cc.b_dec.copy_(x.mean(0))
    with torch.no_grad():
        before = cc._training_codes(cc.pre_activations(x))
        W0 = cc.W_enc.clone()
        alpha = cc.calibrate_encoder(x, chunk=600)
        after = cc._training_codes(cc.pre_activations(x))
    assert 0 < alpha < 1  # the tied initialisation's largest projections overshoot
    torch.testing.assert_close(cc.W_enc.detach(), alpha * W0)
    assert torch.equal(after > 0, before > 0)  # the same latents, rescaled
    r = (after @ cc.W_dec).detach()
    assert float((r * (x - cc.b_dec.detach())).sum() / r.pow(2).sum()) == pytest.approx(1.0, abs=1e-5)
    assert cc.calibrate_encoder(x, chunk=600) == pytest.approx(1.0, abs=1e-5)


def test_fit_calibrates_k_kinds_only():
    gt = _data()
    seen = {}
    for kind in S.CROSSCODER_KINDS:
        cc = S.Crosscoder(D_INS, 24, kind=kind, k=3, seed=2)
        real = cc.calibrate_encoder
        cc.calibrate_encoder = lambda xn, real=real, kind=kind: seen.setdefault(kind, real(xn))
        cc.fit(gt.xs, max_steps=2, progress=False)
    assert seen["l1"] == 1.0 and seen["topk"] != 1.0 and seen["batchtopk"] != 1.0


@pytest.mark.parametrize("name", ["batchtopk", "universal"])
def test_integer_index_of_a_joined_parameter_is_a_model(name, trained):
    m = trained[1][name]
    for i, d in enumerate(D_INS):
        assert torch.equal(m.W_dec[i], m.W_decs[i]) and m.W_dec[i].shape == (24, d)
        assert torch.equal(m.W_enc[i], m.W_encs[i]) and torch.equal(m.b_dec[i], m.split(m.b_dec)[i])
        assert torch.equal(m.W_dec[i, 5], m.W_decs[i][5])  # latent 5's decoder vector in model i
    assert torch.equal(m.W_dec[-1], m.W_decs[2])
    assert all(torch.equal(a, b) for a, b in zip(m.folded(-1).values(), m.folded(2).values()))
    assert torch.equal(m.W_dec[3:4], m.W_dec.detach()[3:4]) and m.W_dec[[3, 4]].shape == (2, sum(D_INS))
    assert m.decoder_norms()[:, 1].allclose(m.W_dec[1].double().norm(dim=1))
    assert_named_error(lambda: m.W_dec[3], ValueError, r"model: W_dec\[3\] is model 3's block.*W_dec\[3:4\]")
    assert_named_error(lambda: m.b_dec[-4], ValueError, r"model: b_dec\[-4\].*-3 \.\. 2")


def test_joined_parameters_stay_blocks_through_copies_and_moves(tmp_path):
    import copy

    cc = S.Crosscoder(D_INS, 24, k=3, seed=4)
    with torch.no_grad():
        cc.W_dec[1] = 0.0  # model 1's block only
        cc.b_dec[2, 0] = 7.0
    with torch.no_grad():
        assert float(cc.W_decs[1].abs().sum()) == 0 and float(cc.W_decs[0].abs().sum()) > 0
        assert float(cc.b_dec[2][0]) == 7.0 and int((cc.b_dec != 0).sum()) == 1
    for other in (copy.deepcopy(cc), cc.double(), S.load(S.save(cc, tmp_path / "cc"))):
        assert other.W_dec[2].shape == (24, 10) and other.W_enc[0].shape == (6, 24)


def test_load_checks_kind_and_shape_of_multi_model_folders(trained, tmp_path):
    _, models = trained
    cc, us = S.save(models["topk"], tmp_path / "cc"), S.save(models["universal"], tmp_path / "us")
    assert type(S.load(cc, kind="crosscoder")) is S.TopKCrosscoder
    assert type(S.load(cc, kind="crosscoder-topk", d_in=D_INS, d_sae=24)) is S.TopKCrosscoder
    assert type(S.load(us, kind="universal", d_in=sum(D_INS))) is S.UniversalSAE
    for call, fragment in [
        (lambda: S.load(cc, kind="topk"), r"kind: expected a 'topk' SAE but .* holds a 'crosscoder-topk'.*"
                                          r"kind='crosscoder' or 'crosscoder-topk'"),
        (lambda: S.load(cc, kind="crosscoder-l1"), r"expected a 'crosscoder-l1' SAE but .* 'crosscoder-topk'"),
        (lambda: S.load(us, kind="crosscoder"), r"expected a 'crosscoder' SAE but .* holds a 'universal'"),
        (lambda: S.load(cc, d_sae=12), r"d_sae: expected 12 .* d_sae=24"),
        (lambda: S.load(cc, d_in=[6, 8]), r"d_in: expected the widths \[6, 8\] .* d_ins=\[6, 8, 10\]"),
        (lambda: S.load(cc, d_in=23), r"d_in: expected 23 .* joined width is 24"),
        (lambda: S.load(cc, kind="crosscoders"), r"unknown SAE kind 'crosscoders'.*'crosscoder'"),
    ]:
        assert_named_error(call, ValueError, fragment)
    single = S.save(S.TopKSAE(6, 12, k=2), tmp_path / "single")
    assert_named_error(lambda: S.load(single, kind="crosscoder"), ValueError,
                       r"expected a 'crosscoder' SAE but .* holds a 'topk' SAE")

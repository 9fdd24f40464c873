"""A new SAE kind is one subclass and one registry line, and then works through the whole public API:
fit, encode/decode, save/load, cached_sae. Also: the registries' refusals and what a kind must provide."""

import pandas as pd
import pytest
import torch

import univ.sae as S
from univ.cache import cached_sae


class Top1SAE(S.SAE):
    """A toy kind: each row keeps only its largest positive pre-activation (trained by the default
    training_step, the plain reconstruction loss)."""

    def activate(self, pre):
        vals, idx = pre.max(-1, keepdim=True)
        return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))


@pytest.fixture
def top1():
    S.SAE_KINDS.register("top1", Top1SAE)
    yield Top1SAE
    S.SAE_KINDS.unregister("top1")


@pytest.fixture(scope="module")
def x():
    return torch.randn(200, 6, generator=torch.Generator().manual_seed(0)) * 2 + 1


def test_toy_kind_through_the_public_api(top1, x, tmp_path):
    sae = top1(6, 12, seed=1).fit(x, max_steps=60, eval_every=20, progress=False)
    assert sae.kind == "top1" and sae.hparams() == {"d_in": 6, "d_sae": 12, "seed": 1}
    assert sae.history_["loss_mse"].iloc[-1] < sae.history_["loss_mse"].iloc[0]
    z = sae.encode(x)
    assert z.shape == (200, 12) and int((z != 0).sum(1).max()) == 1
    assert sae.decode(z).shape == (200, 6)
    back = S.load(S.save(sae, tmp_path / "saved"), kind="top1")
    assert type(back) is top1 and back.hparams() == sae.hparams()
    assert torch.equal(back.encode(x), z) and torch.equal(back.decode(z), sae.decode(z))


def test_toy_kind_through_cached_sae(top1, x, tmp_path):
    kw = dict(root=tmp_path, d_sae=12, seed=2, fit_max_steps=30, fit_progress=False)
    first = cached_sae("top1", x, **kw)
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("top1-")
    again = cached_sae("top1", x, **kw)  # loaded, not refitted
    assert type(again) is top1 and torch.equal(again.encode(x), first.encode(x))
    assert not hasattr(again, "history_") and hasattr(first, "history_")


def test_unregistered_kind_cannot_be_saved_or_loaded(x, tmp_path):
    S.SAE_KINDS.register("top1", Top1SAE)
    folder = S.save(Top1SAE(6, 12), tmp_path / "t")
    S.SAE_KINDS.unregister("top1")
    assert "top1" not in S.SAE_KINDS
    with pytest.raises(ValueError, match="not a univ SAE.*'top1'"):
        S.load(folder)
    with pytest.raises(ValueError, match="not a registered SAE kind"):
        S.save(Top1SAE(6, 12), tmp_path / "u")
    with pytest.raises(ValueError, match="unknown SAE kind 'top1'"):
        cached_sae("top1", x, root=tmp_path, d_sae=12)


def test_registry_refusals():
    with pytest.raises(ValueError, match="unknown SAE kind 'tpok'.*'topk'"):
        S.SAE_KINDS["tpok"]
    with pytest.raises(ValueError, match="already registered"):
        S.SAE_KINDS.register("topk", Top1SAE)
    assert list(S.SAE_KINDS)[:4] == ["relu", "topk", "batchtopk", "jumprelu"]
    assert S.SAE_KINDS["topk"] is S.TopKSAE


def test_hparams_come_from_the_constructor():
    assert S.TopKSAE.hparam_names() == ("d_in", "d_sae", "k", "aux_k", "aux_coefficient", "seed")
    sae = S.BatchTopKSAE(8, 16, k=3, threshold_beta=0.9, seed=4)
    assert type(sae)(**sae.hparams()).hparams() == sae.hparams()

    class Forgetful(S.SAE):  # a constructor argument not stored under its own name
        def __init__(self, d_in, d_sae, width_scale=2.0, *, seed=0, dtype=torch.float32):
            super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
            self.scale = width_scale

        def activate(self, pre):
            return torch.relu(pre)

    with pytest.raises(TypeError, match="width_scale"):
        Forgetful(4, 8).hparams()


def test_match_methods_registry(x):
    def first_latent(sae_a, acts_a, sae_b, acts_b, *, n_permutations=3, gen):
        return S.MatchResult("first", pd.DataFrame({"n": [n_permutations]}))

    S.MATCH_METHODS.register("first", first_latent)
    try:
        a, b = S.ReluSAE(6, 12), S.ReluSAE(6, 12, seed=1)
        assert S.match(a, x, b, x, method="first").table["n"].tolist() == [3]  # the method's own default
        assert S.match(a, x, b, x, method="first", n_permutations=7).table["n"].tolist() == [7]
    finally:
        S.MATCH_METHODS.unregister("first")
    with pytest.raises(ValueError, match="unknown matching method 'first'"):
        S.match(a, x, b, x, method="first")

"""save/load: SAELens layout, bit-identical round trip for every kind, and refusals with reasons."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import univ.sae as S

KINDS = list(S.SAE_KINDS)




def trained(kind, d_in=8, d_sae=24):
    cls = S.SAE_KINDS[kind]
    kw = {"k": 3} if "k" in cls.hparam_names() else {}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, d_in, generator=g) * 2 + 0.5
    return cls(d_in, d_sae, seed=3, **kw).fit(x, max_steps=40, eval_every=10, progress=False), x


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_bit_identical(kind, tmp_path):
    sae, x = trained(kind)
    folder = S.save(sae, tmp_path / kind)
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == 8 and cfg["d_sae"] == 24 and cfg["univ"]["kind"] == kind
    assert set(load_file(str(folder / "sae_weights.safetensors"))) >= {"W_enc", "b_enc", "W_dec", "b_dec"}
    back = S.load(folder)
    assert type(back) is type(sae) and back.hparams() == sae.hparams()
    for (n1, t1), (n2, t2) in zip(sae.state_dict().items(), back.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(t1, t2), n1
    z = sae.encode(x)
    assert torch.equal(z, back.encode(x))
    assert torch.equal(sae.decode(z), back.decode(z))


def test_wrong_kind_or_shape_refused(tmp_path):
    sae, _ = trained("topk")
    folder = S.save(sae, tmp_path / "a")
    with pytest.raises(ValueError, match="expected a 'relu' SAE.*'topk'"):
        S.load(folder, kind="relu")
    with pytest.raises(ValueError, match="d_in: expected 16"):
        S.load(folder, d_in=16)
    with pytest.raises(ValueError, match="d_sae: expected 48"):
        S.load(folder, d_sae=48)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["d_sae"] = cfg["univ"]["hparams"]["d_sae"] = 30
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="shape"):
        S.load(folder)


def test_missing_tensor_and_foreign_files_refused(tmp_path):
    sae, _ = trained("jumprelu")
    folder = S.save(sae, tmp_path / "j")
    w = load_file(str(folder / "sae_weights.safetensors"))
    del w["log_threshold"]
    save_file(w, str(folder / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="log_threshold"):
        S.load(folder)
    with pytest.raises(ValueError, match="does not hold"):
        S.load(tmp_path / "nothing-here")
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "cfg.json").write_text(json.dumps({"architecture": "gated", "d_in": 8, "d_sae": 24}))
    save_file({"W_enc": torch.zeros(8, 24)}, str(other / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="not a univ SAE"):
        S.load(other)

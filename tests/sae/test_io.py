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
    assert set(load_file(str(folder / "sae_weights.safetensors"))) == set(sae.saelens_tensors())
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
    w = load_file(str(folder / "univ_state.safetensors"))
    del w["log_threshold"]
    save_file(w, str(folder / "univ_state.safetensors"), metadata={"univ_save_id": json.loads(
        (folder / "cfg.json").read_text())["univ"]["save_id"]})
    with pytest.raises(ValueError, match="log_threshold"):
        S.load(folder)
    with pytest.raises(ValueError, match="does not hold"):
        S.load(tmp_path / "nothing-here")
    other = tmp_path / "foreign"
    other.mkdir()
    (other / "cfg.json").write_text(json.dumps({"architecture": "crosscoder", "d_in": 8, "d_sae": 24}))
    save_file({"W_enc": torch.zeros(8, 24)}, str(other / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="foreign' holds a SAELens SAE of architecture 'crosscoder'"):
        S.load(other)


@pytest.mark.parametrize("kind", KINDS)
def test_format_1_folders_still_load_bit_identical(kind, tmp_path):
    """univ's first format: every tensor (norm_scale, log_threshold, ...) in sae_weights.safetensors."""
    sae, x = trained(kind)
    folder = tmp_path / kind
    folder.mkdir()
    save_file({k: v.detach().contiguous() for k, v in sae.export_tensors().items()},
              str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": sae.architecture, "d_in": 8, "d_sae": 24, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "expected_average_only_in", "metadata": {},
        "univ": {"kind": kind, "hparams": sae.hparams(), "format_version": 1}}))
    back = S.load(folder)
    z = sae.encode(x)
    assert torch.equal(back.encode(x), z) and torch.equal(back.decode(z), sae.decode(z))


def test_a_folder_mixing_two_saves_is_refused(tmp_path):
    a, _ = trained("topk")
    b = S.TopKSAE(8, 24, k=3, seed=9)
    S.save(a, tmp_path / "a")
    S.save(b, tmp_path / "b")
    (tmp_path / "a" / "sae_weights.safetensors").write_bytes((tmp_path / "b" / "sae_weights.safetensors").read_bytes())
    with pytest.raises(ValueError, match="files of different saves"):
        S.load(tmp_path / "a")
    (tmp_path / "a" / "univ_state.safetensors").unlink()
    with pytest.raises(ValueError, match="lacks univ_state.safetensors"):
        S.load(tmp_path / "a")


def test_metadata_written_and_restored(tmp_path):
    sae, _ = trained("relu")
    sae.metadata.update(hook_name="blocks.0.hook_resid_post", model_name="gpt2", dataset_path="text:tiny")
    folder = S.save(sae, tmp_path / "m", context_size=128, prepend_bos=True, model_name="gpt2-small")
    md = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert md["hook_name"] == "blocks.0.hook_resid_post" and md["model_name"] == "gpt2-small"
    assert md["context_size"] == 128 and md["prepend_bos"] is True and md["dataset_path"] == "text:tiny"
    assert md["sae_lens_version"] == "6.0.0" and md["sae_lens_training_version"] is None and md["univ_version"]
    back = S.load(folder)
    assert back.metadata == {"hook_name": "blocks.0.hook_resid_post", "model_name": "gpt2-small",
                             "context_size": 128, "prepend_bos": True, "dataset_path": "text:tiny"}
    empty = json.loads((S.save(trained("topk")[0], tmp_path / "e") / "cfg.json").read_text())["metadata"]
    assert {k: empty[k] for k in ("hook_name", "model_name", "context_size", "prepend_bos")} == dict.fromkeys(
        ("hook_name", "model_name", "context_size", "prepend_bos"))


@pytest.mark.parametrize("bad,exc,fragment", [
    ({"context_size": 0}, ValueError, "context_size: must be >= 1"),
    ({"prepend_bos": "yes"}, TypeError, "prepend_bos must be a bool"),
    ({"hook_name": 3}, TypeError, "hook_name must be a str"),
    ({"metadata": {"x": object()}}, TypeError, "metadata: values must be JSON"),
    ({"metadata": [1]}, TypeError, "metadata: expected a dict"),
])
def test_bad_metadata_refused(bad, exc, fragment, tmp_path):
    with pytest.raises(exc, match=fragment):
        S.save(S.ReluSAE(4, 8), tmp_path / "x", **bad)

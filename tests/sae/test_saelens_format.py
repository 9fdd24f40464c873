"""SAELens's folder format, without SAELens: univ's exports read by an independent re-implementation of
SAELens's (6.x) inference forward, and hand-written SAELens folders (cfg.json fields and state dict names
as SAELens writes them) read by univ.sae.load, for every architecture; round trips bit-identical."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import univ.sae as S

D_IN, D_SAE = 8, 24
# SAELens's state dict per inference architecture (load_from_disk loads it strictly)
NAMES = {"standard": {"W_enc", "b_enc", "W_dec", "b_dec"}, "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
         "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
         "gated": {"W_enc", "b_gate", "r_mag", "b_mag", "W_dec", "b_dec"}}
IDENTITY_NORMS = ("none", "expected_average_only_in")


def reference(cfg: dict, w: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens's encode and decode(encode(x)), written from its formulas: (n, d_sae) codes, (n, d_in)."""
    assert cfg["normalize_activations"] in IDENTITY_NORMS  # inference applies nothing for these
    arch = cfg["architecture"]
    x = x.to(w["W_enc"].dtype) - w["b_dec"] * cfg.get("apply_b_dec_to_input", True)
    scale = w["W_dec"].norm(dim=-1) if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm") else 1
    if arch == "gated":
        gate = (x @ w["W_enc"] + w["b_gate"] > 0).to(x.dtype)
        z = gate * F.relu(x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    else:
        pre = x @ w["W_enc"] + w["b_enc"]
        if arch == "standard":
            z = F.relu(pre)
        elif arch == "jumprelu":
            z = F.relu(pre) * (pre > w["threshold"]).to(x.dtype)
        else:
            vals, idx = (pre * scale).topk(cfg["k"], dim=-1, sorted=False)
            z = torch.zeros_like(pre).scatter(-1, idx, F.relu(vals))
    return z, (z / scale) @ w["W_dec"] + w["b_dec"]


def data(scale=1.0, n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, D_IN, generator=g) * 2 + 0.5) * scale


def trained(kind, normalize, scale):
    cls = S.SAE_KINDS[kind]
    kw = {"k": 3} if "k" in cls.hparam_names() else {}
    x = data(scale)
    return cls(D_IN, D_SAE, seed=3, **kw).fit(x, max_steps=40, eval_every=10, normalize=normalize,
                                              progress=False), x


def close(a, b):
    """Equal to 1e-5 of the values' scale (float32 rounding of folded weights, not a formula difference)."""
    assert a.shape == b.shape
    err = float((a.detach().double() - b.detach().double()).abs().max())
    assert err <= 1e-5 * max(1.0, float(b.detach().abs().max())), err


CASES = [(k, norm, scale) for k in S.SAE_KINDS for norm, scale in ((False, 1.0), (True, 30.0))]


@pytest.mark.parametrize("kind,normalize,scale", CASES)
def test_univ_exports_compute_univs_maps_in_saelens(kind, normalize, scale, tmp_path):
    sae, x = trained(kind, normalize, scale)
    assert (float(sae.norm_scale) != 1.0) == normalize
    folder = S.save(sae, tmp_path / kind)
    cfg = json.loads((folder / "cfg.json").read_text())
    w = load_file(str(folder / "sae_weights.safetensors"))
    assert cfg["normalize_activations"] == "none" and cfg["apply_b_dec_to_input"] is True
    assert set(w) == NAMES[cfg["architecture"]]
    assert cfg["metadata"]["sae_lens_version"] >= "6" and "univ" in cfg
    z, x_hat = reference(cfg, w, x)
    close(z, sae.encode(x))
    close(x_hat, sae.decode(sae.encode(x)))
    back = S.load(folder)
    assert torch.equal(back.encode(x), sae.encode(x)) and torch.equal(back.decode(z), sae.decode(z))


def test_batchtopk_is_written_as_saelens_writes_its_own(tmp_path):
    sae, x = trained("batchtopk", True, 5.0)
    cfg = json.loads((S.save(sae, tmp_path / "b") / "cfg.json").read_text())
    w = load_file(str(tmp_path / "b" / "sae_weights.safetensors"))
    assert cfg["architecture"] == "jumprelu" and torch.equal(w["threshold"], sae.threshold.expand(D_SAE))
    fresh = S.BatchTopKSAE(D_IN, D_SAE, k=3)  # never trained: per-row TopK
    cfg = json.loads((S.save(fresh, tmp_path / "f") / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["k"] == 3
    close(reference(cfg, load_file(str(tmp_path / "f" / "sae_weights.safetensors")), x)[0], fresh.encode(x))


# ---- folders as SAELens writes them ----


def saelens_folder(path, arch, dtype=torch.float32, seed=0, **cfg_fields):
    """A folder as SAELens 6's ``save_model`` writes one: random weights, decoder rows not unit-norm."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.3):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * s).to(dtype)

    w = {"W_enc": r(D_IN, D_SAE), "W_dec": r(D_SAE, D_IN, s=0.5), "b_dec": r(D_IN)}
    if arch == "gated":
        w.update(b_gate=r(D_SAE, s=0.1), r_mag=r(D_SAE, s=0.2), b_mag=r(D_SAE, s=0.1))
    else:
        w["b_enc"] = r(D_SAE, s=0.1)
    if arch == "jumprelu":
        w["threshold"] = r(D_SAE).abs() + 0.05
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": str(dtype).removeprefix("torch."), "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.5.1", "sae_lens_training_version": "6.5.1",
                        "hook_name": "blocks.3.hook_resid_post", "model_name": "gpt2", "context_size": 128,
                        "prepend_bos": True, "hook_head_index": None},
           "architecture": arch}
    if arch == "topk":
        cfg.update(k=4, rescale_acts_by_decoder_norm=False)
    cfg.update(cfg_fields)
    path.mkdir()
    save_file(w, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps(cfg))
    return cfg, w


READABLE = [("standard", {}, "relu"), ("topk", {}, "topk"), ("jumprelu", {}, "jumprelu"), ("gated", {}, "gated"),
            ("topk", {"rescale_acts_by_decoder_norm": True}, "topk"),
            ("standard", {"apply_b_dec_to_input": False}, "relu"),
            ("gated", {"apply_b_dec_to_input": False}, "gated"),
            ("jumprelu", {"normalize_activations": "expected_average_only_in"}, "jumprelu"),
            ("topk", {"reshape_activations": "hook_z"}, "topk")]


@pytest.mark.parametrize("arch,fields,kind", READABLE, ids=lambda v: str(v))
def test_saelens_folders_give_saelens_outputs(arch, fields, kind, tmp_path):
    cfg, w = saelens_folder(tmp_path / "s", arch, **fields)
    sae = S.load(tmp_path / "s")
    assert sae.kind == kind and float(sae.norm_scale) == 1.0
    assert sae.metadata == {"hook_name": "blocks.3.hook_resid_post", "model_name": "gpt2", "context_size": 128,
                            "prepend_bos": True, "hook_head_index": None}
    x = data(3.0)
    z, x_hat = reference(cfg, w, x)
    if arch == "jumprelu" or fields:  # the threshold is held as its log, or weights are folded (float rounding)
        close(sae.encode(x), z)
        close(sae.decode(z), x_hat)
    else:  # the same operations as SAELens's
        assert torch.equal(sae.encode(x), z) and torch.equal(sae.decode(z), x_hat)
    # univ's save of it: SAELens reads the same maps back, univ the same SAE bit for bit
    folder = S.save(sae, tmp_path / "u")
    cfg2 = json.loads((folder / "cfg.json").read_text())
    assert cfg2["metadata"]["hook_name"] == "blocks.3.hook_resid_post" and cfg2["metadata"]["context_size"] == 128
    z2, x_hat2 = reference(cfg2, load_file(str(folder / "sae_weights.safetensors")), x)
    close(z2, z)
    close(x_hat2, x_hat)
    back = S.load(folder)
    assert torch.equal(back.encode(x), sae.encode(x)) and torch.equal(back.decode(z), sae.decode(z))


def test_float64_and_pre_6_configs(tmp_path):
    cfg, w = saelens_folder(tmp_path / "d", "standard", dtype=torch.float64)
    sae = S.load(tmp_path / "d")
    x = data().double()
    assert sae.dtype == torch.float64 and torch.equal(sae.encode(x), reference(cfg, w, x)[0])
    # before 6.0: metadata at the top level, hook_point, activation_fn_str + activation_fn_kwargs for TopK
    old = tmp_path / "old"
    _, w = saelens_folder(old, "topk", seed=1)
    flat = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "hook_point": "blocks.1.hook_mlp_out",
            "model_name": "gelu-1l", "context_size": 64, "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": 5}, "normalize_activations": False, "apply_b_dec_to_input": True,
            "sae_lens_training_version": "3.12.0"}
    (old / "cfg.json").write_text(json.dumps(flat))
    sae = S.load(old)
    assert sae.kind == "topk" and sae.k == 5
    assert sae.metadata == {"hook_name": "blocks.1.hook_mlp_out", "model_name": "gelu-1l", "context_size": 64,
                            "prepend_bos": True}
    x = data()
    ref = reference({"architecture": "topk", "k": 5, "normalize_activations": "none"}, w, x)[0]
    assert torch.equal(sae.encode(x), ref)


@pytest.mark.parametrize("arch,fields,fragment", [
    ("standard", {"normalize_activations": "layer_norm"}, "normalize_activations='layer_norm'"),
    ("topk", {"normalize_activations": "constant_norm_rescale"}, "'constant_norm_rescale', which normalises each"),
    ("standard", {"normalize_activations": "sqrt"}, "'sqrt', which is not a normalisation SAELens knows"),
    ("jumprelu_transcoder", {}, "architecture 'jumprelu_transcoder', which univ cannot read"),
    ("batchtopk", {}, "architecture 'batchtopk', which univ cannot read"),
    ("topk", {"k": None}, "SAELens 'topk' fields a 'topk' SAE does not take"),
])
def test_unreadable_saelens_folders_are_refused_naming_path_and_architecture(arch, fields, fragment, tmp_path):
    saelens_folder(tmp_path / "s", arch, **fields)
    with pytest.raises(ValueError, match=fragment) as info:
        S.load(tmp_path / "s")
    assert str(tmp_path / "s") in str(info.value)


def test_saelens_state_dicts_must_match_exactly(tmp_path):
    saelens_folder(tmp_path / "s", "standard")
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    save_file({**w, "finetuning_scaling_factor": torch.ones(D_SAE)}, str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"holds tensors \['finetuning_scaling_factor'\] that a SAELens 'standard'"):
        S.load(tmp_path / "s")
    del w["b_enc"]
    save_file(w, str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match="lacks the tensor 'b_enc'"):
        S.load(tmp_path / "s")
    saelens_folder(tmp_path / "j", "jumprelu")
    with pytest.raises(ValueError, match="kind: expected a 'topk' SAE but .* holds a 'jumprelu' SAE"):
        S.load(tmp_path / "j", kind="topk")

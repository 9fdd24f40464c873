import pytest
import torch
from torch import nn

import univ
from univ.models import build_model


def test_mlp_capture_equals_direct_submodule_calls():
    m = build_model("mlp", widths=(16, 8), seed=0)
    x = torch.rand(37, 1, 8, 8)
    acts = univ.capture(m, x, ["fc1", "act1", "act2", "out"], batch_size=10)
    h1 = torch.relu(m.fc1(x.reshape(37, -1)))
    h2 = torch.relu(m.fc2(h1))
    torch.testing.assert_close(acts["fc1"], m.fc1(x.reshape(37, -1)))
    torch.testing.assert_close(acts["act1"], h1)
    torch.testing.assert_close(acts["act2"], h2)
    torch.testing.assert_close(acts["out"], m.out(h2))
    assert list(acts) == ["fc1", "act1", "act2", "out"]


def test_cnn_reductions():
    m = build_model("cnn", channels=(4, 6), seed=0)
    x = torch.rand(9, 1, 8, 8)
    direct = torch.relu(m.conv1(x))  # (9, 4, 8, 8)
    torch.testing.assert_close(univ.capture(m, x, "act1", reduce="flatten")["act1"], direct.reshape(9, -1))
    torch.testing.assert_close(univ.capture(m, x, "act1", reduce="mean")["act1"], direct.mean((2, 3)))
    torch.testing.assert_close(univ.capture(m, x, "act1", reduce="last")["act1"], direct[:, :, -1, -1])
    assert univ.capture(m, x, "act1", reduce="none")["act1"].shape == (9, 4, 8, 8)


def test_transformer_hookpoints_match_run_with_cache_and_aliases_dedupe():
    m = build_model("transformer", d_model=16, n_layers=2, n_heads=2, seed=0).eval()
    x = torch.rand(6, 1, 8, 8)
    acts = univ.capture(m, x, ["blocks.0.hook_resid_post", "blocks.0.hook_out", "blocks.1.mlp.hook_post"],
                        reduce="none")
    assert list(acts) == ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]  # alias captured once
    resid = m.hook_patch_embed(m.embed(m.tokens(x)) + m.pos)
    _, cache = m.bridge.run_with_cache(resid, start_at_layer=0)
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"])
    mean = univ.capture(m, x, ["blocks.0.hook_resid_post"])  # transformer default: mean over patches
    torch.testing.assert_close(mean["blocks.0.hook_resid_post"], cache["blocks.0.hook_resid_post"].mean(1))


def test_plain_tl_hooked_root_module():
    from transformer_lens import HookedRootModule
    from transformer_lens.hook_points import HookPoint

    class Tiny(HookedRootModule):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)
            self.hook_mid = HookPoint()
            self.setup()

        def forward(self, x):
            return self.hook_mid(self.lin(x)) * 2

    t = Tiny()
    x = torch.randn(5, 3)
    torch.testing.assert_close(univ.capture(t, x, "hook_mid")["hook_mid"], t.lin(x))


def test_hooks_removed_after_forward_raises():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            self.lin(x)
            raise RuntimeError("boom")

    m = Boom().train()
    with pytest.raises(ValueError, match="inputs: the model's forward failed.*boom"):  # torch errors are named
        univ.capture(m, torch.randn(3, 2), ["lin"])
    assert not m.lin._forward_hooks
    assert m.training  # mode restored


def test_unknown_hook_lists_closest():
    m = build_model("transformer", d_model=16, n_heads=2, seed=0)
    with pytest.raises(ValueError, match="closest valid names: \\['blocks.0.hook_resid_post'"):
        univ.capture(m, torch.rand(2, 64), ["blocks.0.hook_resid_pots"])


def test_bad_inputs():
    m = build_model("mlp", seed=0)
    with pytest.raises(ValueError, match="inputs: contains 1 NaN"):
        x = torch.rand(4, 64)
        x[2, 3] = float("nan")
        univ.capture(m, x, ["act1"])
    with pytest.raises(ValueError, match="reduce"):
        univ.capture(m, torch.rand(4, 64), ["act1"], reduce="max")
    with pytest.raises(ValueError, match="x: MLP expects"):
        univ.capture(m, torch.rand(4, 10), ["act1"])


def test_disk_cache_round_trip(tmp_path):
    m = build_model("mlp", seed=0)
    x = torch.rand(20, 64)
    a = univ.capture(m, x, ["act1", "out"], cache=tmp_path)
    assert len(list(tmp_path.glob("*/acts.safetensors"))) == 1
    b = univ.capture(m, x, ["act1", "out"], cache=tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        m.out.bias.add_(1.0)  # new weights -> new key, no stale hit
    c = univ.capture(m, x, ["act1", "out"], cache=tmp_path)
    assert not torch.equal(a["out"], c["out"]) and len(list(tmp_path.glob("*/acts.safetensors"))) == 2


def test_disk_cache_key_has_dtype_and_order_and_hit_keeps_the_order_asked(tmp_path):
    m = build_model("mlp", seed=0)
    x = torch.rand(20, 64)
    a = univ.capture(m, x, ["out", "act1"], cache=tmp_path)
    h = univ.capture(m, x, ["out", "act1"], cache=tmp_path)
    assert list(h) == ["out", "act1"] == list(a)
    d = univ.capture(m, x, ["out", "act1"], cache=tmp_path, dtype=torch.float16)
    assert d["out"].dtype == torch.float16 and a["out"].dtype == torch.float32
    assert univ.capture(m, x, ["out", "act1"], cache=tmp_path)["out"].dtype == torch.float32
    assert len(list(tmp_path.glob("*/acts.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "zero", "scale", "remove_manifest"])
def test_corrupt_disk_cache_is_announced_and_recomputed(tmp_path, damage):
    from safetensors.torch import load_file, save_file

    from univ.activations import cache_path
    from univ.integrity import MANIFEST, CacheWarning

    m = build_model("mlp", seed=0)
    x = torch.rand(20, 64)
    fresh = univ.capture(m, x, ["act1", "out"])
    univ.capture(m, x, ["act1", "out"], cache=tmp_path)
    f = cache_path(m, x, ["act1", "out"], folder=tmp_path)
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:100])
    elif damage in ("zero", "scale"):
        t = load_file(str(f))
        save_file({k: v * (0 if damage == "zero" else 0.5) for k, v in t.items()}, str(f))
    else:
        (f.parent / MANIFEST).unlink()
    with pytest.warns(CacheWarning, match=str(f.parent)):
        again = univ.capture(m, x, ["act1", "out"], cache=tmp_path)
    assert all(torch.equal(fresh[k], again[k]) for k in fresh) and list(again) == ["act1", "out"]
    assert univ.capture(m, x, ["act1", "out"], cache=tmp_path)["out"].equal(fresh["out"])  # rewritten, clean


def test_grad_reaches_the_inputs():
    m = build_model("mlp", widths=(8,), seed=0)
    x = torch.rand(4, 64, requires_grad=True)
    acts = univ.capture(m, x, ["act1"], grad=True)
    acts["act1"].sum().backward()
    expected = torch.autograd.grad(torch.relu(m.fc1(x)).sum(), x)[0]
    torch.testing.assert_close(x.grad, expected)
    assert not univ.capture(m, x, ["act1"])["act1"].requires_grad


def test_layer_forward_matches_capture_and_keeps_graph():
    from univ.activations import layer_forward, resolve

    m = build_model("transformer", d_model=16, n_heads=2, seed=0).eval()
    x = torch.rand(3, 64, requires_grad=True)
    out, acts = layer_forward(m, x, "blocks.0.hook_resid_post")
    torch.testing.assert_close(acts, univ.capture(m, x, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"])
    torch.testing.assert_close(out, m(x))
    acts.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert resolve(m, "blocks.0.hook_resid_post")[0] is resolve(m, "blocks.0.hook_out")[0]
    with pytest.raises(ValueError, match="closest valid names"):
        resolve(m, "blocks.9.hook_out")


def test_sae_streams_from_the_activation_cache(tmp_path):
    from univ.activations import cache_path, cached_batches
    from univ.sae import TopKSAE

    m = build_model("mlp", widths=(16,), seed=0)
    x = torch.rand(300, 64)
    acts = univ.capture(m, x, ["act1"], cache=tmp_path)
    path = cache_path(m, x, ["act1"], folder=tmp_path)
    assert path.exists()
    stream = cached_batches(path, "act1", batch_size=64)
    assert torch.equal(torch.cat(list(stream())), acts["act1"])  # re-iterable, lazily read, same rows
    sae = TopKSAE(16, 32, k=4).fit(stream, max_steps=20, progress=False)
    assert sae.n_steps_ == 20
    with pytest.raises(ValueError, match="closest valid names"):
        cached_batches(path, "act2")

"""tl: a TransformerLens 4.x bridge over the tiny HuggingFace GPT-2: every hook that fires equals
run_with_cache (per-head hooks in their (n, pos, n_heads, d_head) shape), names that cannot fire in the
current mode are left out of hook_names and raise a ValueError saying how to enable them."""

import pytest
import torch

import univ
from univ.sources import load_model, untrained_twin

BRIDGE = {}


@pytest.fixture
def tl(hf_folders):
    if "m" not in BRIDGE:
        BRIDGE["m"] = load_model(f"tl:{hf_folders['gpt2']}")
    return BRIDGE["m"]


def test_every_hook_that_fires_matches_run_with_cache(tl, text_batch):
    ids = text_batch()["input_ids"]
    names = univ.hook_names(tl)
    with torch.no_grad():
        logits, cache = tl.net.run_with_cache(ids)
    assert all(n in cache for n in names)  # hook_names holds only names that fire
    per_sample = [n for n in names if len(cache[n]) == len(ids)]
    assert set(names) - set(per_sample) == {"pos_embed.hook_in"}  # position ids (1, pos): no batch axis
    with pytest.raises(ValueError, match="names: 'pos_embed.hook_in' emits shape \\(1, 7\\), not one entry per"):
        univ.capture(tl, ids, ["pos_embed.hook_in"])
    acts = univ.capture(tl, ids, per_sample, reduce="none", batch_size=2)
    assert len(acts) > 40
    for n, a in acts.items():
        assert torch.equal(a, cache[n]), n
    assert torch.equal(tl(ids), logits)
    for n in ("blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.1.attn.hook_z"):
        a = univ.capture(tl, ids, n, reduce="none")[n]
        assert a.shape == (5, 7, 4, 8) and torch.equal(a, cache[n])
        # per-head hooks reduce to (n, n_heads * d_head), heads kept apart
        assert torch.equal(univ.capture(tl, ids, n, reduce="mean")[n], cache[n].mean(1).flatten(1))
    pattern = univ.capture(tl, ids, "blocks.0.attn.hook_pattern", reduce="last")["blocks.0.attn.hook_pattern"]
    assert torch.equal(pattern, cache["blocks.0.attn.hook_pattern"][:, :, -1].flatten(1))  # last query row


def test_masked_reductions_on_the_bridge(tl, text_batch):
    batch = text_batch("right")
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        _, cache = tl.net.run_with_cache(batch["input_ids"], attention_mask=batch["attention_mask"])
    for name in tl.layers + ["blocks.0.attn.hook_z"]:
        h = cache[name].flatten(2)
        got = univ.capture(tl, batch, name, reduce="tokens")[name]
        assert torch.equal(got, h[mask]), name
        last = univ.capture(tl, batch, name, reduce="last")[name]
        assert torch.equal(last, torch.stack([h[i, mask[i]][-1] for i in range(5)]))


@pytest.mark.parametrize("name,switch", [("blocks.0.attn.hook_result", "set_use_attn_result"),
                                         ("blocks.1.hook_mlp_in", "set_use_hook_mlp_in"),
                                         ("blocks.0.hook_q_input", "set_use_split_qkv_input")])
def test_hooks_that_cannot_fire_say_how_to_enable_them(hf_folders, text_batch, name, switch):
    tl = load_model(f"tl:{hf_folders['gpt2']}")  # switches change the bridge: a fresh one per case
    ids = text_batch()["input_ids"]
    assert name not in univ.hook_names(tl)
    with pytest.raises(ValueError, match=f"{name}' does not fire in the model's current mode; call "
                                         f"model.net.{switch}\\(True\\)"):
        univ.capture(tl, ids, [name])
    getattr(tl.net, switch)(True)
    assert name in univ.hook_names(tl)
    with torch.no_grad():
        _, cache = tl.net.run_with_cache(ids)
    assert torch.equal(univ.capture(tl, ids, [name], reduce="none")[name], cache[name])


def test_tl_contract_and_untrained_twin(tl, text_batch):
    assert tl.layers == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"] and tl.tokenizer is not None
    ids = text_batch()["input_ids"]
    twin = untrained_twin(tl, 1)
    assert twin.layers == tl.layers and not torch.equal(twin(ids), tl(ids))
    assert torch.equal(twin(ids), untrained_twin(tl, 1)(ids))

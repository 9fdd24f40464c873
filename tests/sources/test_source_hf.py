"""hf: models (GPT-2, GPT-NeoX/Pythia, Llama, BERT, ViT) load by spec and capture equals HuggingFace's own
output_hidden_states exactly, for every reduction, with right and (decoders) left padding."""

import pytest
import torch

import univ
from univ.sources import load_model, untrained_twin
from univ.sources.hf import choose_task

CASES = [(k, "right") for k in ("gpt2", "neox", "llama", "bert")] + [(k, "left") for k in ("gpt2", "neox", "llama")]
MODELS = {}


def model(hf_folders, kind):
    if kind not in MODELS:
        MODELS[kind] = load_model(f"hf:{hf_folders[kind]}")
    return MODELS[kind]


@torch.no_grad()
def hidden(m, batch):
    return m.net(**batch, output_hidden_states=True).hidden_states[1:]


@pytest.mark.parametrize("kind,padding", CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_capture_equals_output_hidden_states(hf_folders, text_batch, kind, padding):
    m = model(hf_folders, kind)
    batch = text_batch(padding)
    mask = batch["attention_mask"].bool()
    hs = hidden(m, batch)
    assert len(m.layers) == 2 == len(hs)
    got = {r: univ.capture(m, batch, reduce=r, batch_size=2) for r in ("none", "tokens", "mean", "last")}
    for name, h in zip(m.layers, hs):
        assert torch.equal(got["none"][name], h)
        assert torch.equal(got["tokens"][name], h[mask])
        assert torch.equal(got["mean"][name], torch.stack([h[i, mask[i]].mean(0) for i in range(len(h))]))
        assert torch.equal(got["last"][name], torch.stack([h[i, mask[i]][-1] for i in range(len(h))]))
    assert got["mean"][m.layers[0]].shape == (5, 32)
    assert got["tokens"][m.layers[0]].shape == (int(mask.sum()), 32)


def test_bos_excluded_and_token_positions(hf_folders, text_batch):
    m = model(hf_folders, "gpt2")
    batch = text_batch("left")
    h = hidden(m, batch)[0]
    keep = univ.activations.token_positions(batch, exclude_first=True)
    toks = univ.capture(m, batch, m.layers[0], reduce="tokens", exclude_first=True)[m.layers[0]]
    assert torch.equal(toks, h[keep[:, 0], keep[:, 1]])
    assert len(toks) == int(batch["attention_mask"].sum()) - 5  # one first token per sequence
    rows = [i for i in range(5) if batch["attention_mask"][i].sum() > 1]
    mean = univ.capture(m, {k: v[rows] for k, v in batch.items()}, m.layers[0], reduce="mean", exclude_first=True)
    first_real = batch["attention_mask"].argmax(1)
    ref = torch.stack([h[i, first_real[i] + 1:].mean(0) for i in rows])
    torch.testing.assert_close(mean[m.layers[0]], ref)


def test_raw_module_names_are_channels_last(hf_folders, text_batch):
    m = model(hf_folders, "gpt2")
    batch = text_batch()
    acts = univ.capture(m, batch, ["transformer.h.1.mlp", "transformer.h.0.attn.c_attn", "lm_head"], reduce="mean")
    assert [a.shape for a in acts.values()] == [(5, 32), (5, 96), (5, len(m.tokenizer))]


def test_vit_capture_and_contract(hf_folders):
    m = load_model(f"hf:{hf_folders['vit']}")
    assert m.tokenizer is None and m.input_name == "pixel_values"
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        hs = m.net(pixel_values=x, output_hidden_states=True).hidden_states[1:]
        assert torch.equal(m(x), m.net(pixel_values=x).logits) and m(x).shape == (4, 3)
        assert torch.equal(m({"pixel_values": x}), m(x))
    for reduce, ref in (("none", lambda h: h), ("tokens", lambda h: h.reshape(-1, 32)),
                        ("mean", lambda h: h.mean(1)), ("last", lambda h: h[:, -1])):
        for inputs in (x, {"pixel_values": x}):
            acts = univ.capture(m, inputs, reduce=reduce, batch_size=3)
            assert all(torch.equal(acts[n], ref(h)) for n, h in zip(m.layers, hs)), reduce
    # the patch embedding is a convolution: channels-first, known by type
    conv = univ.capture(m, x, ["vit.embeddings.patch_embeddings.projection"], reduce="mean")
    assert conv["vit.embeddings.patch_embeddings.projection"].shape == (4, 32)


def test_contract_and_tasks(hf_folders, text_batch):
    batch = text_batch()
    for kind in ("gpt2", "bert"):
        m = model(hf_folders, kind)
        assert m.spec == f"hf:{hf_folders[kind]}" and m.takes_tokens and m.tokenizer is not None
        out = m(batch)
        assert isinstance(out, torch.Tensor) and out.shape == (5, 7, len(m.tokenizer))
        assert torch.equal(m(**batch), out) and torch.equal(univ.models.logits(m, batch["input_ids"]),
                                                              m(batch["input_ids"]))
    assert choose_task(model(hf_folders, "bert").net.config) == "masked-lm"
    assert choose_task(model(hf_folders, "llama").net.config) == "causal-lm"
    base = load_model(f"hf:{hf_folders['bert']}", task="base")
    assert base(batch).shape == (5, 7, 32)  # a headless encoder returns its last hidden state


def test_untrained_twin(hf_folders, text_batch):
    m = model(hf_folders, "llama")
    batch = text_batch()
    a, b, c = untrained_twin(m, 1), untrained_twin(m, 1), untrained_twin(m, 2)
    assert a.layers == m.layers and a.tokenizer is m.tokenizer and "untrained" in a.spec
    assert torch.equal(a(batch), b(batch)) and not torch.equal(a(batch), c(batch))
    assert not torch.equal(a(batch), m(batch))
    assert univ.capture(a, batch, reduce="mean")[a.layers[0]].shape == (5, 32)
    state = torch.get_rng_state()
    untrained_twin(m, 3)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_dict_cache_key_covers_every_entry(hf_folders, text_batch, tmp_path):
    m = model(hf_folders, "gpt2")
    batch = text_batch()
    other = dict(batch, attention_mask=batch["attention_mask"].clone())
    other["attention_mask"][0, -1] = 0
    p1 = univ.activations.cache_path(m, batch, m.layers, "mean", tmp_path)
    p2 = univ.activations.cache_path(m, other, m.layers, "mean", tmp_path)
    p3 = univ.activations.cache_path(m, batch, m.layers, "mean", tmp_path, exclude_first=True)
    assert len({p1, p2, p3}) == 3
    first = univ.capture(m, batch, reduce="mean", cache=tmp_path)
    again = univ.capture(m, batch, reduce="mean", cache=tmp_path)
    assert p1.is_file() and all(torch.equal(first[k], again[k]) for k in first)


def test_capture_skips_the_head_only_when_every_hook_is_in_the_trunk(hf_folders, text_batch):
    """capture needs no logits: it runs the trunk (the unembedding is skipped) when every requested point lies
    in it, with exactly the activations of the full forward; a point in the head needs the full forward."""
    from univ.sources.hf import wrap_hf

    model = load_model(f"hf:{hf_folders['gpt2']}")
    batch = text_batch("right")
    full = wrap_hf(model.net, "hf:no-trunk")
    object.__setattr__(full, "trunk", None)  # the same net, forced through the full forward
    for reduce in ("none", "tokens", "mean"):
        a = univ.capture(model, batch, model.layers, reduce=reduce)
        b = univ.capture(full, batch, model.layers, reduce=reduce)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert model.without_head([model.hook_dict[n] for n in model.layers]) is not None
    head = [n for n in univ.hook_names(model) if n.startswith("lm_head")]
    assert head and model.without_head([model.hook_dict[head[0]]]) is None
    out = univ.capture(model, batch, head[0], reduce="none")[head[0]]
    assert torch.equal(out, model(batch))  # the head's output is the logits

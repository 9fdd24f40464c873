"""The corpus LMs the LM attacks run on: tokenizer, the three architectures' embedding path, causality, the cache."""

import pytest
import torch

from tests.named_errors import assert_named_error
from univ.adversarial import lm as alm
from univ.lm_zoo import CausalLM, cached_lm, corpus_tokenizer, corpus_tokens
from univ.models import build_model
from univ.sources import untrained_twin

SMALL = {"d_model": 32, "n_layers": 2, "n_heads": 4}


@pytest.fixture(scope="module")
def tok():
    return corpus_tokenizer()


def test_tokenizer_is_deterministic_and_round_trips(tok):
    again = corpus_tokenizer.__wrapped__(320)
    assert again.get_vocab() == tok.get_vocab() and len(tok) == 320
    text = 'def f(x):\n    return "assert" statements'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) < len(text)  # merges exist
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2)


@pytest.mark.parametrize("arch", ["tl", "gpt2", "llama"])
def test_embedding_path_equals_token_path_and_is_causal(arch):
    model = build_model("causal_lm", seed=3, arch=arch, d_vocab=50, n_ctx=12, **SMALL).eval()
    ids = torch.randint(3, 50, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(ids)
        via, resid = model.forward_embeds(model.embed(ids), resid=True)
        assert logits.shape == (2, 10, 50)
        assert torch.allclose(logits, via, atol=1e-5)
        assert len(resid) == 2 and resid[0].shape == (2, 10, 32)
        assert torch.allclose(alm.last_residuals(model, ids)[:, 1], resid[1][:, -1], atol=1e-5)
        changed = ids.clone()
        changed[:, 6] = (changed[:, 6] + 1 - 3) % 47 + 3
        out = model(changed)
    assert torch.allclose(out[:, :6], logits[:, :6], atol=1e-5)  # the future does not leak back
    assert not torch.allclose(out[:, 6:], logits[:, 6:], atol=1e-5)
    twin = untrained_twin(model, seed=3)
    assert isinstance(twin, CausalLM) and all(torch.equal(a, b) for a, b in
                                              zip(model.state_dict().values(), twin.state_dict().values()))


def test_cached_lm_trains_once_then_loads_the_same_model(tok, tmp_path, monkeypatch):
    monkeypatch.delenv("UNIV_NO_CACHE", raising=False)
    data = corpus_tokens(tok, context=16).subset(200)
    first, m1 = cached_lm("tl", data, seed=1, steps=8, batch_size=8, model_cfg=SMALL, root=tmp_path, progress=False)
    assert m1["steps"] == 8 and m1["test_loss"] < 6.0  # ln(320) = 5.77 is the untrained level, roughly
    second, m2 = cached_lm("tl", data, seed=1, steps=8, batch_size=8, model_cfg=SMALL, root=tmp_path, progress=False)
    assert m2 == m1
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    other, _ = cached_lm("tl", data, seed=2, steps=8, batch_size=8, model_cfg=SMALL, root=tmp_path, progress=False)
    assert not torch.equal(other.embedding_matrix, first.embedding_matrix)
    assert len(list(tmp_path.iterdir())) == 2


def test_gcg_runs_on_a_huggingface_model_through_inputs_embeds():
    """A user's HF causal LM: the same attack code, through ``inputs_embeds``; the attack may not make the loss
    worse than the start (GCG keeps the best candidate)."""
    net = build_model("causal_lm", seed=0, arch="gpt2", d_vocab=40, n_ctx=16, **SMALL).net.eval()
    lm = alm.token_lm(net)
    ids = torch.arange(3, 13)
    start = float(alm.evaluate(lm, ids[None], alm.TargetToken(20))[0][0])
    res = alm.gcg(net, ids, alm.TargetToken(20), [7, 8, 9], steps=3, search_width=16, topk=8, early_stop=False)
    assert res.loss <= start and res.steps == 3 and len(res.losses) == 3
    assert res.losses == sorted(res.losses, reverse=True)


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda: build_model("causal_lm", arch="rnn"), ValueError, "arch"),
    (lambda: build_model("causal_lm", arch="tl", d_model=30, n_heads=4), ValueError, "d_model"),
    (lambda: build_model("causal_lm", arch="tl", **SMALL)(torch.zeros(2, 4)), ValueError, "x: expected integer"),
    (lambda: build_model("causal_lm", arch="tl", n_ctx=4, **SMALL)(torch.zeros(1, 6, dtype=torch.long)), ValueError,
     "x: at most n_ctx=4"),
    (lambda: corpus_tokenizer(100), ValueError, "vocab_size: must be >= 259"),
])
def test_bad_input_names_the_argument(call, exc, fragment):
    assert_named_error(call, exc, fragment)

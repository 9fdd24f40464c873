"""spliced_lm_metrics on a tiny GPT-2 built from its config: an exact reconstruction recovers all the loss
with KL 0, a zero decoder recovers none, padding and batching do not change the numbers, and the numbers
are the cross-entropies and KL computed by hand from the logits."""

import pytest
import torch

import univ.sae as S

D = 32


@pytest.fixture(scope="module")
def gpt2():
    import transformers as tf

    from univ.sources.hf import wrap_hf

    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=40, n_embd=D, n_layer=2, n_head=4, n_positions=16, pad_token_id=0)
    return wrap_hf(tf.GPT2LMHeadModel(config).eval(), "hf:tiny-gpt2")


def right_padded(n=5, T=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 3, 1, T - 2, 5])[:n]
    mask = (torch.arange(T) < lengths[:, None]).long()
    ids = torch.randint(1, 40, (n, T), generator=g) * mask
    return {"input_ids": ids, "attention_mask": mask}


def identity_sae():
    """A ReLU SAE with codes (relu(x), relu(-x)) and decoder [I; -I]: relu(x) - relu(-x) = x exactly."""
    sae = S.ReluSAE(D, 2 * D)
    eye = torch.eye(D)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_identity_sae_recovers_everything(gpt2):
    res = S.spliced_lm_metrics(gpt2, right_padded(), gpt2.layers[0], identity_sae())
    assert res.spliced_loss == res.clean_loss and res.loss_recovered == 1.0 and res.kl_divergence == 0.0
    assert res.zero_ablated_loss > res.clean_loss
    assert res.n_predictions == 7 + 2 + 0 + 5 + 4


def test_zero_decoder_recovers_nothing(gpt2):
    sae = S.TopKSAE(D, 64, k=4)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    res = S.spliced_lm_metrics(gpt2, right_padded(), gpt2.layers[1], sae, batch_size=2)
    assert res.spliced_loss == pytest.approx(res.zero_ablated_loss, abs=1e-6)
    assert res.loss_recovered == pytest.approx(0.0, abs=1e-5) and res.kl_divergence > 0


@torch.no_grad()
def test_known_values_and_padding_invariance(gpt2):
    sae = S.TopKSAE(D, 64, k=4, seed=3)
    batch = right_padded()
    res = S.spliced_lm_metrics(gpt2, batch, gpt2.layers[0], sae, batch_size=3)
    # more padding (other pad ids, extra columns) and another batch size: the same numbers
    wider = {k: torch.cat([v, torch.zeros(len(v), 3, dtype=v.dtype)], 1) for k, v in batch.items()}
    wider["input_ids"] = torch.where(wider["attention_mask"].bool(), wider["input_ids"], 7)
    again = S.spliced_lm_metrics(gpt2, wider, gpt2.layers[0], sae, batch_size=5)
    for a, b in zip(res, again):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # by hand, one unpadded sequence at a time, the splice done on the hidden state
    ce = {"clean": [], "spliced": [], "zero": []}
    kl = []
    block = dict(gpt2.net.named_modules())[gpt2.layers[0]]
    for ids, m in zip(batch["input_ids"], batch["attention_mask"]):
        ids = ids[m.bool()][None]
        if ids.shape[1] < 2:
            continue
        logps = {}
        for mode in ce:
            def hook(_m, _i, out, mode=mode):
                h = out[0] if isinstance(out, tuple) else out
                new = {"clean": h, "spliced": sae.decode(sae.encode(h[0]))[None], "zero": torch.zeros_like(h)}[mode]
                return (new, *out[1:]) if isinstance(out, tuple) else new
            handle = block.register_forward_hook(hook)
            try:
                logps[mode] = torch.log_softmax(gpt2.net(ids).logits[0, :-1], -1)
            finally:
                handle.remove()
            ce[mode].append(-logps[mode].gather(1, ids[0, 1:, None])[:, 0])
        kl.append((logps["clean"].exp() * (logps["clean"] - logps["spliced"])).sum(-1))
    means = {k: float(torch.cat(v).double().mean()) for k, v in ce.items()}
    assert res.clean_loss == pytest.approx(means["clean"], rel=1e-5)
    assert res.spliced_loss == pytest.approx(means["spliced"], rel=1e-5)
    assert res.zero_ablated_loss == pytest.approx(means["zero"], rel=1e-5)
    assert res.loss_recovered == pytest.approx((means["zero"] - means["spliced"]) / (means["zero"] - means["clean"]),
                                               rel=1e-4)
    assert res.kl_divergence == pytest.approx(float(torch.cat(kl).double().mean()), rel=1e-4)


def test_bad_arguments(gpt2):
    sae = identity_sae()
    batch = right_padded()
    with pytest.raises(ValueError, match="sae: expected a univ.sae.SAE"):
        S.spliced_lm_metrics(gpt2, batch, gpt2.layers[0], "sae")
    with pytest.raises(ValueError, match="batch_size"):
        S.spliced_lm_metrics(gpt2, batch, gpt2.layers[0], sae, batch_size=0)
    with pytest.raises(ValueError, match="unknown layer"):
        S.spliced_lm_metrics(gpt2, batch, "transformer.h.9", sae)
    with pytest.raises(ValueError, match="layer: .* emits shape"):
        S.spliced_lm_metrics(gpt2, batch, gpt2.layers[0], S.TopKSAE(D + 1, 8, k=2))
    with pytest.raises(ValueError, match="no next token"):
        S.spliced_lm_metrics(gpt2, batch["input_ids"][:, :1], gpt2.layers[0], sae)
    with pytest.raises(ValueError, match="inputs: no position has a real next token"):
        S.spliced_lm_metrics(gpt2, {k: v[2:3] for k, v in batch.items()}, gpt2.layers[0], sae)

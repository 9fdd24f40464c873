"""capture_to_store with dict batches and reduce="tokens": one row per real token, shards of token rows that
start and end inside contexts, equal to univ.capture's rows; the inputs' every entry is in the key."""

import pytest
import torch

import univ
from univ.store import capture_to_store


@pytest.fixture(scope="module")
def gpt2():
    import transformers as tf

    from univ.sources.hf import wrap_hf

    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=16, pad_token_id=0)
    return wrap_hf(tf.GPT2LMHeadModel(config).eval(), "hf:tiny-gpt2")


def padded(n=9, T=8, shortest=0):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(shortest, T + 1, (n,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T) < lengths[:, None]).long()
    return {"input_ids": torch.randint(1, 40, (n, T), generator=g) * mask, "attention_mask": mask}


@pytest.mark.parametrize("shard_rows,batch_size", [(7, 2), (5, 64), (1000, 3)])
def test_token_rows_equal_capture(gpt2, tmp_path, shard_rows, batch_size):
    batch = padded()
    ref = univ.capture(gpt2, batch, gpt2.layers, reduce="tokens")
    store = capture_to_store(gpt2, batch, gpt2.layers, reduce="tokens", shard_rows=shard_rows,
                             batch_size=batch_size, root=tmp_path, progress=False)
    n_tokens = int(batch["attention_mask"].sum())
    assert len(store) == n_tokens and store.n_shards == -(-n_tokens // shard_rows)
    for name in gpt2.layers:
        torch.testing.assert_close(store[name], ref[name], rtol=1e-5, atol=1e-6)  # batches of other sizes
        assert torch.equal(torch.cat(list(store.batches(name, 4))), store[name])


def test_mask_is_part_of_the_key_and_tokens_need_one(gpt2, tmp_path):
    batch = padded()
    a = capture_to_store(gpt2, batch, gpt2.layers[0], reduce="tokens", root=tmp_path, progress=False)
    other = dict(batch, attention_mask=batch["attention_mask"].clone())
    other["attention_mask"][0, -1] = 0
    b = capture_to_store(gpt2, other, gpt2.layers[0], reduce="tokens", root=tmp_path, progress=False)
    assert a.path != b.path and len(b) == len(a) - 1
    some = padded(shortest=1)  # reduce="mean" stays one row per sample
    mean = capture_to_store(gpt2, some, gpt2.layers[0], reduce="mean", shard_rows=4, root=tmp_path, progress=False)
    torch.testing.assert_close(mean[gpt2.layers[0]], univ.capture(gpt2, some, gpt2.layers[0], reduce="mean")
                               [gpt2.layers[0]], rtol=1e-5, atol=1e-6)

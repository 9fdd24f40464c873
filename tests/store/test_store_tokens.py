"""The store takes dict batches and every 2-D reduction: token rows (shards that begin and end inside sequences,
padding and the BOS left out) and per-sequence means equal univ.capture's, within the memory bound."""

import pytest
import torch
from torch import nn

import univ
import univ.store as S
from univ.store import capture_to_store


class TinyLM(nn.Module):
    """Token ids (b, T) -> embeddings -> two linear layers, channels-last; takes an attention mask."""

    takes_tokens = True

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.fc1, self.fc2 = nn.Embedding(30, 8), nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, input_ids, attention_mask=None):
        return self.fc2(torch.tanh(self.fc1(self.emb(input_ids))))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(3)
    n, T = 23, 9
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    mask = (torch.arange(T) < lengths[:, None]).long()
    return {"input_ids": torch.randint(1, 30, (n, T), generator=g) * mask, "attention_mask": mask}


@pytest.mark.parametrize("exclude_first", [False, True])
@pytest.mark.parametrize("shard_rows", [7, 16, 500])
def test_token_shards_equal_capture(batch, tmp_path, shard_rows, exclude_first):
    model = TinyLM()
    ref = univ.capture(model, batch, ["fc1", "fc2"], reduce="tokens", exclude_first=exclude_first)
    store = capture_to_store(model, batch, ["fc1", "fc2"], "tokens", shard_rows=shard_rows, batch_size=5,
                             root=tmp_path, progress=False, exclude_first=exclude_first)
    assert len(store) == len(ref["fc1"]) == int(batch["attention_mask"].sum()) - exclude_first * 23
    assert store.n_shards == -(-len(store) // shard_rows)
    for name in ("fc1", "fc2"):
        assert torch.equal(store[name], ref[name])
    assert store.meta["exclude_first"] is exclude_first


def test_token_shards_hold_only_their_rows(batch, tmp_path, monkeypatch):
    model = TinyLM()
    sizes = []
    real = S.capture_shard

    def spy(*a, **kw):
        out = real(*a, **kw)
        sizes.append(len(out["fc1"]))
        return out

    monkeypatch.setattr(S, "capture_shard", spy)
    store = capture_to_store(model, batch, ["fc1"], "tokens", shard_rows=10, batch_size=4, root=tmp_path,
                             progress=False)
    assert sizes == [10] * (len(store) // 10) + ([len(store) % 10] if len(store) % 10 else [])


def test_dict_batch_means_and_last_and_keys(batch, tmp_path):
    model = TinyLM()
    for reduce in ("mean", "last"):
        ref = univ.capture(model, batch, ["fc2"], reduce=reduce)
        store = capture_to_store(model, batch, ["fc2"], reduce, shard_rows=6, root=tmp_path, progress=False)
        assert len(store) == 23 and torch.equal(store["fc2"], ref["fc2"])
    other = {**batch, "attention_mask": batch["attention_mask"].clone()}
    other["attention_mask"][0, 0] = 1 - other["attention_mask"][0, 0]
    a = capture_to_store(model, batch, ["fc2"], "mean", root=tmp_path, progress=False)
    b = capture_to_store(model, other, ["fc2"], "mean", root=tmp_path, progress=False)
    assert a.path != b.path  # every entry of the dict is in the key


def test_tensor_tokens_without_a_mask(tmp_path):
    model = TinyLM()
    ids = torch.randint(1, 30, (11, 5), generator=torch.Generator().manual_seed(0))
    ref = univ.capture(model, ids, ["fc1"], reduce="tokens")
    store = capture_to_store(model, ids, ["fc1"], "tokens", shard_rows=8, root=tmp_path, progress=False)
    assert len(store) == 55 and torch.equal(store["fc1"], ref["fc1"])

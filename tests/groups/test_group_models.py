"""univ.group_models: the paper's MLP, the full-batch recipe with checkpoints, and the cache round trip."""

import pytest
import torch

from univ.data import group_composition
from univ.group_models import GroupMLP, GroupTrainConfig, cached_group_model, train_group_model


def test_group_mlp_forward_and_errors():
    m = GroupMLP(n_elements=10, d_embed=4, d_hidden=8)
    x = torch.tensor([[0, 1], [9, 9]])
    assert m(x).shape == (2, 10)
    # the logits depend on a only through W_left and on b only through W_right
    with torch.no_grad():
        m.W_right.zero_()
    assert torch.allclose(m(torch.tensor([[3, 0]])), m(torch.tensor([[3, 7]])))
    with pytest.raises(ValueError, match=r"x: expected element ids in \[0, 10\)"):
        m(torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match="d_hidden: must be a positive integer"):
        GroupMLP(n_elements=10, d_hidden=0)
    import univ.models

    assert univ.models.MODELS["group_mlp"] is GroupMLP


def test_training_checkpoints_and_cache_round_trip(tmp_path):
    data = group_composition("D5", train_fraction=0.8, seed=0)
    cfg = GroupTrainConfig(max_steps=60, lr=1e-2, checkpoint_every=20)
    r = cached_group_model("mlp", data, 0, cfg, width=16, root=tmp_path)
    assert sorted(r.checkpoints) == [0, 20, 40, 60]
    assert r.metrics["train_acc"] > 0.5 and [h["step"] for h in r.metrics["history"]] == [20, 40, 60]
    assert not torch.equal(r.checkpoints[0]["W_left"], r.checkpoints[60]["W_left"])
    assert torch.equal(r.checkpoints[60]["W_left"], r.model.W_left.detach())
    again = cached_group_model("mlp", data, 0, cfg, width=16, root=tmp_path)  # loaded, not retrained
    assert torch.equal(again.model.W_left, r.model.W_left)
    assert again.metrics["history"] == r.metrics["history"]
    assert all(torch.equal(again.checkpoints[s]["fc.weight"], r.checkpoints[s]["fc.weight"]) for s in r.checkpoints)
    with pytest.raises(ValueError, match="arch: unknown group model 'cnn'"):
        cached_group_model("cnn", data, 0, cfg, root=tmp_path)


def test_full_batch_adamw_lowers_the_loss():
    data = group_composition("C7", train_fraction=0.8, seed=0)
    m = GroupMLP(n_elements=7, d_embed=8, d_hidden=16)
    loss0 = torch.nn.functional.cross_entropy(m(data.x_train), data.y_train).item()
    r = train_group_model(m, data, GroupTrainConfig(max_steps=50, checkpoint_every=25), progress=False)
    assert r.metrics["final_loss"] < loss0 and r.metrics["steps"] == 50


def test_the_transformer_is_measured_like_the_mlp(tmp_path):
    """univ's one-layer TransformerLens transformer on (a, b): its embedding, unembedding and grid arrays."""
    data = group_composition("C7", train_fraction=0.8, seed=0)
    from analyses._group_universality_stages import embedding, grid_arrays, unembedding
    from univ.groups import cyclic

    t = cached_group_model("transformer", data, 0, GroupTrainConfig(max_steps=5, checkpoint_every=5), width=8,
                           root=tmp_path)
    H, L = grid_arrays(t.model, cyclic(7))
    assert H.shape == (49, 8) and L.shape == (49, 7)
    assert embedding(t.model).shape == (7, 8) and unembedding(t.model).shape == (7, 8)

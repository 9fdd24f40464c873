"""Invariants of univ.repro.lottery (lottery tickets: masks, pruning, rewinding, IMP)."""

from __future__ import annotations

import pytest
import torch

from univ.data import Dataset
from univ.models import build_model
from univ.repro import lottery
from univ.train import TrainConfig


def tiny_mlp(seed=0):
    return build_model("mlp", seed=seed, input_shape=(12,), widths=[16, 8], n_classes=3)


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g)
    y = (x[:, :3].argmax(1)).long()
    return Dataset("toy", x[:240], y[:240], x[240:], y[240:], (12,), 3)


def test_prune_keeps_exact_fraction_per_layer():
    model = tiny_mlp()
    masks = lottery.full_masks(model)
    rates = lottery.layer_rates(model, hidden=0.2, output=0.1)
    assert rates == {"fc1.weight": 0.2, "fc2.weight": 0.2, "out.weight": 0.1}
    for _ in range(3):
        kept = {n: int(m.sum()) for n, m in masks.items()}
        new = lottery.prune_by_magnitude(model, masks, rates)
        for n, m in new.items():
            assert int(m.sum()) == kept[n] - round(rates[n] * kept[n])
            assert not (m & ~masks[n]).any(), "a pruned weight came back"
        masks = new
    assert int(masks["fc1.weight"].sum()) == 98  # 192 -> 154 -> 123 -> 98
    # the survivors are the largest-magnitude weights of the layer
    w = model.fc1.weight.detach().abs()
    assert w[masks["fc1.weight"]].min() >= w[~masks["fc1.weight"]].max()


def test_random_masks_match_counts_and_jaccard():
    model = tiny_mlp()
    masks = lottery.prune_by_magnitude(model, lottery.full_masks(model), {n: 0.5 for n in lottery.prunable(model)})
    rnd = lottery.random_masks(masks, seed=1)
    assert {n: int(m.sum()) for n, m in rnd.items()} == {n: int(m.sum()) for n, m in masks.items()}
    assert lottery.mask_jaccard(masks, masks)["all"] == 1.0
    assert 0.0 < lottery.mask_jaccard(masks, rnd)["all"] < 1.0


def test_masks_stay_fixed_through_training(tiny_data):
    model = tiny_mlp()
    masks = lottery.prune_by_magnitude(model, lottery.full_masks(model), lottery.layer_rates(model))
    masks = lottery.prune_by_magnitude(model, masks, lottery.layer_rates(model))
    before = {n: m.clone() for n, m in masks.items()}
    run = lottery.train_masked(model, tiny_data, TrainConfig(epochs=3, batch_size=32, lr=1e-2),
                               masks=masks, eval_every=5)
    params = dict(run.model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(m, before[n])
        assert (params[n][~m] == 0).all(), f"{n}: a pruned weight moved"
        assert (params[n][m] != 0).all()
    assert run.best_step in {h["step"] for h in run.history}
    assert run.history[-1]["step"] == run.metrics["steps"]


def test_rewind_restores_initial_weights(tiny_data):
    model = tiny_mlp(seed=3)
    init = lottery.snapshot(model)
    fresh = tiny_mlp(seed=3).state_dict()
    assert all(torch.equal(init[k], fresh[k]) for k in fresh)
    run = lottery.train_masked(model, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2), snapshot_at=4)
    assert not torch.equal(run.model.fc1.weight, init["fc1.weight"])
    assert run.snapshot is not None and not torch.equal(run.snapshot["fc1.weight"], init["fc1.weight"])
    masks = lottery.prune_by_magnitude(model, lottery.full_masks(model), lottery.layer_rates(model))
    lottery.rewind(model, init, masks)
    for k, v in model.state_dict().items():
        m = masks.get(k)
        assert torch.equal(v, init[k] * m if m is not None else init[k])
    lottery.rewind(model, run.snapshot)  # late rewinding: exactly the step-4 weights
    assert all(torch.equal(v, run.snapshot[k]) for k, v in model.state_dict().items())


def test_imp_rounds_shrink_geometrically(tiny_data):
    rounds, rewind_state = lottery.iterative_magnitude_pruning(
        lambda: tiny_mlp(seed=1), tiny_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2), n_rounds=2,
        rewind_step=3, eval_every=5)
    assert [r.round for r in rounds] == [0, 1, 2]
    assert rounds[0].remaining == 1.0 > rounds[1].remaining > rounds[2].remaining
    fc1 = [lottery.layer_remaining(r.masks)["fc1.weight"] for r in rounds]
    assert fc1[1] == pytest.approx(0.8, abs=0.01) and fc1[2] == pytest.approx(0.64, abs=0.01)
    assert not torch.equal(rewind_state["fc1.weight"], tiny_mlp(seed=1).fc1.weight)

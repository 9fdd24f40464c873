"""Invariants of univ.pruning (lottery tickets) and univ.purity (feature purification)."""

from __future__ import annotations

import pytest
import torch

from univ import pruning, purity
from univ.data import Dataset
from univ.models import build_model
from univ.train import TrainConfig


def tiny_mlp(seed=0):
    return build_model("mlp", seed=seed, input_shape=(12,), widths=[16, 8], n_classes=3)


@pytest.fixture(scope="module")
def tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g)
    y = (x[:, :3].argmax(1)).long()
    return Dataset("toy", x[:240], y[:240], x[240:], y[240:], (12,), 3)


# --------------------------------------------------------------------------------------------------
# pruning


def test_prune_keeps_exact_fraction_per_layer():
    model = tiny_mlp()
    masks = pruning.full_masks(model)
    rates = pruning.layer_rates(model, hidden=0.2, output=0.1)
    assert rates == {"fc1.weight": 0.2, "fc2.weight": 0.2, "out.weight": 0.1}
    for _ in range(3):
        kept = {n: int(m.sum()) for n, m in masks.items()}
        new = pruning.prune_by_magnitude(model, masks, rates)
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
    masks = pruning.prune_by_magnitude(model, pruning.full_masks(model), {n: 0.5 for n in pruning.prunable(model)})
    rnd = pruning.random_masks(masks, seed=1)
    assert {n: int(m.sum()) for n, m in rnd.items()} == {n: int(m.sum()) for n, m in masks.items()}
    assert pruning.mask_jaccard(masks, masks)["all"] == 1.0
    assert 0.0 < pruning.mask_jaccard(masks, rnd)["all"] < 1.0


def test_masks_stay_fixed_through_training(tiny_data):
    model = tiny_mlp()
    masks = pruning.prune_by_magnitude(model, pruning.full_masks(model), pruning.layer_rates(model))
    masks = pruning.prune_by_magnitude(model, masks, pruning.layer_rates(model))
    before = {n: m.clone() for n, m in masks.items()}
    run = pruning.train_masked(model, tiny_data, TrainConfig(epochs=3, batch_size=32, lr=1e-2),
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
    init = pruning.snapshot(model)
    fresh = tiny_mlp(seed=3).state_dict()
    assert all(torch.equal(init[k], fresh[k]) for k in fresh)
    run = pruning.train_masked(model, tiny_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2), snapshot_at=4)
    assert not torch.equal(run.model.fc1.weight, init["fc1.weight"])
    assert run.snapshot is not None and not torch.equal(run.snapshot["fc1.weight"], init["fc1.weight"])
    masks = pruning.prune_by_magnitude(model, pruning.full_masks(model), pruning.layer_rates(model))
    pruning.rewind(model, init, masks)
    for k, v in model.state_dict().items():
        m = masks.get(k)
        assert torch.equal(v, init[k] * m if m is not None else init[k])
    pruning.rewind(model, run.snapshot)  # late rewinding: exactly the step-4 weights
    assert all(torch.equal(v, run.snapshot[k]) for k, v in model.state_dict().items())


def test_imp_rounds_shrink_geometrically(tiny_data):
    rounds, rewind_state = pruning.iterative_magnitude_pruning(
        lambda: tiny_mlp(seed=1), tiny_data, TrainConfig(epochs=2, batch_size=32, lr=1e-2), n_rounds=2,
        rewind_step=3, eval_every=5)
    assert [r.round for r in rounds] == [0, 1, 2]
    assert rounds[0].remaining == 1.0 > rounds[1].remaining > rounds[2].remaining
    fc1 = [pruning.layer_remaining(r.masks)["fc1.weight"] for r in rounds]
    assert fc1[1] == pytest.approx(0.8, abs=0.01) and fc1[2] == pytest.approx(0.64, abs=0.01)
    assert not torch.equal(rewind_state["fc1.weight"], tiny_mlp(seed=1).fc1.weight)


# --------------------------------------------------------------------------------------------------
# purity


@pytest.fixture(scope="module")
def ortho():
    return purity.orthonormal_dictionary(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))


def test_purity_of_an_atom_is_one(ortho):
    W = 2.5 * ortho.T[:6]  # six atoms, rescaled: purity ignores the norm
    assert torch.allclose(purity.purity(W, ortho, k=1), torch.ones(6, dtype=torch.float64))
    assert torch.allclose(purity.participation(W, ortho), torch.ones(6, dtype=torch.float64))
    mix = ortho[:, 0] + ortho[:, 1]
    assert purity.purity(mix, ortho, k=1).item() == pytest.approx(0.5)
    assert purity.purity(mix, ortho, k=2).item() == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 3])
def test_random_direction_purity_matches_expectation(ortho, k):
    expected = purity.expected_random_purity(32, k)
    W = torch.randn(8000, 32, generator=torch.Generator().manual_seed(1))
    p = purity.purity(W, ortho, k)
    se = float(p.std()) / len(p) ** 0.5
    assert abs(float(p.mean()) - expected) < 4 * se
    assert expected < 0.5  # well below an atom's 1
    mc_mean, _ = purity.random_purity(ortho, k, n=8000, seed=2)
    assert mc_mean == pytest.approx(expected, abs=4 * se)


def test_expected_random_purity_limits():
    assert purity.expected_random_purity(1, 1) == pytest.approx(1.0, abs=1e-6)
    assert purity.expected_random_purity(10, 10) == pytest.approx(1.0, abs=1e-6)
    # E[max of 2 chi2_1] = 1 + 2/pi, so the top-1 share of a random 2-D direction is 1/2 + 1/pi
    assert purity.expected_random_purity(2, 1) == pytest.approx(0.5 + 1 / torch.pi, abs=1e-6)


def test_decompose_recovers_beta():
    g = torch.Generator().manual_seed(0)
    B = torch.randn(5, 20, generator=g, dtype=torch.float64)
    V = torch.randn(5, 20, generator=g, dtype=torch.float64)
    V = V - ((V * B).sum(1) / (B * B).sum(1))[:, None] * B  # orthogonal to B
    beta = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.0], dtype=torch.float64)
    dec = purity.decompose(beta[:, None] * B + V, B)
    assert torch.allclose(dec.beta, beta) and torch.allclose(dec.v, V)
    with pytest.raises(ValueError, match="W_other"):
        purity.decompose(B, B[:, :3])


# --------------------------------------------------------------------------------------------------
# the analyses end to end, at toy size


def test_lottery_analysis_runs_tiny():
    from analyses import lottery

    rep = lottery.run(lottery.Config.resolve(quick=True, seeds=2, n_rounds=1, epochs=1, late_rewind=5, eval_every=5))
    acc = rep.tables["accuracy_per_seed"]
    assert set(acc.kind) == set(lottery.KINDS) and set(acc["round"]) == {0, 1}
    sim = rep.tables["similarity_per_pair"]
    assert sim.value.between(-1e-6, 1 + 1e-6).all()
    assert {"ticket vs ticket (seeds)", "random vs random (seeds)", "ticket vs dense parent"} <= set(sim.comparison)
    m = rep.tables["mask_overlap"]
    assert m.jaccard.between(0, 1).all() and m.jaccard_aligned.between(0, 1).all()


def test_purification_analysis_runs_tiny():
    from analyses import purification

    cfg = purification.Config.resolve(quick=True, seeds=1, epochs=1, n_samples=1000, sae_steps=30, n_eval=200)
    rep = purification.run(cfg)
    nets = rep.tables["networks"]
    assert list(nets.kind) == list(purification.KINDS)
    assert nets.purity_1.between(1 / 32, 1).all()
    assert len(rep.tables["neurons"]) == 4 * 64 and len(rep.tables["decomposition"]) == 2

"""Robust and non-robust datasets (univ.repro.robust_datasets, Ilyas et al. 2019) on a tiny digits MLP."""

import pytest
import torch

from univ.activations import layer_forward
from univ.repro.robust_datasets import invert_representation, nonrobust_dataset, robust_dataset


def test_layer_output_is_differentiable_in_the_input(mlp, data):
    x = data.x_train[:5].clone().requires_grad_(True)
    r = layer_forward(mlp, x, "4", reduce="flatten")[1]
    assert r.shape == (5, 16)
    g, = torch.autograd.grad(r.sum(), x)
    assert g.abs().sum() > 0


def test_inversion_reduces_representation_distance(mlp, data):
    xt, xs = data.x_train[:32], data.x_train[32:64]
    inv = invert_representation(mlp, "4", xt, xs, steps=200, step_size=0.1, bounds=data.bounds)
    assert inv.x.shape == xt.shape
    assert inv.x.min() >= 0 and inv.x.max() <= 1
    assert bool((inv.rep_dist_end < inv.rep_dist_start).all())
    assert inv.rep_dist_end.mean() < 0.3 * inv.rep_dist_start.mean()


def test_robust_dataset_keeps_labels_and_starts_elsewhere(mlp, data):
    small = data.subset(n_train=50)
    out = robust_dataset(mlp, small, "4", steps=50, seed=1)
    assert torch.equal(out.data.y_train, small.y_train)
    assert bool((out.start != out.source).all())  # a derangement: never starts at its own target
    assert torch.equal(out.data.x_test, small.x_test)
    assert out.stats["rep_dist_end"] < out.stats["rep_dist_start"]


@pytest.mark.parametrize("target", ["det", "random"])
def test_nonrobust_dataset_labels_are_the_targets(mlp, data, target):
    small = data.subset(n_train=60)
    out = nonrobust_dataset(mlp, small, target=target, eps=2.0, steps=30, seed=0)
    y_new = out.data.y_train
    if target == "det":
        assert torch.equal(y_new, (small.y_train + 1) % 10)
    else:
        assert y_new.min() >= 0 and y_new.max() < 10
    assert bool((out.l2_from_source <= 2.0 + 1e-4).all())
    assert out.data.x_train.min() >= 0 and out.data.x_train.max() <= 1
    # the attack mostly reaches its target at this (large) eps, so the new labels are the model's view
    pred = mlp(out.data.x_train).argmax(1)
    assert (pred == y_new).float().mean() > 0.8

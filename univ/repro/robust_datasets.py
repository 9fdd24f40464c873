"""Robust and non-robust datasets (Ilyas et al. 2019, "Adversarial examples are not bugs, they are features").

- :func:`invert_representation`: inputs whose representation at one layer matches a target's, found by
  normalised-gradient descent in input space from another input (their "representation inversion").
- :func:`robust_dataset`: D_R (with a robust model) or D_NR (with a standard model): every training input
  x_i is replaced by an inversion of its representation started from a random other training input, and
  keeps its label y_i.
- :func:`nonrobust_dataset`: D_rand / D_det: targeted PGD on a standard model towards t (random, or
  t = (y + 1) mod C), then the input is *relabelled* t, so only non-robust features carry the label.

Both builders return a :class:`ConstructedDataset` (the new :class:`univ.data.Dataset` plus per-sample
diagnostics), so an analysis can show how far the constructed inputs moved: an inversion through a wide,
injective representation just copies the input, and then D_R is D in disguise.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from ..activations import layer_forward
from ..adversarial.attacks import pgd
from ..adversarial.ball import check_bounds, clip_to_box, per_sample, per_sample_norm
from ..data import Dataset
from ..models import eval_mode, predict


class Inversion(NamedTuple):
    """Result of :func:`invert_representation`; distances are per sample (n,)."""

    x: torch.Tensor
    """(n, ...) the optimised inputs."""
    rep_dist_start: torch.Tensor
    """||r(x_start) - r(x_target)||_2 before optimisation."""
    rep_dist_end: torch.Tensor
    """||r(x) - r(x_target)||_2 after optimisation."""


def invert_representation(
    model: nn.Module,
    layer: str,
    x_target: torch.Tensor,
    x_start: torch.Tensor,
    steps: int = 1000,
    step_size: float = 0.1,
    *,
    bounds: tuple[float, float] | None,
    batch_size: int = 1024,
) -> Inversion:
    """min_x ||r(x) - r(x_target)||_2 from ``x_start`` by L2-normalised gradient steps, clipped to ``bounds``
    (required: the data's box, or None for unbounded inputs).

    x_target, x_start: (n, ...) same shape. r is ``layer``'s flattened output. As in
    Ilyas et al. (their Appendix C: 1000 steps of size 0.1, no norm constraint on the change).
    The step size decays linearly to 10% over the run so the iterate settles instead of oscillating.
    """
    if x_target.shape != x_start.shape:
        raise ValueError(f"x_start: shape {tuple(x_start.shape)} differs from x_target's {tuple(x_target.shape)}")
    if steps < 0 or step_size <= 0:
        raise ValueError(f"steps/step_size: need steps >= 0 and step_size > 0, got {steps}, {step_size}")
    bounds = check_bounds(bounds)
    outs, d0s, d1s = [], [], []
    with eval_mode(model):
        for i in range(0, len(x_target), batch_size):
            xt, x = x_target[i:i + batch_size], x_start[i:i + batch_size].clone()
            with torch.no_grad():
                r_t = layer_forward(model, xt, layer, reduce="flatten")[1]
                d0s.append((layer_forward(model, x, layer, reduce="flatten")[1] - r_t).norm(dim=1))
            for s in range(steps):
                x.requires_grad_(True)
                loss = (layer_forward(model, x, layer, reduce="flatten")[1] - r_t).pow(2).sum()
                g, = torch.autograd.grad(loss, x)
                with torch.no_grad():
                    g = g / per_sample(per_sample_norm(g, "2").clamp_min(1e-12), g)
                    lr = step_size * (1 - 0.9 * s / max(steps, 1))
                    x = clip_to_box(x.detach() - lr * g, bounds)
            with torch.no_grad():
                d1s.append((layer_forward(model, x, layer, reduce="flatten")[1] - r_t).norm(dim=1))
            outs.append(x.detach())
    return Inversion(torch.cat(outs), torch.cat(d0s), torch.cat(d1s))


class ConstructedDataset(NamedTuple):
    """A constructed training set and what it cost; per-sample tensors are (n_train,)."""

    data: Dataset
    """The new dataset: constructed x_train/y_train, the original (untouched) test set."""
    source: torch.Tensor
    """Index of the original training input each new input stands for (its label's origin)."""
    start: torch.Tensor
    """Index of the training input the optimisation started from (== source for PGD datasets)."""
    l2_from_source: torch.Tensor
    """||x_new - x_source||_2."""
    l2_from_start: torch.Tensor
    """||x_new - x_start||_2 (0 start distance means it never moved)."""
    stats: dict
    """Scalars: rep distances before/after (inversion), attack success rate (PGD), ..."""


def _subset_train(data: Dataset, x: torch.Tensor, y: torch.Tensor, tag: str) -> Dataset:
    return Dataset(f"{data.name}-{tag}", x, y, data.x_test, data.y_test, data.input_shape, data.n_classes,
                   data.bounds, {**data.extra, "constructed": tag})


def robust_dataset(
    model: nn.Module,
    data: Dataset,
    layer: str,
    steps: int = 1000,
    step_size: float = 0.1,
    seed: int = 0,
    tag: str = "D_R",
    batch_size: int = 1024,
) -> ConstructedDataset:
    """D_R (``model`` robust) or D_NR (``model`` standard) from ``data``'s training set.

    Each x_i becomes ``invert_representation(model, layer, x_i, x_j)`` with j a random *other* training
    input (a derangement, seeded), labelled y_i. Ilyas et al. start from a random input so that whatever
    the new input shares with x_i, it got through the model's features only.
    """
    n = len(data.x_train)
    if n < 2:
        raise ValueError(f"data: need at least 2 training inputs to start from another one, got {n}")
    # a random derangement: each input in a random cycle starts from the next one, never from itself
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    start = torch.empty(n, dtype=torch.long)
    start[order] = order.roll(-1)
    inv = invert_representation(model, layer, data.x_train, data.x_train[start], steps, step_size,
                                bounds=data.bounds, batch_size=batch_size)
    src = torch.arange(n)
    l2_src = per_sample_norm(inv.x - data.x_train, "2")
    l2_start = per_sample_norm(inv.x - data.x_train[start], "2")
    stats = {"rep_dist_start": float(inv.rep_dist_start.mean()), "rep_dist_end": float(inv.rep_dist_end.mean()),
             "rep_dist_reduction": float((inv.rep_dist_end / inv.rep_dist_start.clamp_min(1e-12)).mean())}
    return ConstructedDataset(_subset_train(data, inv.x, data.y_train.clone(), tag), src, start, l2_src,
                              l2_start, stats)


def nonrobust_dataset(
    model: nn.Module,
    data: Dataset,
    target: Literal["random", "det"] = "det",
    eps: float = 0.5,
    norm: str = "2",
    steps: int = 100,
    step_size: float | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> ConstructedDataset:
    """D_rand (``target="random"``) or D_det (``target="det"``) from ``data``'s training set.

    t = (y + 1) mod C (det) or t uniform over all C classes (random, as in the paper, so about 1/C of
    D_rand keeps its own label). x_adv = targeted PGD on the standard ``model`` within ``eps`` (``norm``
    ball) towards t; the new label is t. ``stats["attack_success"]``: fraction ``model`` classifies as t.
    """
    if target not in ("random", "det"):
        raise ValueError(f"target: choose 'random' or 'det', got {target!r}")
    x, y, C = data.x_train, data.y_train, data.n_classes
    if target == "det":
        t = (y + 1) % C
    else:
        t = torch.randint(0, C, y.shape, generator=torch.Generator().manual_seed(seed))
    step_size = 2.5 * eps / steps if step_size is None else step_size
    advs = [pgd(model, x[i:i + batch_size], y[i:i + batch_size], eps=eps, norm=norm, steps=steps,
                step_size=step_size, random_start=False, targeted=True, target=t[i:i + batch_size],
                bounds=data.bounds, seed=seed)
            for i in range(0, len(x), batch_size)]
    x_adv = torch.cat(advs)
    pred = predict(model, x_adv, batch_size)
    l2 = per_sample_norm(x_adv - x, "2")
    idx = torch.arange(len(x))
    stats = {"attack_success": float((pred == t).float().mean()),
             "label_kept": float((t == y).float().mean())}
    tag = "D_det" if target == "det" else "D_rand"
    return ConstructedDataset(_subset_train(data, x_adv, t, tag), idx, idx, l2, l2, stats)

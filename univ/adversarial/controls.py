"""Matched controls for adversarial perturbations, and clean vs perturbed activations at a layer.

An adversarial delta is only "concentrated" relative to something: the controls here are random input
perturbations with the same per-sample L2 norm (after clipping to the input box) and i.i.d. Gaussian
noise with the same per-sample RMS.
"""

from __future__ import annotations

import torch

from .._checks import as_real_tensor, check_int
from .ball import check_bounds, clip_to_box, per_sample, per_sample_norm


def _pair(x, x_adv) -> tuple[torch.Tensor, torch.Tensor]:
    """x and x_adv as finite float tensors of one shape (x's float dtype; integers and bools become float32)."""
    x, x_adv = as_real_tensor(x, "x"), as_real_tensor(x_adv, "x_adv")
    if x.ndim < 2:
        raise ValueError(f"x: expected a batch of inputs (n, ...), got shape {tuple(x.shape)}")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv: expected the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    x = x if x.is_floating_point() else x.float()
    return x, x_adv.to(x.dtype)


def matched_random(x, x_adv, *, bounds: tuple[float, float] | None, seed: int = 0, iters: int = 10) -> torch.Tensor:
    """x + a random direction with the same per-sample L2 norm as ``x_adv - x``, inside ``bounds``
    (required: the data's box, or None for unbounded inputs).

    Clipping to the box shrinks a random perturbation (half its mass falls outside at a saturated
    pixel), so the direction is rescaled and re-clipped ``iters`` times until the clipped norm matches.
    """
    x, x_adv = _pair(x, x_adv)
    bounds = check_bounds(bounds)
    seed, iters = check_int(seed, "seed"), check_int(iters, "iters", low=0)
    target = per_sample_norm(x_adv - x, "2")
    g = torch.Generator(device=x.device).manual_seed(seed)
    u = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    u = u / per_sample(per_sample_norm(u, "2").clamp_min(1e-12), u)
    scale = target.clone()
    out = x + u * per_sample(scale, u)
    for _ in range(iters if bounds is not None else 0):
        out = (x + u * per_sample(scale, u)).clamp(*bounds)
        got = per_sample_norm(out - x, "2")
        scale = scale * (target / got.clamp_min(1e-12)).clamp(max=10.0)
    return out


def gaussian_noise(x, x_adv, *, bounds: tuple[float, float] | None, seed: int = 1) -> torch.Tensor:
    """x + i.i.d. N(0, s^2) noise, s = the per-sample RMS of ``x_adv - x``, clipped to ``bounds``
    (required: the data's box, or None for unbounded inputs); Szegedy et al.'s noise control."""
    x, x_adv = _pair(x, x_adv)
    bounds = check_bounds(bounds)
    seed = check_int(seed, "seed")
    d = (x_adv - x).reshape(len(x), -1)
    s = d.pow(2).mean(1).sqrt()
    g = torch.Generator(device=x.device).manual_seed(seed)
    out = x + torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype) * per_sample(s, x)
    return clip_to_box(out, bounds)

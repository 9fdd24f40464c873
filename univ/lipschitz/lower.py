"""Certified lower bounds on the Lipschitz constant: points and pairs of inputs that exhibit it.

Any input x inside an activation region gives ``L >= ||J(x)||`` and any pair gives ``L >= ||f(x) -
f(y)|| / ||x - y||``; both are evaluated exactly (float64), so the bounds are certified. Two searches:

- Jacobian ascent: ``||J(x)||`` is piecewise constant for a ReLU net (its gradient is zero almost
  everywhere), so the ascent runs on a smoothed Jacobian, ReLU gates replaced by
  ``sigmoid(beta z / scale)`` with beta annealed upwards, and scores the exact Jacobian at every
  iterate.
- PGD pairs: projected gradient ascent on the difference quotient over (x, r) with ``||r|| = radius``
  (and both points in the box when one is given), from the best Jacobian points along their top
  singular directions and from random starts.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .network import (
    AffineNet,
    as_affine_net,
    check_box,
    check_norm,
    forward,
    jacobian_from_gates,
    jacobians,
    operator_norm,
    pre_activations,
)


class LowerResult(NamedTuple):
    """value: the certified lower bound; jacobian: the best exact Jacobian norm found; pgd: the best
    difference quotient found; point: the input (n_in,) of the best Jacobian."""

    value: float
    jacobian: float
    pgd: float
    point: np.ndarray


def _starts(net: AffineNet, n: int, box, starts, g) -> torch.Tensor:
    if starts is not None:
        x = torch.as_tensor(starts).double().reshape(-1, net.n_in)
        return x if box is None else x.clamp(box[0], box[1])
    if box is None:  # radii from 1 to 1e3: the steepest region of a ReLU net may lie far out
        radii = 10.0 ** (3.0 * torch.arange(n, dtype=torch.float64) / max(n - 1, 1))
        return torch.randn(n, net.n_in, generator=g, dtype=torch.float64) * radii[:, None]
    lo, hi = box
    return lo + (hi - lo) * torch.rand(n, net.n_in, generator=g, dtype=torch.float64)


def jacobian_ascent(model, norm="2", lower=None, upper=None, starts=None, n_starts: int = 64, steps: int = 200,
                    lr: float = 0.05, seed: int = 0, input_shape=None) -> tuple[float, np.ndarray]:
    """The largest exact Jacobian norm found by smoothed gradient ascent from ``n_starts`` random
    inputs (or the given ``starts: (n, ...)``), within the box when given. Returns (value, point)."""
    norm = check_norm(norm)
    net = as_affine_net(model, input_shape)
    box = None if lower is None and upper is None else check_box(net, lower, upper)
    g = torch.Generator().manual_seed(seed)
    x0 = _starts(net, n_starts, box, starts, g)
    # Adam moves each coordinate by about lr per step: scale by the box, or by each start's radius
    x_scale = ((box[1] - box[0]).mean() if box is not None
               else (x0.norm(dim=1, keepdim=True) / net.n_in ** 0.5).clamp_min(1.0))
    u = (x0 / x_scale).clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    best_val, best_pt = -1.0, x0[0].clone()
    for step in range(int(steps) + 1):
        x = u * x_scale
        with torch.no_grad():  # score the exact Jacobian of every iterate
            vals = operator_norm(jacobians(net, x.detach()), norm)
            i = int(vals.argmax())
            if float(vals[i]) > best_val:
                best_val, best_pt = float(vals[i]), x.detach()[i].clone()
        if step == steps or not net.widths:
            break
        beta = 2.0 * (200.0 / 2.0) ** (step / max(steps - 1, 1))  # anneal the gates towards 0/1
        # temperature relative to each point's own pre-activation scale (starts lie at many radii)
        gates = [torch.sigmoid(beta * z / z.detach().abs().mean(1, keepdim=True).clamp_min(1e-12))
                 for z in pre_activations(net, x)]
        loss = -operator_norm(jacobian_from_gates(net, gates), norm).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if box is not None:
            with torch.no_grad():
                u.copy_(torch.maximum(torch.minimum(u * x_scale, box[1]), box[0]) / x_scale)
    return best_val, best_pt.numpy()


def _project_r(r, radius, norm):
    if norm == "2":
        return r * (radius / r.norm(dim=1, keepdim=True).clamp_min(1e-30))
    return r.clamp(-radius, radius)


def pgd_ratio(model, norm="2", radius: float = 1e-3, lower=None, upper=None, starts=None, directions=None,
              n_starts: int = 64, steps: int = 100, seed: int = 0, input_shape=None) -> float:
    """The largest ``||f(x + r) - f(x)||_p / ||r||_p`` found by projected gradient ascent on (x, r) with
    ``||r||_p = radius`` (L-inf: r in the cube, the quotient uses its actual norm), both points inside
    the box when given. starts / directions: optional initial x and r, (n, ...)."""
    norm = check_norm(norm)
    net = as_affine_net(model, input_shape)
    if not radius > 0:
        raise ValueError(f"radius: must be > 0, got {radius}")
    box = None if lower is None and upper is None else check_box(net, lower, upper)
    g = torch.Generator().manual_seed(seed)
    x = _starts(net, n_starts, box, starts, g)
    r = (torch.randn(x.shape, generator=g, dtype=torch.float64) if directions is None
         else torch.as_tensor(directions).double().reshape(len(x), -1))
    r = _project_r(r if norm == "2" else radius * torch.sign(r), radius, norm)
    x, r = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    span = 1.0 if box is None else float((box[1] - box[0]).mean())
    best = 0.0

    def quotient(x, r):
        d = forward(net, x + r) - forward(net, x)
        num = d.norm(dim=1) if norm == "2" else d.abs().amax(1)
        den = r.norm(dim=1) if norm == "2" else r.abs().amax(1)
        return num / den.clamp_min(1e-30)

    for step in range(int(steps) + 1):
        if box is not None:
            with torch.no_grad():  # keep x and x + r in the box
                r.copy_(torch.maximum(torch.minimum(r, box[1] - box[0]), box[0] - box[1]))
                x.copy_(torch.maximum(torch.minimum(x, box[1] - r.clamp_min(0)), box[0] - r.clamp_max(0)))
        q = quotient(x, r)
        best = max(best, float(q.detach().max()))
        if step == steps:
            break
        gx, gr = torch.autograd.grad(q.sum(), (x, r))
        with torch.no_grad():
            if norm == "2":
                r.add_(gr * radius / gr.norm(dim=1, keepdim=True).clamp_min(1e-30))
                r.copy_(_project_r(r, radius, norm))
            else:
                r.add_(0.25 * radius * torch.sign(gr))
                r.copy_(_project_r(r, radius, norm))
            x.add_(0.01 * span * gx / gx.norm(dim=1, keepdim=True).clamp_min(1e-30))
    return best


def lower_bound(model, norm="2", lower=None, upper=None, starts=None, n_starts: int = 64, steps: int = 200,
                radius: float = 1e-3, seed: int = 0, input_shape=None) -> LowerResult:
    """A certified lower bound: the best of :func:`jacobian_ascent` and :func:`pgd_ratio` (the PGD
    pairs start at the ascent's best points along their top singular directions, plus random starts)."""
    norm = check_norm(norm)
    net = as_affine_net(model, input_shape)
    jac, pt = jacobian_ascent(net, norm, lower, upper, starts, n_starts, steps, seed=seed)
    n = max(1, n_starts // 2)
    x0 = np.repeat(pt[None], n, axis=0)
    J = jacobians(net, torch.as_tensor(pt)[None])[0]
    v = torch.linalg.svd(J).Vh[0] if norm == "2" else torch.sign(J[J.abs().sum(1).argmax()])
    dirs = v[None].repeat(n, 1) + 0.05 * torch.randn(n, net.n_in, generator=torch.Generator().manual_seed(seed),
                                                     dtype=torch.float64)
    p1 = pgd_ratio(net, norm, radius, lower, upper, starts=x0, directions=dirs, steps=steps // 2, seed=seed)
    p2 = pgd_ratio(net, norm, radius, lower, upper, starts=starts, n_starts=n, steps=steps // 2, seed=seed + 1)
    pgd = max(p1, p2)
    return LowerResult(max(jac, pgd), jac, pgd, pt)

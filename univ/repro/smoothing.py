"""Gradients of Gaussian-smoothed classifiers (Cohen et al. 2019; Kaur et al. 2019), by Monte Carlo.

The smoothed classifier is g(x) = E_{d ~ N(0, sigma^2 I)}[softmax f(x + d)]. Kaur et al. ask whether its
input gradients are "perceptually aligned" like those of adversarially trained models. Here:

- :func:`smoothed_proba`: the MC estimate of g(x), (n, C).
- :func:`smoothed_gradient`: the gradient of log g_t(x) for a target class t (pathwise estimator: the
  gradient of the MC average, i.e. E[grad softmax_t(x + d)] / E[softmax_t(x + d)]). Its direction is
  that of grad g_t (they differ by the positive factor g_t per sample); the log keeps it finite where
  g_t underflows. sigma = 0 gives the plain gradient of log_softmax_t.
- :func:`smoothed_ascent`: targeted L2 projected gradient ascent on log g_t with large eps, the
  experiment behind their image figures.

Noise is drawn from a seeded generator and is never clipped to the input box (Cohen et al.'s g).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .._checks import to_tensor
from ..adversarial.ball import check_bounds, clip_to_box, per_sample, project_ball, steepest_step
from ..models import as_logits, as_model_input, eval_mode


def _noisy_logp(model, x, t, sigma, m, gen):
    """(m, n) log softmax_t of f(x + d_k) for m noise draws, keeping the graph to x."""
    n = len(x)
    xs = x.unsqueeze(0).expand(m, *x.shape)
    if sigma > 0:
        xs = xs + sigma * torch.randn(xs.shape, generator=gen, device="cpu", dtype=x.dtype).to(x.device)
    logp = torch.log_softmax(as_logits(model(xs.reshape(m * n, *x.shape[1:]))), dim=1).reshape(m, n, -1)
    return logp.gather(2, t.reshape(1, n, 1).expand(m, n, 1))[..., 0]


def _check(model, x, t, n_samples, sigma):
    x = to_tensor(x, "x")
    x = as_model_input(model, x if x.is_floating_point() else x.float())
    t = to_tensor(t, "target", device=x.device).long()
    if t.ndim != 1 or len(t) != len(x):
        raise ValueError(f"target: expected class labels of shape ({len(x)},), got {tuple(t.shape)}")
    if sigma < 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma: must be a finite number >= 0, got {sigma}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
    return x, t


class SmoothedGradient(NamedTuple):
    """grad and log_prob of log g_t(x); grad: (n, ...) like x, log_prob: (n,)."""

    grad: torch.Tensor
    log_prob: torch.Tensor


def smoothed_gradient(
    model: nn.Module,
    x,
    target,
    sigma: float,
    n_samples: int = 64,
    chunk: int = 64,
    seed: int | None = 0,
) -> SmoothedGradient:
    """Gradient of log g_t(x) w.r.t. x, g the sigma-smoothed softmax estimated with ``n_samples`` draws.

    x: (n, ...) inputs; target: (n,) classes t. Draws are processed ``chunk`` at a time and combined in
    log space (log-sum-exp weights), so memory is O(chunk * n) whatever ``n_samples`` is. With
    ``sigma == 0`` one draw is used: the plain gradient of log_softmax_t. The model runs in eval mode.
    """
    x, t = _check(model, x, target, n_samples, sigma)
    m_total = 1 if sigma == 0 else int(n_samples)
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    lses, grads = [], []
    with eval_mode(model), torch.enable_grad():
        done = 0
        while done < m_total:
            m = min(chunk, m_total - done)
            xi = x.detach().clone().requires_grad_(True)
            lse = torch.logsumexp(_noisy_logp(model, xi, t, sigma, m, gen), dim=0)  # (n,)
            g, = torch.autograd.grad(lse.sum(), xi)
            lses.append(lse.detach())
            grads.append(g)
            done += m
    lses_t = torch.stack(lses)  # (chunks, n)
    w = torch.softmax(lses_t, dim=0)  # each chunk's share of the total mass, per sample
    grad = sum(per_sample(w[c], grads[c]) * grads[c] for c in range(len(grads)))
    log_prob = torch.logsumexp(lses_t, dim=0) - math.log(m_total)
    return SmoothedGradient(grad, log_prob)


@torch.no_grad()
def smoothed_proba(model: nn.Module, x, sigma: float, n_samples: int = 64, chunk: int = 64,
                   seed: int | None = 0) -> torch.Tensor:
    """MC estimate (n, C) of g(x) = E[softmax f(x + d)], d ~ N(0, sigma^2 I)."""
    x = to_tensor(x, "x")
    x = as_model_input(model, x if x.is_floating_point() else x.float())
    m_total = 1 if sigma == 0 else int(n_samples)
    gen = None if seed is None else torch.Generator().manual_seed(int(seed))
    total, done = 0.0, 0
    with eval_mode(model):
        while done < m_total:
            m = min(chunk, m_total - done)
            xs = x.unsqueeze(0).expand(m, *x.shape)
            if sigma > 0:
                xs = xs + sigma * torch.randn(xs.shape, generator=gen, dtype=x.dtype).to(x.device)
            p = torch.softmax(as_logits(model(xs.reshape(m * len(x), *x.shape[1:]))), dim=1)
            total = total + p.reshape(m, len(x), -1).sum(0)
            done += m
    return total / m_total


def smoothed_ascent(
    model: nn.Module,
    x,
    target,
    sigma: float,
    eps: float,
    steps: int = 40,
    step_size: float | None = None,
    n_samples: int = 32,
    *,
    bounds: tuple[float, float] | None,
    seed: int | None = 0,
) -> torch.Tensor:
    """Targeted L2 PGD that maximises log g_t(x') over ||x' - x||_2 <= eps, x' in ``bounds`` (required:
    the data's box, or None for unbounded inputs).

    x: (n, ...), target: (n,). step_size defaults to 2.5 * eps / steps. Fresh noise every step
    (seeded): the ascent follows the smoothed gradient, not one fixed noise draw. Returns x' like x.
    """
    x, t = _check(model, x, target, n_samples, sigma)
    bounds = check_bounds(bounds)
    step_size = 2.5 * eps / steps if step_size is None else step_size
    x_adv = x.clone()
    for s in range(int(steps)):
        g = smoothed_gradient(model, x_adv, t, sigma, n_samples,
                              seed=None if seed is None else int(seed) * 100_003 + s).grad
        x_adv = clip_to_box(x + project_ball(x_adv + steepest_step(g, step_size, "2") - x, eps, "2"), bounds).detach()
    return x_adv

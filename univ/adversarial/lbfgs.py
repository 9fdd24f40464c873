"""Szegedy et al. (2013)'s box-constrained L-BFGS attack.

Section 4.1 of "Intriguing properties of neural networks": for a target label l != f(x), minimise

    c * ||r||^2 + loss_f(x + r, l)   subject to   x + r in [0, 1]^m,

and search over c for the *largest* c whose minimiser is still classified as l (the larger c, the
smaller r). We use ||r||^2 rather than |r| (L-BFGS needs a smooth objective; the paper does not say)
and SciPy's L-BFGS-B, which handles the box natively. The samples of a batch are solved jointly: the
objective is a sum of per-sample terms with per-sample c, so one L-BFGS-B run solves them all.

The paper's Table 1 (average minimal distortions) and univ's version of it for any models are in
:mod:`univ.repro.szegedy`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F

from .._checks import check_int, check_positive, check_seed
from ..models import eval_mode
from .attacks import check_inputs, random_other_class, register_attack, resolve_target


def _solve(model, x, target, c, bounds, maxiter):
    """Jointly minimise sum_i c_i ||z_i - x_i||^2 + CE(model(z_i), t_i) over the box with L-BFGS-B."""
    from scipy.optimize import minimize

    shape, dtype = x.shape, x.dtype
    x64 = x.detach().double().reshape(len(x), -1)
    c_t = torch.as_tensor(c, dtype=torch.float64, device=x.device)

    def f_and_grad(z_np):
        z = torch.from_numpy(z_np).to(x.device).reshape(x64.shape).requires_grad_(True)
        logits = model(z.to(dtype).reshape(shape))
        obj = (c_t * (z - x64).pow(2).sum(dim=1)).sum() + F.cross_entropy(
            logits.double(), target, reduction="sum")
        g, = torch.autograd.grad(obj, z)
        return float(obj.detach()), g.cpu().numpy().ravel()

    lo, hi = bounds if bounds is not None else (None, None)
    z0 = x64.cpu().numpy().ravel()
    # L-BFGS-B's small dense updates only lose from BLAS threads (6x slower on a busy 2-core machine)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        res = minimize(f_and_grad, z0, jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * z0.size,
                       options={"maxiter": maxiter})
    return torch.from_numpy(res.x).to(device=x.device, dtype=dtype).reshape(shape)


class LBFGSResult(NamedTuple):
    """What :func:`lbfgs_search` returns."""

    x_adv: torch.Tensor
    """(n, ...) the successful point with the smallest ||r|| found (else the smallest-c attempt)."""
    info: pd.DataFrame
    """Per sample: target, success, c, l2, rms_distortion (||r||_2 / sqrt(input dims), Szegedy's
    "distortion")."""


@register_attack("lbfgs")
def lbfgs(model: torch.nn.Module, x, y, target=None, *, bounds: tuple[float, float] | None, c_init: float = 1.0,
          search_steps: int = 12, maxiter: int = 100, c_range: tuple[float, float] = (1e-6, 1e6),
          seed: int | None = 0) -> torch.Tensor:
    """Szegedy's minimal-distortion attack; returns x_adv (n, ...). See :func:`lbfgs_search`, which also
    returns the per-sample search results."""
    return lbfgs_search(model, x, y, target, bounds=bounds, c_init=c_init, search_steps=search_steps,
                        maxiter=maxiter, c_range=c_range, seed=seed).x_adv


def lbfgs_search(
    model: torch.nn.Module,
    x,
    y,
    target=None,
    *,
    bounds: tuple[float, float] | None,
    c_init: float = 1.0,
    search_steps: int = 12,
    maxiter: int = 100,
    c_range: tuple[float, float] = (1e-6, 1e6),
    seed: int | None = 0,
) -> LBFGSResult:
    """Szegedy's minimal-distortion attack: the smallest box-constrained r with f(x + r) = target.

    x: (n, ...) inputs in ``bounds`` (required: the data's box, or None for unbounded inputs, when
    L-BFGS-B runs without box constraints); y: (n,) true labels. target: labels (n,), or a function
    ``target(logits, y)``; default (as in the paper's experiments) a random class other than y, seeded
    by ``seed``. The search over c multiplies c by 10 while the attack succeeds (divides while it
    fails), then bisects in log space between the largest success and the smallest failure, for
    ``search_steps`` rounds in all; each round is one L-BFGS-B solve of at most ``maxiter`` iterations.

    Returns an :class:`LBFGSResult`: x_adv (n, ...), the successful point with the smallest ||r|| found, or
    for samples where no c in ``c_range`` succeeded, the smallest-c attempt (check ``info.success``).
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(c_init, "c_init")
    search_steps, maxiter = check_int(search_steps, "search_steps", low=1), check_int(maxiter, "maxiter", low=1)
    seed = check_seed(seed)
    try:
        c_lo, c_hi = (float(c) for c in c_range)
    except (TypeError, ValueError):
        raise ValueError(f"c_range: expected a (low, high) pair of numbers, got {c_range!r}") from None
    if not (0 < c_lo < c_hi < math.inf):
        raise ValueError(f"c_range: need finite 0 < low < high, got {c_range!r}")
    c_range = (c_lo, c_hi)
    if target is None:
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        target = random_other_class(gen)
    t = resolve_target(target, logits, y)
    n = len(x)
    c = torch.full((n,), float(c_init), dtype=torch.float64)
    lo = torch.full((n,), float("nan"), dtype=torch.float64)   # largest c that succeeded
    hi = torch.full((n,), float("nan"), dtype=torch.float64)   # smallest c that failed
    best = x.clone()
    best_norm = torch.full((n,), float("inf"), dtype=torch.float64)
    fallback = x.clone()
    fallback_c = torch.full((n,), float("inf"), dtype=torch.float64)
    active = torch.ones(n, dtype=torch.bool)
    with eval_mode(model), torch.enable_grad():
        for _ in range(int(search_steps)):
            idx = torch.nonzero(active)[:, 0]
            if len(idx) == 0:
                break
            z = _solve(model, x[idx], t[idx], c[idx], bounds, maxiter)
            with torch.no_grad():
                ok = (model(z).argmax(1) == t[idx]).cpu()
            norm = (z - x[idx]).reshape(len(idx), -1).double().norm(dim=1).cpu()
            ci = c[idx]
            improve = ok & (norm < best_norm[idx])
            best[idx[improve]] = z[improve]
            best_norm[idx[improve]] = norm[improve]
            low_c = ci < fallback_c[idx]
            fallback[idx[low_c]] = z[low_c]
            fallback_c[idx[low_c]] = ci[low_c]
            lo[idx[ok]] = torch.fmax(lo[idx[ok]], ci[ok])
            hi[idx[~ok]] = torch.fmin(hi[idx[~ok]], ci[~ok])
            # next c: grow while succeeding, shrink while failing, bisect (log space) once bracketed
            l, h = lo[idx], hi[idx]
            nxt = torch.where(torch.isnan(h), ci * 10, torch.where(torch.isnan(l), ci / 10, (l * h).sqrt()))
            out = (nxt < c_range[0]) | (nxt > c_range[1])
            c[idx] = nxt
            active[idx[out]] = False
    success = torch.isfinite(best_norm)
    x_adv = torch.where(success.to(x.device).reshape(-1, *([1] * (x.ndim - 1))), best, fallback)
    l2 = (x_adv - x).reshape(n, -1).double().norm(dim=1).cpu()
    info = pd.DataFrame({
        "target": t.cpu().numpy(), "success": success.numpy(),
        "c": torch.where(success, lo, fallback_c).numpy(),
        "l2": l2.numpy(),
        # Szegedy's distortion: the RMS of the perturbation per input dimension
        "rms_distortion": (l2 / math.sqrt(x[0].numel())).numpy(),
    })
    return LBFGSResult(x_adv, info)

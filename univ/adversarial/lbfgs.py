"""Szegedy et al. (2013)'s box-constrained L-BFGS attack and the minimal-distortion measure of Table 1.

Section 4.1 of "Intriguing properties of neural networks": for a target label l != f(x), minimise

    c * ||r||^2 + loss_f(x + r, l)   subject to   x + r in [0, 1]^m,

and search over c for the *largest* c whose minimiser is still classified as l (the larger c, the
smaller r). We use ||r||^2 rather than |r| (L-BFGS needs a smooth objective; the paper does not say)
and SciPy's L-BFGS-B, which handles the box natively. The samples of a batch are solved jointly: the
objective is a sum of per-sample terms with per-sample c, so one L-BFGS-B run solves them all.

Table 1 reports the "average minimal distortion" sqrt(sum_i (x'_i - x_i)^2 / n), i.e. the RMS of the
perturbation per input dimension, averaged over attacked examples: :func:`rms_distortion`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .._checks import check_positive
from .attacks import check_inputs, eval_mode, random_other_class, resolve_target

#: Szegedy et al. 2013, Table 1 (MNIST, 28x28 inputs in [0, 1]): average minimal distortion of the
#: L-BFGS attack per model. FC10(lambda) is softmax regression with weight decay lambda; AE400-10 a
#: softmax on a sparse autoencoder's 400 features.
SZEGEDY_TABLE1 = pd.DataFrame({
    "model": ["FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10"],
    "train_err": [0.067, 0.10, 0.212, 0.0, 0.0, 0.0057],
    "test_err": [0.074, 0.094, 0.20, 0.0164, 0.0154, 0.019],
    "av_min_distortion": [0.062, 0.1, 0.14, 0.058, 0.065, 0.086],
})


def rms_distortion(x, x_adv) -> torch.Tensor:
    """Szegedy's distortion per sample (n,): sqrt(mean over input dims of (x_adv - x)^2)."""
    d = (torch.as_tensor(x_adv) - torch.as_tensor(x)).reshape(len(x), -1).double()
    return d.pow(2).mean(dim=1).sqrt()


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


def lbfgs(
    model: torch.nn.Module,
    x,
    y,
    target=None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    c_init: float = 1.0,
    search_steps: int = 12,
    maxiter: int = 100,
    c_range: tuple[float, float] = (1e-6, 1e6),
    seed: int | None = 0,
    return_info: bool = False,
):
    """Szegedy's minimal-distortion attack: the smallest box-constrained r with f(x + r) = target.

    x: (n, ...) inputs in ``bounds``; y: (n,) true labels. target: labels (n,), or a function
    ``target(logits, y)``; default (as in the paper's experiments) a random class other than y, seeded
    by ``seed``. The search over c multiplies c by 10 while the attack succeeds (divides while it
    fails), then bisects in log space between the largest success and the smallest failure, for
    ``search_steps`` rounds in all; each round is one L-BFGS-B solve of at most ``maxiter`` iterations.

    Returns x_adv (n, ...): the successful point with the smallest ||r|| found, or for samples where no
    c in ``c_range`` succeeded, the smallest-c attempt (check ``success``). With ``return_info=True``
    returns ``(x_adv, info)`` where info is a DataFrame per sample: target, success, c, l2,
    rms_distortion.
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(c_init, "c_init")
    if search_steps < 1 or maxiter < 1:
        raise ValueError(f"search_steps and maxiter: must be >= 1, got {search_steps}, {maxiter}")
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
    if not return_info:
        return x_adv
    info = pd.DataFrame({
        "target": t.cpu().numpy(), "success": success.numpy(),
        "c": torch.where(success, lo, fallback_c).numpy(),
        "l2": (x_adv - x).reshape(n, -1).double().norm(dim=1).cpu().numpy(),
        "rms_distortion": rms_distortion(x, x_adv).cpu().numpy(),
    })
    return x_adv, info


def minimal_distortion_table(models: dict, x, y, attack: str = "lbfgs", **attack_kw) -> pd.DataFrame:
    """Table 1 of Szegedy et al. for your models, beside the paper's values.

    models: {name: model}; x, y: the examples to attack (only those each model classifies correctly
    are attacked, as a minimal distortion of a misclassified input is 0). attack: "lbfgs" or
    "deepfool". Returns one row per model: clean accuracy, n attacked, attack success rate, mean and
    median RMS distortion over successful examples; the paper's Table 1 rows are appended with
    ``source="Szegedy et al. 2013 (MNIST)"``.
    """
    from .attacks import ATTACKS, predict

    rows = []
    for name, model in models.items():
        xt, yt, _, _ = check_inputs(model, x, y, attack_kw.get("bounds", (0.0, 1.0)))
        correct = predict(model, xt) == yt
        xs, ys = xt[correct], yt[correct]
        if attack == "lbfgs":  # success means reaching the (random) target, as in the paper
            x_adv, info = lbfgs(model, xs, ys, return_info=True, **attack_kw)
            ok = torch.tensor(info["success"].to_numpy())
        else:
            x_adv = ATTACKS[attack](model, xs, ys, **attack_kw)
            ok = (predict(model, x_adv) != ys).cpu()
        d = rms_distortion(xs, x_adv).cpu()[ok]
        rows.append({"model": name, "source": "univ", "attack": attack,
                     "clean_acc": float(correct.float().mean()), "n_attacked": int(len(xs)),
                     "success_rate": float(ok.float().mean()),
                     "av_min_distortion": float(d.mean()) if len(d) else np.nan,
                     "median_distortion": float(d.median()) if len(d) else np.nan})
    paper = SZEGEDY_TABLE1.assign(source="Szegedy et al. 2013 (MNIST)", attack="lbfgs")
    return pd.concat([pd.DataFrame(rows), paper], ignore_index=True)

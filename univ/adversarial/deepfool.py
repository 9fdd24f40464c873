"""DeepFool (Moosavi-Dezfooli et al. 2016): a minimal-L2 untargeted attack.

At each step the classifier is linearised around the current point and the input moves to the nearest
linearised decision boundary; steps accumulate until the label flips, and the total is scaled by
(1 + overshoot) to cross the boundary. Batched over samples; each step costs one forward pass and one
backward pass per class.
"""

from __future__ import annotations

import torch

from .._checks import check_int, check_positive
from ..models import eval_mode
from .attacks import check_inputs, register_attack
from .ball import clip_to_box


def _jacobian(model, x):
    """Logits (n, C) and their input gradients (n, C, d) at x."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    grads = [torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < logits.shape[1] - 1)[0]
             for k in range(logits.shape[1])]
    return logits.detach(), torch.stack([g.reshape(len(x), -1) for g in grads], dim=1)


@register_attack("deepfool")
def deepfool(
    model: torch.nn.Module,
    x,
    y,
    max_iter: int = 50,
    overshoot: float = 0.02,
    *,
    bounds: tuple[float, float] | None,
    eps: float | None = None,
) -> torch.Tensor:
    """DeepFool (L2). x: (n, ...) inputs; y: (n,) labels. Returns x_adv (n, ...), clipped to ``bounds``
    (required: the data's box, or None for unbounded inputs).

    Samples already misclassified are returned unchanged. ``eps`` (optional) caps the L2 norm of the
    perturbation, which makes DeepFool usable as a norm-ball attack in robust-accuracy comparisons.
    Samples DeepFool cannot flip within ``max_iter`` steps keep their last iterate.
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(overshoot, "overshoot", strict=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    if eps is not None:
        check_positive(eps, "eps", strict=False)
    n = len(x)
    flat = x.reshape(n, -1)
    r_tot = torch.zeros_like(flat)
    x_adv = x.clone()
    active = logits.argmax(1) == y
    with eval_mode(model), torch.enable_grad():
        for _ in range(int(max_iter)):
            idx = torch.nonzero(active)[:, 0]
            if len(idx) == 0:
                break
            out, jac = _jacobian(model, x_adv[idx])
            still = out.argmax(1) == y[idx]
            idx, out, jac = idx[still], out[still], jac[still]
            active[:] = False
            active[idx] = True
            if len(idx) == 0:
                break
            yi = y[idx]
            f = out - out.gather(1, yi[:, None])                          # (m, C)
            w = jac - jac[torch.arange(len(idx)), yi][:, None, :]          # (m, C, d)
            w_norm = w.norm(dim=2).clamp_min(1e-12)
            dist = f.abs() / w_norm
            dist[torch.arange(len(idx)), yi] = torch.inf
            k = dist.argmin(dim=1)
            rows = torch.arange(len(idx))
            step = (dist[rows, k] + 1e-4)[:, None] * w[rows, k] / w_norm[rows, k][:, None]
            r_tot[idx] = r_tot[idx] + step
            r = (1 + overshoot) * r_tot[idx]
            if eps is not None:
                r = r * torch.clamp(eps / r.norm(dim=1).clamp_min(1e-12), max=1.0)[:, None]
            new = clip_to_box(flat[idx] + r, bounds)
            x_adv[idx] = new.reshape(len(idx), *x.shape[1:])
    return x_adv.detach()

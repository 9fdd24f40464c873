"""Gradient attacks in a norm ball: FGSM and PGD (L-inf and L2), plus the attack registry.

Every attack has the signature ``attack(model, x, y, **kw) -> x_adv`` with ``x_adv`` the same shape,
dtype and device as ``x``. Shared behaviour, fixing the pitfalls seen in torchattacks/foolbox:

- the model is put in eval mode during the attack and every module's mode is restored afterwards;
- norms are per sample, over all non-batch axes, so flat ``(n, d)`` and image ``(n, c, h, w)`` inputs
  both work;
- perturbed inputs are clipped to the input box ``bounds`` (``None`` for unbounded inputs);
- restarts keep, per sample, the strongest result (highest margin), never the last one;
- no device is hard-coded: everything lives on ``x.device``;
- gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so the parameters'
  ``.grad`` are never touched (safe inside a training loop).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_finite, check_positive, to_tensor, unknown_name_error
from ..models import eval_mode, predict

_NORMS = {"inf": "inf", "linf": "inf", "l_inf": "inf", "2": "2", "l2": "2"}


# --------------------------------------------------------------------------------------------------
# validation and shared helpers


def canonical_norm(norm) -> str:
    """``"inf"`` or ``"2"`` from the accepted spellings (``"inf"``, ``"linf"``, ``inf``, ``2``, ``"l2"``)."""
    key = str(norm).lower().replace(" ", "")
    if isinstance(norm, (int, float)) and not isinstance(norm, bool):
        key = "inf" if math.isinf(norm) else str(int(norm)) if float(norm).is_integer() else key
    if key not in _NORMS:
        raise ValueError(f"norm: unknown norm {norm!r}; choose 'inf' (L-infinity) or '2' (L2)")
    return _NORMS[key]


def check_bounds(bounds, name: str = "bounds") -> tuple[float, float] | None:
    """``None`` or a finite ``(low, high)`` with low < high."""
    if bounds is None:
        return None
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected None or a (low, high) pair, got {bounds!r}") from e
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: need finite low < high, got {bounds!r}")
    return lo, hi


def check_inputs(model, x, y, bounds, tol: float = 1e-6):
    """Validate ``(x, y, bounds)`` for an attack on ``model``.

    Returns ``(x, y, bounds, logits)``: x as a float tensor (n, ...) in the model's parameter dtype (so
    float64 numpy input works with a float32 model; attacks return x_adv in that dtype), y as int64 (n,)
    on x's device,
    the checked bounds, and the clean logits (n, n_classes) computed in eval mode.
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    x = to_tensor(x, "x")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and x.dtype != dtype:  # e.g. float64 numpy input to a float32 model
        x = x.to(dtype)
    elif not x.is_floating_point():
        x = x.float()
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a batch of inputs (n, ...) with n >= 1, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x.sum())):  # a finite sum means finite entries: skip the full scan
        check_finite(x, "x")
    bounds = check_bounds(bounds)
    if bounds is not None:
        lo, hi = bounds
        below, above = float(x.min()), float(x.max())
        if below < lo - tol or above > hi + tol:
            raise ValueError(
                f"x: inputs lie outside the declared box bounds={bounds} (min {below:.4g}, max {above:.4g});"
                " rescale x or pass the right bounds (None for unbounded inputs)"
            )
    y = to_tensor(y, "y", device=x.device)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected integer labels of shape ({x.shape[0]},), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise ValueError("y: expected integer class labels, got non-integer floats")
    y = y.long()
    with eval_mode(model), torch.no_grad():
        logits = model(x)
    if logits.ndim != 2:
        raise ValueError(f"model: expected logits of shape (n, n_classes), got {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise ValueError(f"model: an attack needs at least 2 classes, the model outputs {n_classes}")
    if bool(((y < 0) | (y >= n_classes)).any()):
        raise ValueError(f"y: labels must lie in [0, {n_classes}) for this model, got range "
                         f"[{int(y.min())}, {int(y.max())}]")
    return x, y, bounds, logits


def resolve_target(target, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Target labels (n,) from a tensor/array, or a function ``target(logits, y) -> labels``.

    ``None`` picks the least-likely class under the clean logits (the hardest target).
    """
    if target is None:
        t = logits.argmin(dim=1)
    elif callable(target):
        t = target(logits, y)
    else:
        t = target
    t = to_tensor(t, "target", device=y.device)
    if t.ndim != 1 or t.shape[0] != y.shape[0] or t.is_floating_point():
        raise ValueError(f"target: expected integer labels of shape ({y.shape[0]},), got {tuple(t.shape)}")
    t = t.long()
    if bool(((t < 0) | (t >= logits.shape[1])).any()):
        raise ValueError(f"target: labels must lie in [0, {logits.shape[1]})")
    return t


def random_other_class(generator: torch.Generator | None = None):
    """A target function: a uniformly random class different from the true label."""

    def fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        shift = torch.randint(1, n_classes, y.shape, generator=generator, device="cpu").to(y.device)
        return (y + shift) % n_classes

    return fn


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample attack margin (n,): > 0 means the attack succeeded.

    Untargeted: max_{j != y} z_j - z_y. Targeted: z_t - max_{j != t} z_j.
    """
    own = logits.gather(1, labels[:, None])[:, 0]
    top2, idx = logits.topk(2, dim=1)  # the best other class is the runner-up when labels is the top
    other = torch.where(idx[:, 0] == labels, top2[:, 1], top2[:, 0])
    return own - other if targeted else other - own


def per_sample_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Norm of each sample (n,) over all non-batch axes; ``norm`` is "inf" or "2"."""
    flat = d.reshape(d.shape[0], -1)
    return flat.abs().amax(dim=1) if norm == "inf" else flat.norm(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def project_ball(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project each sample's ``delta`` onto the ``norm`` ball of radius ``eps``."""
    if norm == "inf":
        return delta.clamp(-eps, eps)
    n = per_sample_norm(delta, "2")
    return delta * _bcast(torch.clamp(eps / n.clamp_min(1e-12), max=1.0), delta)


def random_in_ball(shape, eps: float, norm: str, generator, device, dtype) -> torch.Tensor:
    """Points drawn uniformly from the ``norm`` ball of radius ``eps``, one per sample."""
    if norm == "inf":
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return (2 * u - 1) * eps
    g = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    d = g[0].numel()
    r = torch.rand(shape[0], generator=generator, device=device, dtype=dtype) ** (1.0 / d)
    return g / _bcast(per_sample_norm(g, "2").clamp_min(1e-12), g) * _bcast(r * eps, g)


def _clip(x: torch.Tensor, bounds) -> torch.Tensor:
    return x if bounds is None else x.clamp(*bounds)


def _generator(seed, device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


# --------------------------------------------------------------------------------------------------
# attacks


def pgd(
    model: torch.nn.Module,
    x,
    y,
    eps: float = 0.1,
    norm: str = "inf",
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = True,
    targeted: bool = False,
    target=None,
    restarts: int = 1,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    loss: str = "ce",
    seed: int | None = 0,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in an L-inf or L2 ball.

    x: (n, ...) inputs in the box ``bounds``; y: (n,) true labels. Returns x_adv (same shape as x) with
    ``||x_adv - x||_norm <= eps`` per sample and ``x_adv`` inside ``bounds``.

    eps: radius of the ball (0 returns x). norm: "inf" (signed-gradient steps) or "2" (normalised
    gradient steps). steps: iterations per restart. step_size: default 2.5 * eps / steps (Madry).
    random_start: start each restart at a uniform point of the ball (the first restart too).
    targeted: push towards ``target`` (a tensor of labels, or a function ``target(logits, y)``;
    default: the least-likely clean class) instead of away from y. restarts: independent runs; per
    sample, the one with the highest margin is kept (later restarts only run on samples not yet
    fooled). Within a restart, a sample gets the final iterate, or if that one no longer fools the
    model, the latest iterate that did. loss: "ce" (cross-entropy) or "margin" (Carlini-Wagner logit
    margin).
    seed: seeds the random starts (None: torch's global RNG).
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(eps, "eps", strict=False)
    norm = canonical_norm(norm)
    check_choice(loss, "loss", ("ce", "margin"))
    if int(steps) < 1 or int(restarts) < 1:
        raise ValueError(f"steps and restarts: must be >= 1, got steps={steps}, restarts={restarts}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    check_positive(step_size, "step_size", strict=False)
    labels = resolve_target(target, logits, y) if targeted else y

    best = x.clone()
    best_score = margin(logits, labels, targeted)
    if eps == 0:
        return best
    gen = _generator(seed, x.device)
    with eval_mode(model), torch.enable_grad():
        todo = torch.arange(len(x), device=x.device)
        for _ in range(int(restarts)):
            if len(todo) == 0:
                break
            xs, ls = x[todo], labels[todo]
            x_adv, score = _pgd_run(model, xs, ls, eps, norm, int(steps), step_size, random_start,
                                    targeted, bounds, loss, gen)
            better = score > best_score[todo]
            best[todo[better]] = x_adv[better]
            best_score[todo[better]] = score[better]
            todo = todo[best_score[todo] <= 0]
    return best


def _pgd_run(model, x, labels, eps, norm, steps, step_size, random_start, targeted, bounds, loss, gen):
    """One PGD restart. Per sample returns the latest iterate that fooled the model (the final iterate
    when none did) and its margin. Success is tracked with an argmax per step, far cheaper than a
    margin, which matters for small models where elementwise overhead rivals the forward pass."""
    if random_start:
        delta = random_in_ball(x.shape, eps, norm, gen, x.device, x.dtype)
        x_adv = _clip(x + delta, bounds)
    else:
        x_adv = x.clone()
    # a sample's "latest fooling iterate" only needs saving when it stops fooling the model: copy
    # rows on those (rare) transitions instead of on every step
    best, hit = x_adv.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
    prev, prev_now = None, None
    sign = -1.0 if targeted else 1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        out = model(x_adv)
        pred = out.detach().argmax(1)
        now = pred == labels if targeted else pred != labels
        if prev_now is not None:
            lost = prev_now & ~now
            if bool(lost.any()):
                best[lost] = prev[lost]
                hit |= lost
        prev, prev_now = x_adv.detach(), now
        if loss == "ce":
            obj = sign * F.cross_entropy(out, labels, reduction="sum")
        else:  # the success margin is maximised in both modes
            obj = margin(out, labels, targeted).sum()
        grad, = torch.autograd.grad(obj, x_adv)
        with torch.no_grad():
            if norm == "inf":
                step = step_size * grad.sign()
            else:
                g = per_sample_norm(grad, "2").clamp_min(1e-12)
                step = step_size * grad / _bcast(g, grad)
            delta = project_ball(x_adv.detach() + step - x, eps, norm)
            x_adv = _clip(x + delta, bounds)
    with torch.no_grad():
        out = model(x_adv)
        pred = out.argmax(1)
        now = pred == labels if targeted else pred != labels
        if prev_now is not None:
            lost = prev_now & ~now
            best[lost] = prev[lost]
            hit |= lost
        # the final iterate wins when it fools (it is usually the strongest); else the latest that did
        best = torch.where(_bcast(now | ~hit, x), x_adv, best)
        score = margin(out, labels, targeted)
        redo = hit & ~now
        if bool(redo.any()):
            score[redo] = margin(model(best[redo]), labels[redo], targeted)
    return best, score


def fgsm(
    model: torch.nn.Module,
    x,
    y,
    eps: float = 0.1,
    norm: str = "inf",
    random_start: bool = False,
    targeted: bool = False,
    target=None,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    seed: int | None = 0,
) -> torch.Tensor:
    """Fast gradient (sign) method (Goodfellow et al. 2015): one step of size eps.

    With ``random_start=True`` it is the "FGSM-RS" of Wong et al. 2020 (uniform start, step 1.25 eps,
    projected back to the ball), the cheap attack for adversarial training. Shapes as :func:`pgd`.
    Unlike PGD, the result is the single step (not the best of start and step).
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(eps, "eps", strict=False)
    norm = canonical_norm(norm)
    labels = resolve_target(target, logits, y) if targeted else y
    if eps == 0:
        return x.clone()
    gen = _generator(seed, x.device)
    x0 = _clip(x + random_in_ball(x.shape, eps, norm, gen, x.device, x.dtype), bounds) if random_start else x
    step_size = 1.25 * eps if random_start else eps
    with eval_mode(model), torch.enable_grad():
        x_in = x0.clone().requires_grad_(True)
        obj = F.cross_entropy(model(x_in), labels, reduction="sum")
        grad, = torch.autograd.grad(-obj if targeted else obj, x_in)
    if norm == "inf":
        step = step_size * grad.sign()
    else:
        step = step_size * grad / _bcast(per_sample_norm(grad, "2").clamp_min(1e-12), grad)
    return _clip(x + project_ball(x0 + step - x, eps, norm), bounds).detach()


# --------------------------------------------------------------------------------------------------
# evaluation helpers and the registry


def robust_accuracy(model: torch.nn.Module, attack: Callable, x, y) -> float:
    """Accuracy of ``model`` on ``attack(model, x, y)``: a sample counts only if it stays correct."""
    x_adv = attack(model, x, y)
    y = to_tensor(y, "y", device=x_adv.device).long()
    return float((predict(model, x_adv) == y).float().mean())


def _lazy(module: str, name: str) -> Callable:
    """A registry entry for an attack in another module, imported on first call."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module, __package__), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


ATTACKS: dict[str, Callable] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "lbfgs": _lazy(".lbfgs", "lbfgs"),
    "deepfool": _lazy(".deepfool", "deepfool"),
}
"""Attack name -> function ``attack(model, x, y, **kw) -> x_adv``."""


def make_attack(name: str, **kwargs) -> Callable:
    """``attack(model, x, y) -> x_adv`` for the registered ``name`` with ``kwargs`` fixed.

    E.g. ``train(model, data, cfg, attack=make_attack("pgd", eps=0.1, steps=7))``.
    """
    if name not in ATTACKS:
        raise unknown_name_error("attack", name, ATTACKS)
    fn = functools.partial(ATTACKS[name], **kwargs)
    fn.__name__ = name  # type: ignore[attr-defined]
    return fn

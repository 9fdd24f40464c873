"""Gradient attacks in a norm ball (FGSM and PGD, L-inf and L2), their checks, and the attack registry.

Every attack has the signature ``attack(model, x, y, *, bounds, **kw) -> x_adv`` with ``x_adv`` the same
shape, dtype and device as ``x``. Shared behaviour, fixing the pitfalls seen in torchattacks/foolbox:

- the model is put in eval mode during the attack and every module's mode is restored afterwards;
- norms are per sample, over all non-batch axes (:mod:`univ.adversarial.ball`), so flat ``(n, d)`` and
  image ``(n, c, h, w)`` inputs both work;
- perturbed inputs are clipped to the input box ``bounds``, which is required: the data knows its box
  (``data.bounds``), and ``None`` says the inputs are unbounded;
- restarts keep, per sample, the strongest result (highest margin), never the last one;
- no device is hard-coded: everything lives on ``x.device``;
- gradients are taken with ``torch.autograd.grad`` w.r.t. the input only, so the parameters'
  ``.grad`` are never touched (safe inside a training loop).

A new attack is one function and one registry line::

    @register_attack("my_attack")
    def my_attack(model, x, y, *, bounds, eps=0.1): ...

    attack = make_attack("my_attack", eps=0.2, bounds=data.bounds)   # attack(model, x, y) -> x_adv
    attack.spec                                  # {"name": "my_attack", "kwargs": {...}}, JSON for cache keys
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._checks import (
    as_labels,
    as_real_tensor,
    check_callable,
    check_choice,
    check_int,
    check_positive,
    check_seed,
    to_tensor,
)
from ..models import as_logits, as_model_input, check_model, eval_mode, predict, run_model
from ..registry import Registry
from ..utils import to_jsonable
from .ball import (
    canonical_norm,
    check_bounds,
    check_in_box,
    clip_to_box,
    make_generator,
    per_sample,
    project_ball,
    random_in_ball,
    steepest_step,
)

# --------------------------------------------------------------------------------------------------
# validation and shared helpers


def check_inputs(model, x, y, bounds, tol: float = 1e-6):
    """Validate ``(x, y, bounds)`` for an attack on ``model``.

    Returns ``(x, y, bounds, logits)``: x as a float tensor (n, ...) in the model's parameter dtype
    (:func:`univ.models.as_model_input`, so float64 numpy or integer input works with a float32 model;
    attacks return x_adv in that dtype), y as int64 (n,) on x's device, the checked bounds, and the clean
    logits (n, n_classes) computed in eval mode. A model whose forward returns anything but a logits
    tensor (a dict, a tuple, a HuggingFace output object) raises a ValueError naming ``model``.
    """
    check_model(model)
    x = as_real_tensor(x, "x")
    if not x.is_floating_point():  # the attack moves x continuously, so integer inputs become floats
        x = x.float()
    x = as_model_input(model, x)
    if x.ndim < 2:
        raise ValueError(f"x: expected a batch of inputs (n, ...) with n >= 1, got shape {tuple(x.shape)}")
    bounds = check_bounds(bounds)
    check_in_box(x, bounds, "x", tol)
    y = as_labels(y, "y", n=len(x), device=x.device)
    with eval_mode(model), torch.no_grad():
        logits = as_logits(run_model(model, x))
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
    logits, y = _logits_and_labels(logits, y, "y")
    if target is None:
        t = logits.argmin(dim=1)
    elif callable(target):
        t = target(logits, y)
    else:
        t = target
    t = to_tensor(t, "target", device=y.device)
    if t.ndim != 1 or t.shape[0] != y.shape[0] or t.is_floating_point() or t.is_complex():
        raise ValueError(f"target: expected integer labels of shape ({y.shape[0]},), got {tuple(t.shape)}")
    return as_labels(t, "target", n_classes=logits.shape[1])


def _logits_and_labels(logits, labels, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """logits as a real (n, n_classes >= 2) tensor (graph kept) and labels as int64 (n,) within range."""
    if not isinstance(logits, torch.Tensor):
        logits = as_real_tensor(logits, "logits")
    if logits.ndim != 2 or logits.shape[1] < 2 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float (n, n_classes) tensor with n_classes >= 2, got "
                         f"{logits.dtype} {tuple(logits.shape)}")
    return logits, as_labels(labels, name, n=len(logits), n_classes=logits.shape[1], device=logits.device)


def random_other_class(generator: torch.Generator | None = None):
    """A target function: a uniformly random class different from the true label."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")

    def fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n_classes = logits.shape[1]
        shift = torch.randint(1, n_classes, y.shape, generator=generator, device="cpu").to(y.device)
        return (y + shift) % n_classes

    return fn


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    """Per-sample attack margin (n,): > 0 means the attack succeeded.

    Untargeted: max_{j != y} z_j - z_y. Targeted: z_t - max_{j != t} z_j.
    """
    logits, labels = _logits_and_labels(logits, labels, "labels")
    own = logits.gather(1, labels[:, None])[:, 0]
    top2, idx = logits.topk(2, dim=1)  # the best other class is the runner-up when labels is the top
    other = torch.where(idx[:, 0] == labels, top2[:, 1], top2[:, 0])
    return own - other if targeted else other - own


# --------------------------------------------------------------------------------------------------
# the registry


ATTACKS: Registry = Registry("attack")
"""Attack name -> function ``attack(model, x, y, *, bounds, **kw) -> x_adv``."""

register_attack = ATTACKS.register
"""``@register_attack("name")`` on an attack function adds it to :data:`ATTACKS`."""


# --------------------------------------------------------------------------------------------------
# attacks


@register_attack("pgd")
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
    *,
    bounds: tuple[float, float] | None,
    loss: str = "ce",
    seed: int | None = 0,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018) in an L-inf or L2 ball.

    x: (n, ...) inputs; y: (n,) true labels. bounds: the input box, required (the data's own, e.g.
    ``data.bounds``; None for unbounded inputs), so that no attack silently assumes [0, 1]. Returns
    x_adv (same shape as x) with ``||x_adv - x||_norm <= eps`` per sample and ``x_adv`` inside ``bounds``.

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
    steps, restarts = check_int(steps, "steps", low=1), check_int(restarts, "restarts", low=1)
    seed = check_seed(seed)
    step_size = 2.5 * eps / steps if step_size is None else step_size
    check_positive(step_size, "step_size", strict=False)
    labels = resolve_target(target, logits, y) if targeted else y

    best = x.clone()
    best_score = margin(logits, labels, targeted)
    if eps == 0:
        return best
    gen = make_generator(seed, x.device)
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
        x_adv = clip_to_box(x + delta, bounds)
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
            delta = project_ball(x_adv.detach() + steepest_step(grad, step_size, norm) - x, eps, norm)
            x_adv = clip_to_box(x + delta, bounds)
    with torch.no_grad():
        out = model(x_adv)
        pred = out.argmax(1)
        now = pred == labels if targeted else pred != labels
        if prev_now is not None:
            lost = prev_now & ~now
            best[lost] = prev[lost]
            hit |= lost
        # the final iterate wins when it fools (it is usually the strongest); else the latest that did
        best = torch.where(per_sample(now | ~hit, x), x_adv, best)
        score = margin(out, labels, targeted)
        redo = hit & ~now
        if bool(redo.any()):
            score[redo] = margin(model(best[redo]), labels[redo], targeted)
    return best, score


@register_attack("fgsm")
def fgsm(
    model: torch.nn.Module,
    x,
    y,
    eps: float = 0.1,
    norm: str = "inf",
    random_start: bool = False,
    targeted: bool = False,
    target=None,
    *,
    bounds: tuple[float, float] | None,
    seed: int | None = 0,
) -> torch.Tensor:
    """Fast gradient (sign) method (Goodfellow et al. 2015): one step of size eps.

    With ``random_start=True`` it is the "FGSM-RS" of Wong et al. 2020 (uniform start, step 1.25 eps,
    projected back to the ball), the cheap attack for adversarial training. Shapes and ``bounds`` as
    :func:`pgd`. Unlike PGD, the result is the single step (not the best of start and step).
    """
    x, y, bounds, logits = check_inputs(model, x, y, bounds)
    check_positive(eps, "eps", strict=False)
    norm = canonical_norm(norm)
    seed = check_seed(seed)
    labels = resolve_target(target, logits, y) if targeted else y
    if eps == 0:
        return x.clone()
    gen = make_generator(seed, x.device)
    x0 = clip_to_box(x + random_in_ball(x.shape, eps, norm, gen, x.device, x.dtype), bounds) if random_start else x
    step_size = 1.25 * eps if random_start else eps
    with eval_mode(model), torch.enable_grad():
        x_in = x0.clone().requires_grad_(True)
        obj = F.cross_entropy(model(x_in), labels, reduction="sum")
        grad, = torch.autograd.grad(-obj if targeted else obj, x_in)
    return clip_to_box(x + project_ball(x0 + steepest_step(grad, step_size, norm) - x, eps, norm), bounds).detach()


# --------------------------------------------------------------------------------------------------
# attacks as objects, and robust accuracy


@dataclasses.dataclass(frozen=True)
class Attack:
    """A registered attack with its keyword arguments fixed: ``Attack(name, kwargs)(model, x, y) -> x_adv``.

    Build it with :func:`make_attack`. ``spec`` describes it as JSON, so caches keyed by an attack (e.g.
    :func:`univ.cache.cached_model`) need nothing else.
    """

    name: str
    """Registry name (a key of :data:`ATTACKS`)."""
    kwargs: dict = dataclasses.field(default_factory=dict, hash=False)
    """Keyword arguments passed to the attack function on every call (``bounds`` among them)."""

    def __call__(self, model: torch.nn.Module, x, y) -> torch.Tensor:
        return ATTACKS[self.name](model, x, y, **self.kwargs)

    @property
    def spec(self) -> dict:
        """``{"name": ..., "kwargs": {...}}`` as plain JSON types; a ValueError when a keyword argument has
        no JSON form (a target tensor or function), since then nothing can key a cache by it."""
        spec = {"name": self.name, "kwargs": to_jsonable(self.kwargs)}
        try:
            json.dumps(spec, sort_keys=True)
        except TypeError as e:
            raise ValueError(f"kwargs: attack {self.name!r} has arguments without a JSON form ({e}); "
                             "its spec cannot describe it") from e
        return spec


def make_attack(name: str, **kwargs) -> Attack:
    """The registered attack ``name`` with ``kwargs`` fixed: an :class:`Attack`, called as
    ``attack(model, x, y) -> x_adv`` and described by ``attack.spec``.

    E.g. ``train(model, data, cfg, attack=make_attack("pgd", eps=0.1, steps=7, bounds=data.bounds))``.
    Unknown names and arguments the attack does not take raise a ValueError, as does a missing required
    argument (``bounds``: pass the data's box, or None for unbounded inputs).
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected an attack name, got {type(name).__name__} {name!r}")
    fn = ATTACKS[name]
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(list(params)[3:]))
        if unknown:
            raise ValueError(f"kwargs: attack {name!r} takes no argument(s) {unknown}; "
                             f"it takes {list(params)[3:]}")
    missing = [k for k, p in list(params.items())[3:] if p.default is p.empty
               and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and k not in kwargs]
    if missing:
        hint = " (the data's box, e.g. data.bounds, or None for unbounded inputs)" if missing[0] == "bounds" else ""
        raise ValueError(f"{missing[0]}: required by attack {name!r}{hint}")
    kwargs = dict(kwargs)
    if "bounds" in kwargs:  # checked now, and as floats, so that (0, 1) and (0.0, 1.0) share one spec
        kwargs["bounds"] = check_bounds(kwargs["bounds"])
    return Attack(name, kwargs)


def robust_accuracy(model: torch.nn.Module, x, y, attack: Callable) -> float:
    """Accuracy of ``model`` on ``attack(model, x, y)``: a sample counts only if it stays correct."""
    check_model(model)
    check_callable(attack, "attack")
    x_adv = attack(model, x, y)
    y = as_labels(y, "y", n=len(x_adv), device=x_adv.device)
    return float((predict(model, x_adv) == y).float().mean())

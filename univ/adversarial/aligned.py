"""SAE-aligned perturbations: attacks on a chosen feature, steering along decoder directions, transfer.

(a) :func:`feature_attack`: PGD in input space that raises (or suppresses) a feature at a layer, e.g. an
    SAE latent's pre-activation (:func:`sae_latent`) or a projection on any direction.
(b) :func:`steer` / :func:`steering_effect`: add ``alpha * direction`` to a layer's activations and read
    the logits, against random directions of the same norm.
(c) :func:`transfer_rates`: how often adversarial examples crafted on one model fool another.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .._checks import check_finite, check_positive, to_tensor
from ..activations import hooks, layer_forward
from ..models import as_logits, as_model_input, eval_mode, predict
from .ball import (
    canonical_norm,
    check_bounds,
    check_in_box,
    clip_to_box,
    make_generator,
    project_ball,
    random_in_ball,
    steepest_step,
)


def sae_latent(sae, latent):
    """A feature function ``acts (n, d) -> (n,)``: the pre-activation of SAE latent ``latent``
    (differentiable, unlike ``sae.encode``). latent: one index, or one per sample (n,)."""
    idx = torch.as_tensor(latent).long()
    if bool(((idx < 0) | (idx >= int(sae.d_sae))).any()):
        raise ValueError(f"latent: must lie in [0, {sae.d_sae}), got {latent}")
    W, b = sae.W_enc.detach(), sae.b_enc.detach()
    b_dec, scale = sae.b_dec.detach(), sae.norm_scale.detach()

    def fn(acts: torch.Tensor) -> torch.Tensor:
        centred = acts.to(W.dtype) * scale - b_dec  # (n, d)
        if idx.ndim == 0:
            return centred @ W[:, idx] + b[idx]
        if len(idx) != len(acts):
            raise ValueError(f"latent: {len(idx)} indices for {len(acts)} samples")
        return (centred * W[:, idx].T).sum(1) + b[idx]

    return fn


def direction_feature(direction):
    """A feature function ``acts -> acts @ direction / ||direction||``."""
    v = to_tensor(direction, "direction").double()
    v = v / v.norm().clamp_min(1e-12)
    return lambda acts: acts.double() @ v.to(acts.device)


def feature_attack(
    model: torch.nn.Module,
    x,
    layer: str,
    feature,
    increase: bool = True,
    eps: float = 0.1,
    norm: str = "inf",
    steps: int = 20,
    step_size: float | None = None,
    random_start: bool = False,
    *,
    bounds: tuple[float, float] | None,
    reduce: str | None = None,
    seed: int | None = 0,
) -> torch.Tensor:
    """PGD in input space that raises (``increase=True``) or suppresses a feature at ``layer``.

    x: (n, ...) inputs; feature: ``f(acts) -> (n,)`` (see :func:`sae_latent`, :func:`direction_feature`).
    Returns x_adv (n, ...) in the ``norm`` ball of radius ``eps`` around x and inside ``bounds`` (required:
    the data's box, or None for unbounded inputs); per sample the iterate with the most extreme feature
    value is kept. Inputs are cast as for the model's forward (:func:`univ.models.as_model_input`).
    """
    x = to_tensor(x, "x")
    x = as_model_input(model, x if x.is_floating_point() else x.float())
    check_finite(x, "x")
    check_positive(eps, "eps", strict=False)
    norm = canonical_norm(norm)
    bounds = check_bounds(bounds)
    check_in_box(x, bounds, "x")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    sign = 1.0 if increase else -1.0
    gen = make_generator(seed, x.device)
    x_adv = clip_to_box(x + random_in_ball(x.shape, eps, norm, gen, x.device, x.dtype), bounds) if random_start \
        else x.clone()
    best, best_val = x_adv.clone(), torch.full((len(x),), -torch.inf, device=x.device, dtype=torch.float64)
    with eval_mode(model), torch.enable_grad():
        for i in range(int(steps) + 1):
            x_adv.requires_grad_(True)
            _, acts = layer_forward(model, x_adv, layer, reduce)
            val = sign * feature(acts)
            better = val.detach().double() > best_val
            best[better], best_val[better] = x_adv.detach()[better], val.detach().double()[better]
            if i == steps or eps == 0:
                break
            grad, = torch.autograd.grad(val.sum(), x_adv)
            with torch.no_grad():
                step = steepest_step(grad, step_size, norm)
                x_adv = clip_to_box(x + project_ball(x_adv.detach() + step - x, eps, norm), bounds)
    return best.detach()


def steer(model, x, layer: str, vector, alpha: float = 1.0) -> torch.Tensor:
    """Logits (n, C) with ``alpha * vector`` added to the activations at ``layer``.

    vector: (d,) in the layer's flattened space (n, d), or, for channels-last hooks (n, pos, d_model),
    a (d_model,) vector added at every position (which shifts the position-mean by the same vector).
    """
    v = to_tensor(vector, "vector").float()

    def hook(out):
        if v.numel() == out[0].numel():
            return out + alpha * v.to(out).reshape(out.shape[1:])
        if v.numel() == out.shape[-1]:
            return out + alpha * v.to(out)
        raise ValueError(f"vector: {v.numel()} entries fit neither the activations {tuple(out.shape[1:])} "
                         f"of {layer!r} nor their last axis")

    x = to_tensor(x, "x")
    with eval_mode(model), torch.no_grad(), hooks(model, {layer: hook}, what="layer"):
        return as_logits(model(as_model_input(model, x)))


def steering_effect(model, x, layer: str, directions, classes, alphas=(1.0, 2.0, 4.0),
                    n_random: int = 1, seed: int = 0) -> pd.DataFrame:
    """Effect on the logits of steering along each of ``directions`` (m, d) by ``alphas``.

    classes: (m,) the class each direction is associated with (e.g. an SAE latent's top class). Each
    direction is compared with ``n_random`` random directions of the same norm. Columns: direction,
    kind ("feature"/"random"), alpha, class, dlogit_class (mean change of that class's logit minus
    the mean change of the others), frac_to_class (fraction of inputs not of that class that the
    steered model predicts as it), frac_flipped (prediction changed).
    """
    D = to_tensor(directions, "directions").float()
    classes = np.asarray(classes)
    x = to_tensor(x, "x")
    with eval_mode(model), torch.no_grad():
        base = as_logits(model(as_model_input(model, x)))
    pred0 = base.argmax(1)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for j in range(D.shape[0]):
        c = int(classes[j])
        variants = [("feature", D[j])]
        for _ in range(n_random):
            r = torch.randn(D.shape[1], generator=g)
            variants.append(("random", r / r.norm() * D[j].norm()))
        for kind, v in variants:
            for a in alphas:
                out = steer(model, x, layer, v, a)
                dl = out - base
                others = torch.cat([dl[:, :c], dl[:, c + 1:]], 1).mean(1)
                pred = out.argmax(1)
                not_c = pred0 != c
                rows.append({"direction": j, "kind": kind, "alpha": float(a), "class": c,
                             "dlogit_class": float((dl[:, c] - others).mean()),
                             "frac_to_class": float((pred[not_c] == c).float().mean()) if not_c.any() else np.nan,
                             "frac_flipped": float((pred != pred0).float().mean())})
    return pd.DataFrame(rows)


def transfer_rates(adversarial: dict, targets: dict, x, y) -> pd.DataFrame:
    """How adversarial examples transfer between models.

    adversarial: {(source, attack): x_adv (n, ...)} crafted on model ``source``; targets: {name: model}.
    A transfer counts on samples the target classifies correctly when clean. Columns: source, attack,
    target, n, fool_rate (fraction of those misclassified on x_adv), white_box (source == target).
    """
    x = to_tensor(x, "x")
    y = to_tensor(y, "y").long()
    clean = {name: predict(m, x) == y for name, m in targets.items()}
    rows = []
    for (source, attack), x_adv in adversarial.items():
        for name, m in targets.items():
            ok = clean[name]
            fooled = predict(m, x_adv)[ok] != y[ok]
            rows.append({"source": source, "attack": attack, "target": name, "n": int(ok.sum()),
                         "fool_rate": float(fooled.float().mean()) if ok.any() else np.nan,
                         "white_box": source == name})
    return pd.DataFrame(rows)

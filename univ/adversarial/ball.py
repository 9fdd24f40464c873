"""Norm balls and input boxes: the geometry every attack shares.

Norms are per sample, over all non-batch axes, so flat ``(n, d)`` and image ``(n, c, h, w)`` inputs both
work; a norm is named ``"inf"`` (L-infinity) or ``"2"`` (L2) once :func:`canonical_norm` has read it.
A box is ``None`` (unbounded inputs) or a finite ``(low, high)`` pair, the dataset's own
(``univ.data.Dataset.bounds``).
"""

from __future__ import annotations

import math
import numbers

import torch

from .._checks import check_device, check_positive, check_seed, to_tensor

_NORMS = {"inf": "inf", "linf": "inf", "l_inf": "inf", "2": "2", "l2": "2"}


def _norm(norm) -> str:
    """canonical_norm with a fast path for the canonical names (these helpers run once per attack step)."""
    return norm if isinstance(norm, str) and (norm == "inf" or norm == "2") else canonical_norm(norm)


def _tensor(x, name: str) -> torch.Tensor:
    """x as a tensor, its autograd graph kept (a no-op for a tensor)."""
    return x if isinstance(x, torch.Tensor) else to_tensor(x, name, detach=False)


def _batch(x, name: str) -> torch.Tensor:
    t = _tensor(x, name)
    if t.ndim == 0 or t.shape[0] == 0:
        raise ValueError(f"{name}: expected a batch (n, ...) with n >= 1, got shape {tuple(t.shape)}")
    return t


def _radius(eps, name: str):
    if not (type(eps) is float and 0 <= eps < math.inf):
        check_positive(eps, name, strict=False)
    return eps


def canonical_norm(norm) -> str:
    """``"inf"`` or ``"2"`` from the accepted spellings (``"inf"``, ``"linf"``, ``inf``, ``2``, ``"l2"``)."""
    if not isinstance(norm, (str, numbers.Real)):
        raise ValueError(f"norm: unknown norm {norm!r}; choose 'inf' (L-infinity) or '2' (L2)")
    key = str(norm).lower().replace(" ", "")
    if isinstance(norm, numbers.Real) and not isinstance(norm, bool) and not math.isnan(norm):
        key = "inf" if norm == math.inf else str(int(norm)) if float(norm).is_integer() else key
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


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector (n,) reshaped to (n, 1, ..., 1) so that it broadcasts against ``like`` (n, ...)."""
    v, like = _tensor(v, "v"), _batch(like, "like")
    if v.numel() != like.shape[0]:
        raise ValueError(f"v: expected one value per sample ({like.shape[0]}), got shape {tuple(v.shape)}")
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def per_sample_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Norm of each sample (n,) over all non-batch axes; ``norm`` is "inf" or "2" (or another spelling
    :func:`canonical_norm` accepts)."""
    d, norm = _batch(d, "d"), _norm(norm)
    flat = d.reshape(d.shape[0], -1)
    return flat.abs().amax(dim=1) if norm == "inf" else flat.norm(dim=1)


def project_ball(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project each sample's ``delta`` onto the ``norm`` ball of radius ``eps``."""
    delta, eps, norm = _batch(delta, "delta"), _radius(eps, "eps"), _norm(norm)
    if norm == "inf":
        return delta.clamp(-eps, eps)
    n = per_sample_norm(delta, "2")
    return delta * per_sample(torch.clamp(eps / n.clamp_min(1e-12), max=1.0), delta)


def steepest_step(grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    """The ``norm`` ball's steepest-ascent step of length ``step_size`` along ``grad`` (n, ...): the sign
    of the gradient for "inf", the per-sample unit gradient for "2"."""
    grad, step_size, norm = _batch(grad, "grad"), _radius(step_size, "step_size"), _norm(norm)
    if norm == "inf":
        return step_size * grad.sign()
    return step_size * grad / per_sample(per_sample_norm(grad, "2").clamp_min(1e-12), grad)


def random_in_ball(shape, eps: float, norm: str, generator, device, dtype) -> torch.Tensor:
    """Points drawn uniformly from the ``norm`` ball of radius ``eps``, one per sample: a tensor of ``shape``
    (n, ...) and ``dtype`` (floating) on ``device``; ``generator``: a torch.Generator on that device, or None."""
    eps, norm = _radius(eps, "eps"), _norm(norm)
    if isinstance(shape, torch.Size) or isinstance(shape, (tuple, list)):
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
            raise ValueError(f"shape: expected a non-empty tuple of positive integers, got {tuple(shape)}")
    else:
        raise ValueError(f"shape: expected a tuple of positive integers, got {type(shape).__name__} {shape!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    device = check_device(device)
    if norm == "inf":
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return (2 * u - 1) * eps
    g = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    d = g[0].numel()
    r = torch.rand(shape[0], generator=generator, device=device, dtype=dtype) ** (1.0 / d)
    return g / per_sample(per_sample_norm(g, "2").clamp_min(1e-12), g) * per_sample(r * eps, g)


def clip_to_box(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """``x`` clamped to the box ``bounds`` (unchanged when ``bounds`` is None)."""
    x = _tensor(x, "x")
    return x if bounds is None else x.clamp(*check_bounds(bounds))


def check_in_box(x: torch.Tensor, bounds: tuple[float, float] | None, name: str = "x", tol: float = 1e-6) -> None:
    """Raise a ValueError naming ``name`` when ``x`` has entries outside ``bounds`` (by more than ``tol``)."""
    if bounds is None:
        return
    lo, hi = bounds
    below, above = float(x.min()), float(x.max())
    if below < lo - tol or above > hi + tol:
        raise ValueError(
            f"{name}: inputs lie outside the declared box bounds={bounds} (min {below:.4g}, max {above:.4g});"
            " rescale x or pass the right bounds (None for unbounded inputs)"
        )


def make_generator(seed: int | None, device) -> torch.Generator | None:
    """A torch.Generator on ``device`` seeded with ``seed``; None (torch's global RNG) when seed is None."""
    seed = check_seed(seed)
    device = check_device(device)
    if seed is None:
        return None
    return torch.Generator(device=device or "cpu").manual_seed(seed)

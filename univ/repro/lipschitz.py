"""Lipschitz bounds of feed-forward ReLU networks: per-layer operator norms, their product, a tighter
bound that splits the ReLUs, and empirical local estimates.

Everything is in the L2 norm on flattened inputs and outputs (logits), as in Szegedy et al. (2013),
Section 4.3: ``||f(x) - f(x + r)|| <= L ||r||`` with ``L = prod_k L_k`` over layers.

- Linear layers: ``L_k = ||W||_2``, the largest singular value (exact, float64).
- Conv layers (their Table 5, Eq. 1; Sedghi et al. 2019): a stride-1 *circular* convolution on an
  N x N grid is block-diagonalised by the 2-D DFT, so its operator norm is the max over the N^2
  frequencies of the largest singular value of the (c_out x c_in) matrix of kernel DFTs.
  Padding caveat: a zero-padded conv (padding p) on an n x n input is a restriction of the circular
  conv on the (n + 2p) grid (no output it keeps wraps around), so the FFT norm on that grid is an
  upper bound of the zero-padded layer, not its exact norm; ``padding="circular"`` on the n grid gives
  the exact norm of the circular layer only. A stride-s conv keeps a subset of the stride-1 outputs,
  so the stride-1 value is again an upper bound. :func:`dense_matrix` gives the exact layer norm for
  small inputs.
- ReLU: 1. Max-pool with non-overlapping windows (kernel <= stride): 1 (each input reaches one window).

A tighter global bound (:func:`split_bound`): for a ReLU net the Jacobian is, almost everywhere,
``J = W_m D_{m-1} W_{m-1} ... D_1 W_1`` with diagonal 0/1 matrices D_i, and the Lipschitz constant is
``sup ||J||``. Write each ``D_i = A_i + B_i^(1/2) S_i B_i^(1/2)`` with fixed diagonals A_i, B_i and an
unknown diagonal sign matrix S_i (``A = B = I/2`` globally). J is multilinear in the D_i, so it is a
sum of 2^(m-1) terms; in each term, a ReLU either passes (A_i joins the linear maps around it) or
breaks (``||S_i|| <= 1``), and the term is bounded by the product of the norms of the merged segments.
Globally every term is at most ``2^-(m-1) prod ||W_k||``, so the sum never exceeds the product bound,
and it is strictly smaller whenever ``||W_2 W_1|| < ||W_2|| ||W_1||`` (top singular directions not
aligned). Combettes & Pesquet (2020) bound networks with averaged activations by a similar sum over
2^(m-1) products; this is the ReLU (firmly nonexpansive) case, proved here through the Jacobian.
Over an input box, interval bound propagation (IBP) finds neurons that are always off
(A = B = 0) or always on (A = I, B = 0), which gives a local bound (:func:`local_split_bound`) valid
for every pair of points in that box. Max-pool layers are forced breaks (their Jacobian selects one
input per window, norm <= 1), except where IBP proves every window's winner, which makes the pool a
fixed selection matrix merged into its segment. As the box shrinks to a point, every unit and window is
fixed and the local bound becomes the Jacobian norm there, the exact local Lipschitz constant.

The rest of the ladder (LipSDP, ECLipsE, exact constants of small nets, certified lower bounds and the
direction gains) lives in :mod:`univ.lipschitz`, which builds on :func:`chain` and :func:`dense_matrix`.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import to_tensor
from ..models import eval_mode

_CONV = (nn.Conv1d, nn.Conv2d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d)


# --------------------------------------------------------------------------------------------------
# per-layer operator norms


def spectral_norm(W) -> float:
    """Largest singular value of a matrix ``W: (m, n)`` (exact SVD in float64)."""
    W = to_tensor(W, "W").double()
    if W.ndim != 2 or W.numel() == 0:
        raise ValueError(f"W: expected a non-empty 2-D matrix, got shape {tuple(W.shape)}")
    m, n = W.shape
    if min(m, n) <= 256:
        return float(torch.linalg.matrix_norm(W, ord=2))
    # large: the top eigenvalue of the smaller Gram matrix is ||W||^2 (several times cheaper than an SVD)
    G = W.T @ W if n < m else W @ W.T
    return float(torch.linalg.eigvalsh(G)[-1].clamp_min(0).sqrt())


def power_iteration(apply, adjoint, dim: int, iters: int = 200, seed: int = 0) -> float:
    """Operator norm of a linear map by power iteration on ``adjoint(apply(v))``: a lower estimate
    that converges to ``||A||`` (for maps too big to build densely). ``apply``: (dim,) -> (m,)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v /= v.norm()
    sigma = 0.0
    for _ in range(int(iters)):
        w = adjoint(apply(v))
        nrm = w.norm()
        if nrm == 0:
            return 0.0
        v = w / nrm
        sigma = float(apply(v).norm())
    return sigma


def conv_norm_fft(weight, input_size, padding: int | str = 0) -> float:
    """Operator norm bound of a stride-1 conv layer from the DFT of its kernel (Szegedy's Eq. 1).

    weight: (c_out, c_in, *kernel) (1-D or 2-D conv); input_size: spatial size of the input (int or
    tuple). padding: "circular" -> the exact norm of the circular conv on the ``input_size`` grid;
    an int p (zero padding, PyTorch's meaning) -> the circular norm on the ``input_size + 2p`` grid,
    a valid upper bound of the zero-padded layer (see the module docstring).
    """
    w = to_tensor(weight, "weight").double()
    if w.ndim not in (3, 4):
        raise ValueError(f"weight: expected (c_out, c_in, *kernel) with 1 or 2 spatial axes, got {tuple(w.shape)}")
    spatial = w.ndim - 2
    size = (input_size,) * spatial if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) != spatial:
        raise ValueError(f"input_size: need {spatial} spatial sizes for this kernel, got {input_size!r}")
    pad = 0 if padding == "circular" else int(padding)
    grid = tuple(s + 2 * pad for s in size)
    if any(g < k for g, k in zip(grid, w.shape[2:])):
        raise ValueError(f"input_size: grid {grid} is smaller than the kernel {tuple(w.shape[2:])}")
    # (c_out, c_in, *freq) -> one (c_out x c_in) matrix per frequency
    spec = torch.fft.fftn(w, s=grid, dim=tuple(range(2, w.ndim)))
    mats = spec.reshape(w.shape[0], w.shape[1], -1).permute(2, 0, 1)
    return float(torch.linalg.matrix_norm(mats, ord=2).max())


def dense_matrix(module: nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The exact matrix (out_features, in_features) of a linear or conv layer (bias dropped), in
    float64, acting on flattened inputs of shape ``in_shape`` (no batch axis); built by applying the
    layer to the identity basis, so padding and stride are the layer's own."""
    d = math.prod(in_shape)
    eye = torch.eye(d, dtype=torch.float64).reshape(d, *in_shape)
    w = module.weight.detach().double()
    if isinstance(module, nn.Linear):
        out = eye.reshape(d, -1) @ w.T
    elif isinstance(module, _CONV):
        conv = F.conv2d if isinstance(module, nn.Conv2d) else F.conv1d
        if module.padding_mode != "zeros":
            raise ValueError(f"module: padding_mode {module.padding_mode!r} is not supported (zeros only)")
        out = conv(eye, w, None, module.stride, module.padding, module.dilation, module.groups)
    else:
        raise ValueError(f"module: expected nn.Linear or a Conv1d/Conv2d, got {type(module).__name__}")
    return out.reshape(d, -1).T.contiguous()


# --------------------------------------------------------------------------------------------------
# a network as a chain of steps


class Step(NamedTuple):
    """One layer of a feed-forward network: kind is "linear", "conv", "relu", "pool" or "flatten"."""

    name: str
    kind: str
    module: nn.Module
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def chain(model: nn.Module, input_shape=None) -> list[Step]:
    """The layers of a feed-forward ReLU network in forward order, with their input/output shapes.

    Works for univ's MLP and CNN (children registered in forward order) and any ``nn.Sequential`` of
    Linear/Conv/ReLU/MaxPool/Flatten layers; records shapes with one forward pass. Raises ValueError
    for other layer kinds (attention, normalisation, smooth activations).
    """
    if input_shape is None and not hasattr(model, "input_shape"):
        raise ValueError("input_shape: required for models without an ``input_shape`` attribute")
    input_shape = tuple(input_shape if input_shape is not None else model.input_shape)
    mods = [(n, m) for n, m in model.named_children()]
    kinds = []
    for n, m in mods:
        if isinstance(m, nn.Linear):
            kinds.append("linear")
        elif isinstance(m, _CONV):
            kinds.append("conv")
        elif isinstance(m, nn.ReLU):
            kinds.append("relu")
        elif isinstance(m, _POOL):
            k, s = m.kernel_size, m.stride
            k, s = (k if isinstance(k, tuple) else (k,)), (s if isinstance(s, tuple) else (s,))
            if any(ki > si for ki, si in zip(k, s)) or m.dilation not in (1, (1, 1), (1,)):
                raise ValueError(f"model: pooling layer {n!r} has overlapping windows; its Lipschitz "
                                 "constant is not 1")
            kinds.append("pool")
        elif isinstance(m, (nn.Flatten, nn.Identity)):
            kinds.append("flatten")
        else:
            raise ValueError(f"model: layer {n!r} ({type(m).__name__}) is not supported; bounds cover "
                             "Linear, Conv1d/2d, ReLU, non-overlapping MaxPool and Flatten")
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, n=n: shapes.__setitem__(n, (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))))
        for n, m in mods]
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n, _ in mods if n not in shapes]
    if missing:
        raise ValueError(f"model: layers {missing} are not used in the forward pass")
    steps = [Step(n, k, m, *shapes[n]) for (n, m), k in zip(mods, kinds)]
    # children must be called in registration order, each on the previous one's output
    for a, b in zip(steps, steps[1:]):
        if math.prod(a.out_shape) != math.prod(b.in_shape):
            raise ValueError(f"model: layer {b.name!r} does not consume {a.name!r}'s output; "
                             "bounds need children registered in forward order")
    return steps


def layer_bounds(model: nn.Module, input_shape=None, exact: bool = True) -> pd.DataFrame:
    """Table 5 of Szegedy et al. for ``model``: one row per layer with its Lipschitz upper bound.

    Columns: layer, kind, in_shape, out_shape, weight_shape, bound (linear: ||W||; conv: the FFT
    bound on the zero-padded grid; ReLU, pool, flatten: 1), exact (the layer's exact operator norm from
    its dense matrix when ``exact`` and it has <= 4096 inputs, else NaN).
    """
    rows = []
    for s in chain(model, input_shape):
        w = getattr(s.module, "weight", None)
        row = {"layer": s.name, "kind": s.kind, "in_shape": str(s.in_shape), "out_shape": str(s.out_shape),
               "weight_shape": str(tuple(w.shape)) if w is not None else "", "bound": 1.0, "exact": 1.0}
        if s.kind == "linear":
            row["bound"] = row["exact"] = spectral_norm(w.detach())
        elif s.kind == "conv":
            pad = s.module.padding
            pad = pad[0] if isinstance(pad, tuple) else pad
            if isinstance(pad, str) or (isinstance(s.module.padding, tuple) and len(set(s.module.padding)) > 1):
                raise ValueError(f"model: conv {s.name!r} needs an integer, symmetric padding")
            row["bound"] = conv_norm_fft(w.detach(), s.in_shape[1:], padding=pad)
            small = exact and math.prod(s.in_shape) <= 4096
            row["exact"] = spectral_norm(dense_matrix(s.module, s.in_shape)) if small else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def product_bound(bounds) -> float:
    """The global Lipschitz bound prod_k L_k of a composition (Szegedy's Section 4.3)."""
    b = np.asarray(bounds, dtype=float)
    if b.ndim != 1 or len(b) == 0 or np.any(~np.isfinite(b)) or np.any(b < 0):
        raise ValueError(f"bounds: expected a non-empty 1-D array of finite non-negative values, got {b}")
    return float(np.prod(b))


# --------------------------------------------------------------------------------------------------
# the split bound (global) and its IBP-localised version


def _split_sum(steps: list[Step], relu_ab: dict[str, tuple[torch.Tensor, torch.Tensor]],
               fixed_pools: dict[str, torch.Tensor] | None = None) -> float:
    """Sum over the 2^k break patterns of the ReLUs of the products of merged-segment norms.
    fixed_pools: {pool layer: its selection matrix} for pools whose argmax IBP has fixed (linear)."""
    fixed_pools = fixed_pools or {}
    mats = {s.name: dense_matrix(s.module, s.in_shape) for s in steps if s.kind in ("linear", "conv")}
    mats.update(fixed_pools)
    steps = [s._replace(kind="linear") if s.name in fixed_pools else s for s in steps]
    relus = [s.name for s in steps if s.kind == "relu" and relu_ab[s.name][1].any()]
    cache: dict[tuple, float] = {}

    def seg_norm(key, seg):
        if key not in cache:
            cache[key] = spectral_norm(seg)
        return cache[key]

    total = 0.0
    for pattern in itertools.product((False, True), repeat=len(relus)):
        breaks = dict(zip(relus, pattern))
        # the current segment is diag(pend) followed by the matrix seg (None = identity); key names
        # what it is made of, so segments shared by several patterns are normed once
        factor, seg, pend, key = 1.0, None, None, ()

        def close(seg, pend, key):
            if seg is None:
                return 1.0 if pend is None else float(pend.abs().max())
            return seg_norm(key, seg)

        for s in steps:
            if s.kind in ("linear", "conv"):
                if seg is None:
                    seg = mats[s.name] if pend is None else mats[s.name] * pend[None, :]
                else:
                    seg = mats[s.name] @ seg
                key += (s.name,)
            elif s.kind == "relu":
                a, b = relu_ab[s.name]
                d = b.sqrt() if breaks.get(s.name, False) else a
                if seg is None:
                    pend = d if pend is None else pend * d
                else:
                    seg = d[:, None] * seg
                key += (s.name + ("|b" if breaks.get(s.name, False) else "|a"),)
                if breaks.get(s.name, False):
                    factor *= close(seg, pend, key)
                    seg, pend, key = None, b.sqrt(), (s.name + "|b",)
            elif s.kind == "pool":  # forced break: the pool's Jacobian has norm <= 1
                factor *= close(seg, pend, key)
                seg, pend, key = None, None, ()
            if factor == 0.0:
                break
        if factor != 0.0:
            factor *= close(seg, pend, key)
        total += factor
    return total


def split_bound(model: nn.Module, input_shape=None) -> float:
    """Global Lipschitz upper bound of a ReLU network, never above the product of the exact layer
    norms: the ReLU-splitting expansion of the module docstring with every neuron free (A = B = I/2).
    Builds dense layer matrices, so it is meant for small inputs (a few thousand dimensions)."""
    steps = chain(model, input_shape)
    ab = {s.name: (torch.full((math.prod(s.in_shape),), 0.5, dtype=torch.float64),) * 2
          for s in steps if s.kind == "relu"}
    return _split_sum(steps, ab)


def interval_bounds(model: nn.Module, lower, upper, input_shape=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Interval bound propagation: {layer: (lo, hi)} bounds of every layer's *input* (flattened,
    float64) over the box ``lower <= x <= upper`` (tensors of one input's shape or broadcastable)."""
    steps = chain(model, input_shape)
    shape = steps[0].in_shape

    def box(t, name):
        t = to_tensor(t, name).double()
        return t.reshape(shape) if t.numel() == math.prod(shape) else torch.broadcast_to(t, shape).clone()

    lo, hi = box(lower, "lower"), box(upper, "upper")
    if torch.any(lo > hi):
        raise ValueError("lower, upper: need lower <= upper everywhere")
    out = {}
    for s in steps:
        lo, hi = lo.reshape(1, *s.in_shape), hi.reshape(1, *s.in_shape)
        out[s.name] = (lo.flatten(), hi.flatten())
        if s.kind in ("linear", "conv"):
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            m = s.module
            w, bias = m.weight.detach().double(), None if m.bias is None else m.bias.detach().double()
            if s.kind == "linear":
                mid, rad = F.linear(mid.reshape(1, -1), w, bias), F.linear(rad.reshape(1, -1), w.abs())
            else:
                conv = F.conv2d if isinstance(m, nn.Conv2d) else F.conv1d
                args = (m.stride, m.padding, m.dilation, m.groups)
                mid, rad = conv(mid, w, bias, *args), conv(rad, w.abs(), None, *args)
            lo, hi = mid - rad, mid + rad
        elif s.kind in ("relu", "pool"):  # monotone maps: apply to both ends
            lo, hi = s.module(lo), s.module(hi)
    return out


def local_split_bound(model: nn.Module, lower, upper, input_shape=None, global_bound: float | None = None) -> float:
    """Lipschitz upper bound valid for every pair of points in the box [lower, upper]: the split bound
    with the neurons IBP proves always off (upper <= 0) or always on (lower >= 0) fixed. Returned as
    the min with the global :func:`split_bound` (pass it as ``global_bound`` to skip recomputing it)."""
    steps = chain(model, input_shape)
    ib = interval_bounds(model, lower, upper, input_shape)
    ab = {}
    for s in steps:
        if s.kind == "relu":
            lo, hi = ib[s.name]
            on, off = lo >= 0, hi <= 0
            free = ~(on | off)
            a = torch.where(on, 1.0, torch.where(free, 0.5, 0.0)).double()
            ab[s.name] = (a, torch.where(free, 0.5, 0.0).double())
    pools = {s.name: P for s in steps if s.kind == "pool"
             if (P := _fixed_pool_matrix(s, *ib[s.name])) is not None}
    if global_bound is None:
        global_bound = split_bound(model, input_shape)
    return min(_split_sum(steps, ab, pools), global_bound)


def _fixed_pool_matrix(step: Step, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor | None:
    """The selection matrix (out, in) of a max-pool whose winner in every window is fixed on the box
    (its lower bound >= every other entry's upper bound), else None."""
    m = step.module
    pool = F.max_pool2d if isinstance(m, nn.MaxPool2d) else F.max_pool1d
    lo, hi = lo.reshape(1, *step.in_shape), hi.reshape(1, *step.in_shape)
    args = (m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    lo_max, idx = pool(lo, *args, return_indices=True)
    c = step.in_shape[0]
    plane = math.prod(step.in_shape[1:])
    others = hi.reshape(c, plane).clone()
    others.scatter_(1, idx.reshape(c, -1), float("-inf"))
    rival = pool(others.reshape(1, *step.in_shape), *args)
    if not bool((lo_max >= rival).all()):
        return None
    cols = (idx.reshape(c, -1) + plane * torch.arange(c)[:, None]).flatten()
    P = torch.zeros(len(cols), c * plane, dtype=torch.float64)
    P[torch.arange(len(cols)), cols] = 1.0
    return P


# --------------------------------------------------------------------------------------------------
# empirical (lower) estimates


def jacobian_norms(model: nn.Module, x) -> torch.Tensor:
    """Spectral norm of the Jacobian of the outputs w.r.t. the input at each point. x: (n, ...) ->
    (n,) float64. Each is a lower bound on the local (and global) Lipschitz constant."""
    x = to_tensor(x, "x").detach().double()
    dtype = next(model.parameters()).dtype
    with eval_mode(model), torch.enable_grad():
        xr = x.to(dtype).requires_grad_(True)
        out = model(xr)
        grads = [torch.autograd.grad(out[:, k].sum(), xr, retain_graph=k < out.shape[1] - 1)[0]
                 for k in range(out.shape[1])]
    jac = torch.stack([g.reshape(len(x), -1) for g in grads], dim=1).double()  # (n, C, d)
    return torch.linalg.matrix_norm(jac, ord=2)


@torch.no_grad()
def sampled_ratios(model: nn.Module, x, radius: float, n_samples: int = 64, seed: int = 0) -> torch.Tensor:
    """Max over ``n_samples`` random directions d (uniform on the sphere of L2 radius ``radius``) of
    ||f(x + d) - f(x)|| / ||d||, per point. x: (n, ...) -> (n,) float64. A lower estimate of the local
    Lipschitz constant on the ball (random directions rarely find the worst one)."""
    x = to_tensor(x, "x").detach()
    if radius <= 0 or n_samples < 1:
        raise ValueError(f"radius and n_samples: need radius > 0 and n_samples >= 1, got {radius}, {n_samples}")
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    with eval_mode(model):
        fx = model(x.to(dtype)).double()
        best = torch.zeros(len(x), dtype=torch.float64)
        for _ in range(int(n_samples)):
            d = torch.randn(x.shape, generator=g, dtype=torch.float64)
            d = d * (radius / d.reshape(len(x), -1).norm(dim=1)).reshape(-1, *([1] * (x.ndim - 1)))
            fd = model((x.double() + d).to(dtype)).double()
            best = torch.maximum(best, (fd - fx).norm(dim=1) / radius)
    return best

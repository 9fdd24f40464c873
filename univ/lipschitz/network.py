"""A feed-forward ReLU network as the chain of dense affine maps every bound here works on.

``f(x) = W_L relu(W_{L-1} ... relu(W_1 x + b_1) ... + b_{L-1}) + b_L`` on flattened inputs, in float64.
Conv layers enter through their exact matrices (:func:`univ.repro.lipschitz.dense_matrix`, the
layer applied to the identity basis, so padding and stride are the layer's own); consecutive affine
layers (a conv followed by a linear layer without a ReLU between them) are merged. Only Linear,
Conv1d/Conv2d, ReLU and Flatten/Identity are supported: max-pool, normalisation, attention and smooth
activations raise, naming the layer.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .._checks import to_tensor
from ..repro.lipschitz import chain, dense_matrix

SUPPORTED = "Linear, Conv1d/Conv2d, ReLU and Flatten/Identity"


class AffineNet(NamedTuple):
    """weights[k]: (n_{k+1}, n_k) float64, biases[k]: (n_{k+1},); a ReLU after every map but the last.
    input_shape: one input's shape (the maps act on its flattening); names: the layer each map ends at."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    input_shape: tuple[int, ...]
    names: list[str]

    @property
    def widths(self) -> list[int]:
        """Hidden widths (the number of ReLUs per hidden layer)."""
        return [w.shape[0] for w in self.weights[:-1]]

    @property
    def n_in(self) -> int:
        return self.weights[0].shape[1]


def as_affine_net(model, input_shape=None) -> AffineNet:
    """The :class:`AffineNet` of ``model`` (an AffineNet passes through; an ``nn.Module`` whose children
    run in registration order, e.g. univ's MLP or an ``nn.Sequential``). Checked against the model on
    random inputs, so a module whose forward does something its children do not say raises."""
    if isinstance(model, AffineNet):
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or an AffineNet, got {type(model).__name__}")
    for name, m in model.named_children():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Identity)):
            raise ValueError(f"model: layer {name!r} ({type(m).__name__}) is not supported by the SDP, "
                             f"ECLipsE and exact bounds; they cover {SUPPORTED}")
    if input_shape is None and not hasattr(model, "input_shape"):
        first = next((m for m in model.children() if not isinstance(m, (nn.Flatten, nn.Identity))), None)
        if isinstance(first, nn.Linear):  # a plain stack of linear layers says its own input size
            input_shape = (first.in_features,)
    steps = chain(model, input_shape)
    weights, biases, names = [], [], []
    cur_w = cur_b = None  # the affine map since the last ReLU (None: identity)
    for s in steps:
        if s.kind in ("linear", "conv"):
            W = dense_matrix(s.module, s.in_shape)
            with torch.no_grad():
                p = next(s.module.parameters())
                b = s.module(torch.zeros(1, *s.in_shape, dtype=p.dtype, device=p.device)).double().flatten().cpu()
            cur_w, cur_b = (W, b) if cur_w is None else (W @ cur_w, W @ cur_b + b)
            last = s.name
        elif s.kind == "relu":
            if cur_w is None:
                if not weights:
                    raise ValueError(f"model: ReLU {s.name!r} comes before any affine layer; bounds need "
                                     "the network to start with a Linear or Conv layer")
                continue  # relu(relu(z)) = relu(z)
            weights.append(cur_w), biases.append(cur_b), names.append(last)
            cur_w = cur_b = None
    if cur_w is None:
        raise ValueError("model: the network ends in a ReLU; bounds need a final Linear or Conv layer")
    weights.append(cur_w), biases.append(cur_b), names.append(last)
    net = AffineNet(weights, biases, tuple(steps[0].in_shape), names)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, *net.input_shape, generator=g)
    p = next(model.parameters())
    with torch.no_grad():
        ref = model(x.to(p.dtype).to(p.device)).double().reshape(4, -1).cpu()
    got = forward(net, x)
    if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * (1 + float(ref.abs().max()))):
        raise ValueError("model: its forward pass is not the chain of its children (skip connections or "
                         f"functional ops?); bounds cover plain feed-forward stacks of {SUPPORTED}")
    return net


def _flat(net: AffineNet, x, name: str = "x") -> torch.Tensor:
    x = to_tensor(x, name, detach=False).double()  # keeps the graph: the lower bounds differentiate it
    if x.numel() % net.n_in or (x.ndim > 1 and math.prod(x.shape[1:]) != net.n_in and x.shape[-1] != net.n_in):
        raise ValueError(f"{name}: expected inputs with {net.n_in} features each, got shape {tuple(x.shape)}")
    return x.reshape(-1, net.n_in)


def pre_activations(net: AffineNet, x) -> list[torch.Tensor]:
    """Pre-activations (n, n_k) of every hidden layer at inputs ``x: (n, ...)``."""
    h, out = _flat(net, x), []
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        z = h @ W.T + b
        out.append(z)
        h = z.clamp_min(0)
    return out


def forward(net: AffineNet, x) -> torch.Tensor:
    """Outputs (n, n_out) at inputs ``x: (n, ...)``."""
    h = _flat(net, x)
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        h = (h @ W.T + b).clamp_min(0)
    return h @ net.weights[-1].T + net.biases[-1]


def jacobian_from_gates(net: AffineNet, gates: list[torch.Tensor]) -> torch.Tensor:
    """``W_L D_{L-1} W_{L-1} ... D_1 W_1`` for gates (n, n_k) per hidden layer (0/1, or soft in
    between). Returns (n, n_out, n_in)."""
    n = gates[0].shape[0] if gates else 1
    J = net.weights[0].expand(n, *net.weights[0].shape)
    for g, W in zip(gates, net.weights[1:]):
        J = W @ (g[:, :, None] * J)
    return J


def jacobians(net: AffineNet, x) -> torch.Tensor:
    """The Jacobian (n, n_out, n_in) of the outputs at each input (a ReLU with pre-activation exactly 0
    counts as off)."""
    gates = [(z > 0).double() for z in pre_activations(net, x)]
    if not gates:
        return net.weights[0].expand(len(_flat(net, x)), *net.weights[0].shape)
    return jacobian_from_gates(net, gates)


def operator_norm(J: torch.Tensor, norm: str) -> torch.Tensor:
    """``||J||_{p->p}`` of a batch of matrices (..., m, n): "2" -> largest singular value, "inf" ->
    largest row L1 norm."""
    if norm == "2":
        return torch.linalg.matrix_norm(J, ord=2)
    if norm == "inf":
        return J.abs().sum(-1).amax(-1)
    raise ValueError(f"norm: expected '2' or 'inf', got {norm!r}")


def check_norm(norm) -> str:
    n = str(norm).lower()
    if n in ("2", "l2"):
        return "2"
    if n in ("inf", "linf", "l-inf"):
        return "inf"
    raise ValueError(f"norm: expected '2' or 'inf', got {norm!r}")


def check_box(net: AffineNet, lower, upper) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened float64 (n_in,) bounds of an input box (scalars broadcast); lower <= upper."""
    out = []
    for t, name in ((lower, "lower"), (upper, "upper")):
        t = to_tensor(torch.tensor(float(t)) if isinstance(t, (int, float)) else t, name).double().flatten()
        if t.numel() == 1:
            t = t.expand(net.n_in).clone()
        if t.numel() != net.n_in:
            raise ValueError(f"{name}: expected {net.n_in} values (one input), got {t.numel()}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name}: box bounds must be finite")
        out.append(t)
    if torch.any(out[0] > out[1]):
        raise ValueError("lower, upper: need lower <= upper everywhere")
    return out[0], out[1]


def interval_pre_activations(net: AffineNet, lower, upper) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Interval bounds (lo, hi) of every hidden pre-activation over the box [lower, upper]."""
    lo, hi = check_box(net, lower, upper)
    out = []
    for W, b in zip(net.weights[:-1], net.biases[:-1]):
        mid, rad = W @ ((lo + hi) / 2) + b, W.abs() @ ((hi - lo) / 2)
        zl, zh = mid - rad, mid + rad
        out.append((zl, zh))
        lo, hi = zl.clamp_min(0), zh.clamp_min(0)
    return out


def slope_bounds(net: AffineNet, lower=None, upper=None) -> list[torch.Tensor]:
    """Per hidden layer, each ReLU's state on the box: +1 provably on, 0 provably off, -1 free (the
    whole net is free without a box)."""
    if lower is None and upper is None:
        return [torch.full((w,), -1, dtype=torch.int64) for w in net.widths]
    if lower is None or upper is None:
        raise ValueError("lower, upper: give both box bounds or neither")
    states = []
    for zl, zh in interval_pre_activations(net, lower, upper):
        s = torch.full(zl.shape, -1, dtype=torch.int64)
        s[zl >= 0] = 1
        s[zh <= 0] = 0
        states.append(s)
    return states

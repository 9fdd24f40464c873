"""Exact Lipschitz constants of small ReLU networks, by enumerating the activation regions that exist.

A ReLU net is affine on each region of input space where every ReLU keeps one state, with Jacobian
``J = W_L D_{L-1} W_{L-1} ... D_1 W_1``. On a convex domain (all of R^n, or a box) the Lipschitz
constant in the p-norm is the largest ``||J||_{p->p}`` over the regions with an interior point in the
domain (L2: spectral norm; L-inf: largest row L1 norm). The search branches ReLU by ReLU, layer by
layer: within a region of the earlier layers the next pre-activation is affine in x, the side of
its hyperplane that holds the region's known interior point is kept without a test, and the other
side is kept only if a linear program (scipy's HiGHS) finds a point at positive distance from all of
the region's hyperplanes (the largest such distance, capped at 1, is maximised). So only realisable
regions are visited, and the cost grows with their number, not with 2^(number of ReLUs).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import linprog

from .network import as_affine_net, check_box, check_norm

REGION_TOL = 1e-9  # a region must hold a ball of this radius (after normalising its hyperplanes)


class ExactResult(NamedTuple):
    """value: the exact constant; n_regions: realisable regions visited; n_lps: LPs solved; argmax:
    an interior point (n_in,) of a region attaining it; values: both norms' constants {"2", "inf"} (the
    search finds them together)."""

    value: float
    n_regions: int
    n_lps: int
    argmax: np.ndarray
    values: dict


def interior_point(rows: np.ndarray, offs: np.ndarray, bounds) -> np.ndarray | None:
    """A point x with rows @ x + offs >= r > REGION_TOL for the largest r <= 1 (rows: (m, n) normalised
    hyperplanes, offs: (m,)), within the box bounds (a list of n (low, high) pairs, None: unbounded); None
    if no such point (one linear program, scipy's HiGHS)."""
    n = rows.shape[1]
    c = np.zeros(n + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-rows, np.ones((len(rows), 1))])  # r - a.x <= c
    res = linprog(c, A_ub=A_ub, b_ub=offs, bounds=list(bounds) + [(None, 1.0)], method="highs")
    if res.status != 0 or -res.fun <= REGION_TOL:
        return None
    return res.x[:n]


def exact_lipschitz(model, norm="2", lower=None, upper=None, input_shape=None,
                    max_regions: int = 200_000) -> ExactResult:
    """The exact Lipschitz constant of ``model`` in the given norm ("2" or "inf") over all inputs, or
    over the box [lower, upper]. Raises ValueError past ``max_regions`` realisable regions (the search
    is for small nets: a few dozen ReLUs on low-dimensional inputs)."""
    norm = check_norm(norm)
    net = as_affine_net(model, input_shape)
    Ws = [W.numpy() for W in net.weights]
    bs = [b.numpy() for b in net.biases]
    n0 = net.n_in
    if lower is None and upper is None:
        bounds = [(None, None)] * n0
        x0 = np.zeros(n0)
    else:
        if lower is None or upper is None:
            raise ValueError("lower, upper: give both box bounds or neither")
        lo, hi = (t.numpy() for t in check_box(net, lower, upper))
        if np.any(hi - lo <= 0):
            raise ValueError("lower, upper: the box must have a positive width in every coordinate")
        bounds = list(zip(lo, hi))
        x0 = (lo + hi) / 2

    best = {"2": (-1.0, x0), "inf": (-1.0, x0)}
    n_regions = n_lps = 0
    # depth-first over (layer k, ReLU j, x_{k-1} = M x + m on the region, states of layer k so far,
    # the region's hyperplanes rows @ x + offs >= 0, an interior point)
    stack = [(0, 0, np.eye(n0), np.zeros(n0), [], np.zeros((0, n0)), np.zeros(0), x0)]
    n_hidden = len(Ws) - 1
    while stack:
        k, j, M, m, states, rows, offs, pt = stack.pop()
        if k == n_hidden:  # a full region: x_{L-1} = M x + m
            n_regions += 1
            if n_regions > max_regions:
                raise ValueError(f"max_regions: the net has more than {max_regions} realisable regions; the "
                                 "exact search is for small nets")
            J = Ws[-1] @ M
            for p_, val in (("2", float(np.linalg.norm(J, 2))), ("inf", float(np.abs(J).sum(1).max()))):
                if val > best[p_][0]:
                    best[p_] = (val, pt)
            continue
        P, p = Ws[k] @ M, Ws[k] @ m + bs[k]  # pre-activations of layer k: P x + p
        if j == len(P):  # layer done: apply its states
            g = np.asarray(states, dtype=float)
            stack.append((k + 1, 0, g[:, None] * P, g * p, [], rows, offs, pt))
            continue
        a, c = P[j], p[j]
        na = float(np.linalg.norm(a))
        if na < 1e-12:  # constant on the region: its state is fixed (and moot for the Jacobian)
            stack.append((k, j + 1, M, m, states + [c > 0], rows, offs, pt))
            continue
        a_n, c_n = a / na, c / na
        side = a_n @ pt + c_n
        for on in (True, False):
            sgn = 1.0 if on else -1.0
            new_rows, new_offs = np.vstack([rows, sgn * a_n]), np.append(offs, sgn * c_n)
            if sgn * side > REGION_TOL:
                q = pt  # the known interior point is strictly on this side
            else:
                n_lps += 1
                q = interior_point(new_rows, new_offs, bounds)
                if q is None:
                    continue
            stack.append((k, j + 1, M, m, states + [on], new_rows, new_offs, q))
    value, arg = best[norm]
    return ExactResult(value, n_regions, n_lps, np.asarray(arg), {p_: v for p_, (v, _) in best.items()})

"""Branch-and-bound upper bounds on the Lipschitz constant of a ReLU network, in the spirit of LipBaB
(Bhowmick et al. 2021) and LipMIP (Jordan & Dimakis 2020): certified at any stopping point, and equal to
the exact constant (to the tolerance) when run to the end.

On a convex domain (all of R^n, or a box) the constant is the largest ``||J||_{p->p}`` over the activation
regions with an interior point in the domain (see :mod:`.exact`). A node of the search is a convex
polyhedron of inputs cut out by fixing the signs of some ReLUs, layer by layer: every layer before the
node's current layer k is fixed, so on the node layer k's pre-activations are affine in x (``P x + p``)
and a fixed sign is a half-space. A ReLU of layer k is *decided* without branching when one side of its
hyperplane holds no interior point of the node (the linear program of the exact search) or, over a box,
when ``P x + p`` keeps one sign on the box; the layers after k get interval (IBP) states over the box,
and are free over R^n.

Every Jacobian of a region inside the node is ``W_L D_{L-1} W_{L-1} ... D_k P`` with 0/1 diagonals D that
agree with the decided states. The node's bound lets a free ReLU's slope range over [0, 1] and takes the
smallest of: the interval matrix of the Jacobian propagated forward from P, the same propagated backward
from W_L, and the product of the two halves' bounds at each layer in between (for an interval matrix
C +- R, L2: the smaller of ``||C||_2 + ||R||_2`` and ``|| |C| + R ||_2``; L-inf: the largest row sum of
``|C| + R``, exact for the interval). It is the exact norm once every ReLU is decided; a child keeps the
smaller of its own bound and its parent's, since its regions are among its parent's.

The search expands the open node with the largest bound first, branching on the free ReLU of layer k
with the largest weight into and out of it. The certified value is the largest bound over the open nodes
(and the leaves closed); the lower value is the largest exact Jacobian norm at the interior points its
LPs found (each a point of the domain, so a certified lower bound). It stops when value <= (1 + tol)
lower, or at the node or time budget, and says which; the value is an upper bound in every case. Like the
exact search it treats a region that holds no ball of radius ``REGION_TOL`` (hyperplanes normalised) as
empty, so soundness is up to that and the LP solver's tolerance.
"""

from __future__ import annotations

import heapq
import math
import time
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .exact import REGION_TOL, interior_point
from .network import as_affine_net, check_box, check_norm, jacobians, operator_norm, slope_bounds

_MAX_POINTS = 32  # interior points a node keeps (each can answer a later feasibility question without an LP)


class BaBResult(NamedTuple):
    """value: the certified upper bound; lower: the largest exact Jacobian norm found at a point of the
    domain (a certified lower bound); status: "converged" (value <= (1 + tol) lower), "node budget" or
    "time budget" (value still an upper bound); n_nodes: nodes expanded; n_lps: LPs solved; seconds: wall
    time; argmax: the input (n_in,) of the lower value."""

    value: float
    lower: float
    status: str
    n_nodes: int
    n_lps: int
    seconds: float
    argmax: np.ndarray


class _Node(NamedTuple):
    k: int  # the current layer (the first with free ReLUs); the number of hidden layers at a leaf
    M: np.ndarray  # x_k = M x + m on the node (x_0 = x)
    m: np.ndarray
    state: np.ndarray | None  # layer k's ReLUs: 1 on, 0 off, -1 free (None at a leaf)
    rows: np.ndarray  # the node's half-spaces rows @ x + offs >= 0, normalised
    offs: np.ndarray
    points: np.ndarray  # (q, n_in) interior points of the node
    bound: float
    branch: int  # the free ReLU of layer k to branch on (-1 at a leaf)


def _gate_rows(C, R, s):
    """The interval matrix D (C +- R) for the 0/1 diagonal D with states s (free: slope in [0, 1])."""
    lo, hi = C - R, C + R
    free = s == -1
    lo[free], hi[free] = np.minimum(lo[free], 0), np.maximum(hi[free], 0)
    lo[s == 0] = hi[s == 0] = 0.0
    return (lo + hi) / 2, (hi - lo) / 2


def _interval_norm(C, R, norm: str) -> float:
    """An upper bound on ``||J||_{p->p}`` over the matrices J with |J - C| <= R (entrywise)."""
    A = np.abs(C) + R
    if norm == "inf":
        return float(A.sum(1).max())
    spec = float(np.linalg.norm(C, 2))
    if not R.any():
        return spec
    return min(spec + float(np.linalg.norm(R, 2)), float(np.linalg.norm(A, 2)))


def check_budget(max_nodes, max_seconds=None, tol=0.0, prefix: str = "") -> None:
    """ValueError naming the first bad budget argument of :func:`branch_and_bound` (as ``prefix`` + its
    name, so a caller can name its own argument)."""
    if isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer)) or max_nodes < 1:
        raise ValueError(f"{prefix}max_nodes: expected an integer >= 1 (nodes to expand), got {max_nodes!r}")
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float))
                                    or not math.isfinite(max_seconds) or max_seconds <= 0):
        raise ValueError(f"{prefix}max_seconds: expected None or a finite number of seconds > 0, got "
                         f"{max_seconds!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{prefix}tol: expected a finite relative gap >= 0, got {tol!r}")


class _Search:
    """The network, the domain and the counters of one branch-and-bound run."""

    def __init__(self, net, norm, box):
        self.net, self.norm = net, norm
        self.Ws = [W.numpy() for W in net.weights]
        self.absWs = [np.abs(W) for W in self.Ws]
        self.bs = [b.numpy() for b in net.biases]
        self.n_hidden = len(self.Ws) - 1
        self.n_lps = 0
        self.best, self.best_pt = -1.0, None
        if box is None:
            self.box, self.bounds = None, [(None, None)] * net.n_in
            self.root_states = [np.full(w, -1) for w in net.widths]
        else:
            lo, hi = box
            self.box = ((lo.numpy() + hi.numpy()) / 2, (hi.numpy() - lo.numpy()) / 2)
            self.bounds = list(zip(lo.numpy(), hi.numpy()))
            self.root_states = [s.numpy() for s in slope_bounds(net, lo, hi)]

    def realise(self, pts: np.ndarray) -> None:
        """Raise the lower value with the exact Jacobian norms at points of the domain."""
        vals = operator_norm(jacobians(self.net, torch.from_numpy(pts)), self.norm).numpy()
        i = int(vals.argmax())
        if vals[i] > self.best:
            self.best, self.best_pt = float(vals[i]), pts[i].copy()

    def _box_states(self, k, P, p, state):
        """States of layers k..L-1 over the box (IBP from layer k's exact affine map), merged with the
        root's and with ``state`` (layer k's, where given); all free without a box."""
        if self.box is None:
            return [state if state is not None else self.root_states[k].copy()] + \
                [s.copy() for s in self.root_states[k + 1:]]
        c, r = self.box
        mid, rad = P @ c + p, np.abs(P) @ r
        out = []
        for h in range(k, self.n_hidden):
            if h > k:
                mid, rad = self.Ws[h] @ mid + self.bs[h], self.absWs[h] @ rad
            s = self.root_states[h].copy()
            s[(s == -1) & (mid - rad >= 0)] = 1
            s[(s == -1) & (mid + rad <= 0)] = 0
            if h == k and state is not None:
                s[state != -1] = state[state != -1]
            out.append(s)
            lo, hi = np.maximum(mid - rad, 0), np.maximum(mid + rad, 0)
            lo[s == 0] = hi[s == 0] = 0.0
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
        return out

    def settle(self, k, M, m, state, rows, offs, points, parent_bound=math.inf) -> _Node:
        """Decide what the node's geometry decides, moving to the next layer whenever the current one is
        fully decided, then bound the node."""
        while k < self.n_hidden:
            P, p = self.Ws[k] @ M, self.Ws[k] @ m + self.bs[k]
            state = self._box_states(k, P, p, state)[0]
            for j in np.flatnonzero(state == -1):
                na = float(np.linalg.norm(P[j]))
                if na < 1e-12:  # constant on the node: its state is moot for the Jacobian
                    state[j] = int(p[j] > 0)
                    continue
                a_n, c_n = P[j] / na, p[j] / na
                side = points @ a_n + c_n
                found = {1: bool((side > REGION_TOL).any()), 0: bool((side < -REGION_TOL).any())}
                for on in (1, 0):
                    if found[on]:
                        continue
                    sgn = 1.0 if on else -1.0
                    self.n_lps += 1
                    q = interior_point(np.vstack([rows, sgn * a_n]), np.append(offs, sgn * c_n), self.bounds)
                    if q is not None:
                        found[on] = True
                        self.realise(q[None])
                        points = np.vstack([points, q])[-_MAX_POINTS:]
                if not (found[0] and found[1]):
                    state[j] = 1 if found[1] else 0  # neither: a sliver the exact search skips too
            if (state == -1).any():
                break
            g = state.astype(float)
            M, m, k, state = g[:, None] * P, g * p, k + 1, None
        bound, branch = self.bound(k, M, m, state)
        return _Node(k, M, m, state, rows, offs, points, min(bound, parent_bound), branch)

    def bound(self, k, M, m, state) -> tuple[float, int]:
        """(the node's bound, the free ReLU of layer k to branch on)."""
        if k == self.n_hidden:
            J = self.Ws[-1] @ M
            return _interval_norm(J, np.zeros_like(J), self.norm), -1
        P, p = self.Ws[k] @ M, self.Ws[k] @ m + self.bs[k]
        gates = self._box_states(k, P, p, state)
        fwd, (C, R) = [], (P, np.zeros_like(P))
        for i, s in enumerate(gates):  # x -> z_{k+i}, then through D_{k+i} and the next weights
            fwd.append((C, R))
            C, R = _gate_rows(C, R, s)
            C, R = self.Ws[k + i + 1] @ C, self.absWs[k + i + 1] @ R
        best = _interval_norm(C, R, self.norm)
        bwd, (C, R) = [None] * len(gates), (self.Ws[-1], np.zeros_like(self.Ws[-1]))
        for i in reversed(range(len(gates))):  # z_{k+i} -> output
            Ct, Rt = _gate_rows(C.T, R.T, gates[i])
            C, R = Ct.T, Rt.T
            bwd[i] = (C, R)
            W = P if i == 0 else self.Ws[k + i]
            C, R = C @ W, R @ np.abs(W)
        best = min(best, _interval_norm(C, R, self.norm))
        for (Cf, Rf), (Cb, Rb) in zip(fwd, bwd):
            best = min(best, _interval_norm(Cf, Rf, self.norm) * _interval_norm(Cb, Rb, self.norm))
        Cb, Rb = bwd[0]
        score = np.linalg.norm(P, axis=1) * np.linalg.norm(np.abs(Cb) + Rb, axis=0)
        score[state != -1] = -1.0
        return best, int(score.argmax())

    def children(self, node: _Node) -> list[_Node]:
        P, p = self.Ws[node.k] @ node.M, self.Ws[node.k] @ node.m + self.bs[node.k]
        j = node.branch
        na = float(np.linalg.norm(P[j]))
        a_n, c_n = P[j] / na, p[j] / na
        out = []
        for on in (1, 0):
            sgn = 1.0 if on else -1.0
            pts = node.points[sgn * (node.points @ a_n + c_n) > REGION_TOL]
            if not len(pts):  # not expected: settle found a point on each side of a free ReLU
                continue
            state = node.state.copy()
            state[j] = on
            out.append(self.settle(node.k, node.M, node.m, state, np.vstack([node.rows, sgn * a_n]),
                                   np.append(node.offs, sgn * c_n), pts, node.bound))
        return out


def branch_and_bound(model, norm="2", lower=None, upper=None, input_shape=None, max_nodes: int = 2000,
                     max_seconds: float | None = None, tol: float = 1e-3, progress: bool = False) -> BaBResult:
    """A certified upper bound on the Lipschitz constant of ``model`` in the given norm ("2" or "inf"), over
    all inputs or over the box [lower, upper], by branch and bound over activation regions (see the module
    docstring).

    max_nodes: nodes to expand at most; max_seconds: wall-time budget (None: none); tol: stop when the
    upper bound is within (1 + tol) of the best realised Jacobian norm. On reaching a budget the bound
    reached is returned (still certified) with status "node budget" or "time budget".
    """
    norm = check_norm(norm)
    check_budget(max_nodes, max_seconds, tol)
    net = as_affine_net(model, input_shape)
    box = None
    if lower is not None or upper is not None:
        if lower is None or upper is None:
            raise ValueError("lower, upper: give both box bounds or neither")
        box = check_box(net, lower, upper)
    start = time.perf_counter()
    search = _Search(net, norm, box)
    x0 = np.zeros(net.n_in) if box is None else search.box[0].copy()
    search.realise(x0[None])
    root = search.settle(0, np.eye(net.n_in), np.zeros(net.n_in), None, np.zeros((0, net.n_in)), np.zeros(0),
                         x0[None])
    heap, count, closed, n_nodes, status = [(-root.bound, 0, root)], 1, 0.0, 0, "converged"
    bar = tqdm(total=max_nodes, desc="branch and bound", disable=not progress, leave=False)
    while heap:
        top = -heap[0][0]
        if top <= search.best * (1 + tol):
            break
        if n_nodes >= max_nodes:
            status = "node budget"
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            status = "time budget"
            break
        node = heapq.heappop(heap)[2]
        if node.branch < 0:  # a leaf: its bound is the exact norm of a realised region
            closed = max(closed, node.bound)
            continue
        n_nodes += 1
        for child in search.children(node):
            heapq.heappush(heap, (-child.bound, count, child))
            count += 1
        bar.update(1)
        bar.set_postfix(upper=f"{-heap[0][0] if heap else closed:.4g}", lower=f"{search.best:.4g}")
    bar.close()
    value = max(-heap[0][0] if heap else 0.0, closed, search.best)
    return BaBResult(value, search.best, status, n_nodes, search.n_lps, time.perf_counter() - start,
                     search.best_pt)

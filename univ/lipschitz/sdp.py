"""SDP upper bounds on the Lipschitz constant of a ReLU network: LipSDP-Neuron and LipSDP-Layer
(Fazlyab et al. 2019), their local versions over an input box, and ECLipsE / ECLipsE-Fast (Xu &
Sivaranjani 2024), which solve the same matrix inequality layer by layer.

The quadratic-constraint argument. Each ReLU is slope-restricted in [0, 1], so for any two inputs its
increments satisfy ``dx (dz - dx) >= 0`` (dz: change of its pre-activation, dx: of its output).
Stack v = (dx_0, dx of every free ReLU). If for multipliers t_j >= 0

    P(rho, t) = blkdiag(rho I, 0) - G^T G - sum_j t_j (e_j a_j^T + a_j e_j^T - 2 e_j e_j^T)  >= 0

(G v: the change of the output; a_j^T v: of ReLU j's pre-activation; e_j^T v: of its output), then
``||df||^2 <= rho ||dx_0||^2`` for every pair of inputs: L <= sqrt(rho). Neuron: one t per ReLU;
Layer: one t per hidden layer. Over a box, interval bounds prove some ReLUs always on (dx = dz) or
always off (dx = 0); those are substituted exactly and drop out of v. For the L-inf norm one row of
the output at a time, with ``diag(mu)`` in place of rho I: ``|df_i|^2 <= dx^T diag(mu) dx <=
sum(mu) ||dx||_inf^2``.

Certified numbers. The solver's t is only approximately feasible, so the bound is recomputed from t in
float64: with the input block split off, P >= 0 iff the rest R(t) is positive definite (imposed with a
small margin in the SDP) and rho I >= Q(t), the Schur complement; the returned value is
sqrt(lambda_max(Q(t))), exact for the solver's t. ECLipsE's value is likewise computed from its
multipliers. A failed solve raises :class:`SolverError` with the solver's status, never a number.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple

import numpy as np
import torch

from .network import AffineNet, as_affine_net, check_norm, slope_bounds

EXTRA = "lipschitz"
_MARGIN = 1e-7  # R(t) >= margin I in the normalised problem, so float64 round-off cannot break it


class SolverError(RuntimeError):
    """An SDP solve that did not reach a usable solution; ``status`` is the solver's own word."""

    def __init__(self, method: str, status: str, detail: str = ""):
        super().__init__(f"{method}: the SDP solver failed (status {status!r}){': ' + detail if detail else ''}")
        self.status = status


class Bound(NamedTuple):
    """An upper bound: value (the certified number), method, norm ("2" or "inf"), seconds (solve and
    certification wall time), status (the solver's, or "closed form"), solver, cpu_seconds (this
    process's CPU time over the same span: on a shared machine the fairer measure of cost)."""

    value: float
    method: str
    norm: str
    seconds: float
    status: str
    solver: str
    cpu_seconds: float = float("nan")


def _cvxpy():
    try:
        import cvxpy as cp
    except ImportError as e:  # a missing optional extra, named
        raise ImportError(f"the SDP bounds need cvxpy with the Clarabel/SCS solvers: pip install "
                          f"'univ[{EXTRA}]' (the optional extra {EXTRA!r}); import failed: {e}") from None
    return cp


def _normalised(net: AffineNet) -> tuple[list[np.ndarray], float]:
    """Weights divided by their spectral norms (a ReLU net is positively homogeneous, so the bound of
    the original is the normalised one times the product of the norms, which keeps rho in [0, 1])."""
    Ws, scale = [], 1.0
    for W in net.weights:
        s = float(torch.linalg.matrix_norm(W, ord=2))
        s = s if s > 0 else 1.0
        Ws.append(W.numpy() / s)
        scale *= s
    return Ws, scale


def _quadratic_system(Ws, states):
    """G (n_out, dim), A and E (n_free, dim) and the layer index of each free ReLU for the stacked
    increment v = (dx_0, free ReLU outputs)."""
    n0 = Ws[0].shape[1]
    n_free = [int((s == -1).sum()) for s in states]
    dim = n0 + sum(n_free)
    X = np.zeros((n0, dim))
    X[:, :n0] = np.eye(n0)
    A_rows, E_rows, layer_of, off = [], [], [], n0
    for k, (W, s) in enumerate(zip(Ws[:-1], states)):
        s = s.numpy()
        Z = W @ X
        free = np.flatnonzero(s == -1)
        Xn = Z * (s == 1)[:, None]
        sel = np.zeros((len(free), dim))
        sel[np.arange(len(free)), off + np.arange(len(free))] = 1.0
        Xn[free] = sel
        A_rows.append(Z[free])
        E_rows.append(sel)
        layer_of += [k] * len(free)
        off += len(free)
        X = Xn
    G = Ws[-1] @ X
    A = np.vstack(A_rows) if A_rows else np.zeros((0, dim))
    E = np.vstack(E_rows) if E_rows else np.zeros((0, dim))
    return G, A, E, np.asarray(layer_of, dtype=int), n0


def _n_matrix(G, A, E, t):
    """N(t) = -G^T G - sym(E^T diag(t) A) + 2 E^T diag(t) E (numpy)."""
    M = E.T @ (t[:, None] * A)
    return -G.T @ G - (M + M.T) + 2 * E.T @ (t[:, None] * E)


def _schur(G, A, E, t, n0, method):
    """Q(t): the smallest input block that makes P >= 0 for these multipliers (float64)."""
    N = _n_matrix(G, A, E, np.clip(t, 0, None))
    if N.shape[0] == n0:
        return -N
    R, C = N[n0:, n0:], N[n0:, :n0]
    lam_min = float(np.linalg.eigvalsh((R + R.T) / 2)[0])
    if lam_min <= 0:
        raise SolverError(method, "inaccurate", f"the multipliers leave R(t) indefinite (min eigenvalue {lam_min:.3g})")
    return C.T @ np.linalg.solve(R, C) - N[:n0, :n0]


#: Clarabel (interior point) is the default for small PSD blocks; through cvxpy its time grows steeply
#: with the block size (measured here: n = 40: 1.5 s, 60: 15 s, 80: 69 s, against SCS's 0.2, 1.6, 1.7 s
#: for the same values), so past this size SCS (first order, one eigendecomposition per iteration)
#: solves first and Clarabel is the fallback. The returned bound is certified either way.
CLARABEL_MAX_DIM = 40
#: SCS's stopping tolerance and iteration cap. The bound is recomputed exactly from its multipliers, so
#: a looser solve costs tightness, never soundness; on the digits FC100-100-10 net the certified value
#: moves by < 1% between 250 and 3000 iterations, while each iteration costs an eigendecomposition.
SCS_EPS = 1e-5
SCS_MAX_ITERS = 2000


def _psd_program(cp, C0: np.ndarray, cols: list, cost: np.ndarray, nonneg: np.ndarray, method: str,
                 solver: str, lower: dict | None = None):
    """Minimise ``cost @ x`` subject to ``C0 + sum_i x_i C_i >= 0`` (PSD) and ``x[nonneg] >= 0``.

    cols: the symmetric matrices C_i as (rows, cols, values) triplets. One sparse linear map builds the
    matrix, so cvxpy's compile time stays small. Returns (x, solver used, status); raises SolverError
    when no solver reaches an optimal or optimal-inaccurate status."""
    import scipy.sparse as sp

    d = C0.shape[0]
    ri, ci, vi = [], [], []
    for j, (r, c, v) in enumerate(cols):
        ri.append(np.asarray(r) * d + np.asarray(c)), ci.append(np.full(len(r), j)), vi.append(v)
    Bm = sp.csc_matrix((np.concatenate(vi), (np.concatenate(ri), np.concatenate(ci))), shape=(d * d, len(cols)))
    x = cp.Variable(len(cols))
    P = cp.reshape(Bm @ x + C0.reshape(-1), (d, d), order="C")
    cons = [(P + P.T) / 2 >> 0]
    if nonneg.any():
        cons.append(x[np.flatnonzero(nonneg)] >= 0)
    for i, lo in (lower or {}).items():
        cons.append(x[i] >= lo)
    prob = cp.Problem(cp.Minimize(cost @ x), cons)
    order = [solver.upper(), "SCS"]
    if d > CLARABEL_MAX_DIM and order[0] == "CLARABEL":
        order = ["SCS", "CLARABEL"]
    tried = []
    for name in dict.fromkeys(order):
        if name not in cp.installed_solvers():
            tried.append(f"{name}: not installed")
            continue
        opts = {"eps_abs": SCS_EPS, "eps_rel": SCS_EPS, "max_iters": SCS_MAX_ITERS} if name == "SCS" else {}
        try:
            with warnings.catch_warnings():  # an inaccurate solve is reported by its status
                warnings.simplefilter("ignore", UserWarning)
                prob.solve(solver=name, **opts)
        except cp.error.SolverError as e:
            tried.append(f"{name}: {str(e).splitlines()[0][:80]}")
            continue
        if prob.status in ("optimal", "optimal_inaccurate") and x.value is not None:
            return np.asarray(x.value, dtype=float), name, prob.status
        tried.append(f"{name}: {prob.status}")
    raise SolverError(method, prob.status or "error", "; ".join(tried))


def _sym(i: int, vec: np.ndarray, diag: float, offset: int = 0):
    """Triplets of ``e_i u^T + u e_i^T + diag e_i e_i^T`` with u = vec placed from ``offset``."""
    idx = offset + np.arange(len(vec))
    r = np.concatenate([np.full(len(vec), i), idx, [i]])
    c = np.concatenate([idx, np.full(len(vec), i), [i]])
    return r, c, np.concatenate([vec, vec, [diag]])


def lipsdp(model, kind: str = "neuron", norm="2", lower=None, upper=None, input_shape=None,
           solver: str = "CLARABEL") -> Bound:
    """LipSDP upper bound on the Lipschitz constant of ``model`` (``||f(x) - f(y)||_p <= L ||x - y||_p``
    for all inputs, or for all inputs in the box [lower, upper] when given).

    kind: "neuron" (one multiplier per ReLU, the tighter) or "layer" (one per hidden layer).
    norm: "2" or "inf" (one SDP per output row). solver: a cvxpy solver name, SCS as the fallback.
    """
    cp = _cvxpy()
    if kind not in ("neuron", "layer"):
        raise ValueError(f"kind: expected 'neuron' or 'layer', got {kind!r}")
    norm = check_norm(norm)
    net = as_affine_net(model, input_shape)
    method = f"LipSDP-{kind.capitalize()}" + ("-local" if lower is not None else "")
    start, cpu = time.perf_counter(), time.process_time()
    states = slope_bounds(net, lower, upper)
    Ws, scale = _normalised(net)
    G, A, E, layer_of, n0 = _quadratic_system(Ws, states)
    rows = [G] if norm == "2" else [G[i:i + 1] for i in range(G.shape[0])]
    best, used, status = 0.0, "none", "closed form"
    for g in rows:
        if A.shape[0] == 0:  # every ReLU fixed: f is affine on the domain
            Q = g.T @ g
            val = float(np.linalg.eigvalsh(Q)[-1]) if norm == "2" else float(np.abs(g).sum() ** 2)
        else:
            val, used, status = _solve_rows(cp, g, A, E, layer_of, n0, kind, norm, method, solver)
        best = max(best, val)
    return Bound(float(np.sqrt(max(best, 0.0)) * scale), method, norm, time.perf_counter() - start, status, used,
                 time.process_time() - cpu)


def _solve_rows(cp, g, A, E, layer_of, n0, kind, norm, method, solver):
    nf, dim = A.shape
    free_idx = E.argmax(1)  # the coordinate of each free ReLU in v
    neuron_cols = [_sym(int(i), -A[j], 2.0) for j, i in enumerate(free_idx)]
    if kind == "neuron":
        t_cols = neuron_cols
    else:
        t_cols = [tuple(np.concatenate(p) for p in zip(*[neuron_cols[j] for j in np.flatnonzero(layer_of == k)]))
                  for k in np.unique(layer_of)]
    if norm == "2":
        in_cols = [(np.arange(n0), np.arange(n0), np.ones(n0))]
    else:
        in_cols = [([i], [i], [1.0]) for i in range(n0)]
    C0 = -g.T @ g - np.diag(np.r_[np.zeros(n0), np.full(dim - n0, _MARGIN)])
    cols = in_cols + t_cols
    cost = np.r_[np.ones(len(in_cols)), np.zeros(len(t_cols))]
    x, used, status = _psd_program(cp, C0, cols, cost, np.ones(len(cols), dtype=bool), method, solver)
    tw = np.clip(x[len(in_cols):], 0, None)
    tval = tw if kind == "neuron" else tw[np.searchsorted(np.unique(layer_of), layer_of)]
    Q = _schur(g, A, E, tval, n0, method)
    if norm == "2":
        return float(np.linalg.eigvalsh((Q + Q.T) / 2)[-1]), used, status
    # certify: raise the solver's mu until diag(mu) >= Q exactly (in float64)
    m = np.clip(x[:n0], 0, None)
    gap = float(np.linalg.eigvalsh(np.diag(m) - (Q + Q.T) / 2)[0])
    return float(m.sum() + max(0.0, -gap) * n0), used, status


def _eclipse(model, input_shape, fast: bool, solver: str) -> Bound:
    method = "ECLipsE-Fast" if fast else "ECLipsE"
    net = as_affine_net(model, input_shape)
    cp = None if fast else _cvxpy()
    start, cpu = time.perf_counter(), time.process_time()
    Ws, scale = _normalised(net)
    X = np.eye(Ws[0].shape[1])
    used, status = "none", "closed form"
    for k, W in enumerate(Ws[:-1]):
        K = 0.25 * W @ np.linalg.solve(X, W.T)
        K = (K + K.T) / 2
        if fast:
            lam = 1.0 / (2.0 * float(np.linalg.eigvalsh(K)[-1]))
            X = lam * np.eye(len(K)) - lam ** 2 * K
        else:
            ev, U = np.linalg.eigh(K + 1e-10 * np.eye(len(K)))
            Kh = (U * np.sqrt(np.clip(ev, 0, None))) @ U.T
            Wn, d = Ws[k + 1], len(K)
            # [[diag(l) - s Wn^T Wn, diag(l) Kh], [Kh diag(l), I]] >= 0, maximise s
            C0 = np.zeros((2 * d, 2 * d))
            C0[d:, d:] = np.eye(d)
            WtW = Wn.T @ Wn
            r, c = np.nonzero(np.ones((d, d)))
            cols = [(r, c, -WtW[r, c])] + [_sym(j, Kh[j], 1.0, offset=d) for j in range(d)]
            cost = np.r_[-1.0, np.zeros(d)]
            x, used, status = _psd_program(cp, C0, cols, cost, np.r_[False, np.ones(d, dtype=bool)], method,
                                           solver, lower={0: 1e-12})
            lval = np.clip(x[1:], 0, None)
            X = np.diag(lval) - (lval[:, None] * K * lval[None, :])
        X = (X + X.T) / 2
        lam_min = float(np.linalg.eigvalsh(X)[0])
        if lam_min <= 0:
            raise SolverError(method, status if not fast else "closed form",
                              f"layer {k + 1}: X_k is not positive definite (min eigenvalue {lam_min:.3g})")
    WL = Ws[-1]
    rho = float(np.linalg.eigvalsh(WL @ np.linalg.solve(X, WL.T))[-1])
    return Bound(float(np.sqrt(max(rho, 0.0)) * scale), method, "2", time.perf_counter() - start, status, used,
                 time.process_time() - cpu)


def eclipse(model, input_shape=None, solver: str = "CLARABEL") -> Bound:
    """ECLipsE: the LipSDP-Neuron inequality decomposed layer by layer; at each hidden layer a small SDP
    (size 2 n_k) picks the diagonal multipliers (L2, global)."""
    return _eclipse(model, input_shape, fast=False, solver=solver)


def eclipse_fast(model, input_shape=None) -> Bound:
    """ECLipsE-Fast: ECLipsE with the closed-form multipliers ``lambda_k I`` (no solver; L2, global)."""
    return _eclipse(model, input_shape, fast=True, solver="none")

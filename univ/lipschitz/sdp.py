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
    certification wall time), status (the solver's, or "closed form"), solver."""

    value: float
    method: str
    norm: str
    seconds: float
    status: str
    solver: str


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


def _solve(cp, problem, method: str, solver: str):
    """Solve with ``solver`` (Clarabel by default), falling back to SCS; raise SolverError if neither
    reaches an optimal (or optimal-inaccurate) status."""
    tried = []
    for name in dict.fromkeys([solver.upper(), "SCS"]):
        if name not in cp.installed_solvers():
            tried.append(f"{name}: not installed")
            continue
        try:
            problem.solve(solver=name)
        except cp.error.SolverError as e:
            tried.append(f"{name}: {str(e).splitlines()[0][:80]}")
            continue
        if problem.status in ("optimal", "optimal_inaccurate"):
            return name, problem.status
        tried.append(f"{name}: {problem.status}")
    raise SolverError(method, problem.status or "error", "; ".join(tried))


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
    start = time.perf_counter()
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
    return Bound(float(np.sqrt(max(best, 0.0)) * scale), method, norm, time.perf_counter() - start, status, used)


def _solve_rows(cp, g, A, E, layer_of, n0, kind, norm, method, solver):
    nf, dim = A.shape
    if kind == "neuron":
        t = cp.Variable(nf, nonneg=True)
        tv = t
    else:
        layers = np.unique(layer_of)
        t = cp.Variable(len(layers), nonneg=True)
        S = (layer_of[:, None] == layers[None, :]).astype(float)
        tv = S @ t
    M = E.T @ (cp.diag(tv) @ A)
    N = -g.T @ g - (M + M.T) + 2 * E.T @ cp.diag(tv) @ E
    inp = np.zeros((dim, n0))
    inp[:n0] = np.eye(n0)
    if norm == "2":
        rho = cp.Variable()
        P_in, objective = rho * (inp @ inp.T), rho
    else:
        mu = cp.Variable(n0, nonneg=True)
        P_in, objective = inp @ cp.diag(mu) @ inp.T, cp.sum(mu)
    margin = np.diag(np.r_[np.zeros(n0), np.full(dim - n0, _MARGIN)])
    P = P_in + N - margin
    prob = cp.Problem(cp.Minimize(objective), [(P + P.T) / 2 >> 0])
    used, status = _solve(cp, prob, method, solver)
    tval = np.asarray(tv.value if kind == "neuron" else S @ t.value, dtype=float).ravel()
    Q = _schur(g, A, E, tval, n0, method)
    if norm == "2":
        return float(np.linalg.eigvalsh((Q + Q.T) / 2)[-1]), used, status
    # certify: raise the solver's mu until diag(mu) >= Q exactly (in float64)
    m = np.clip(np.asarray(mu.value, dtype=float).ravel(), 0, None)
    gap = float(np.linalg.eigvalsh(np.diag(m) - (Q + Q.T) / 2)[0])
    return float(m.sum() + max(0.0, -gap) * n0), used, status


def _eclipse(model, input_shape, fast: bool, solver: str) -> Bound:
    method = "ECLipsE-Fast" if fast else "ECLipsE"
    net = as_affine_net(model, input_shape)
    cp = None if fast else _cvxpy()
    start = time.perf_counter()
    Ws, scale = _normalised(net)
    X = np.eye(Ws[0].shape[1])
    used, status = ("none", "closed form") if fast else ("none", "closed form")
    for k, W in enumerate(Ws[:-1]):
        K = 0.25 * W @ np.linalg.solve(X, W.T)
        K = (K + K.T) / 2
        if fast:
            lam = 1.0 / (2.0 * float(np.linalg.eigvalsh(K)[-1]))
            X = lam * np.eye(len(K)) - lam ** 2 * K
        else:
            ev, U = np.linalg.eigh(K + 1e-10 * np.eye(len(K)))
            Kh = (U * np.sqrt(np.clip(ev, 0, None))) @ U.T
            Wn = Ws[k + 1]
            lv, s = cp.Variable(len(K), nonneg=True), cp.Variable()
            L = cp.diag(lv)
            top = cp.hstack([L - s * (Wn.T @ Wn), L @ Kh])
            bot = cp.hstack([Kh @ L, np.eye(len(K))])
            S = cp.vstack([top, bot])
            prob = cp.Problem(cp.Maximize(s), [(S + S.T) / 2 >> 0, s >= 1e-12])
            used, status = _solve(cp, prob, method, solver)
            lval = np.clip(np.asarray(lv.value, dtype=float).ravel(), 0, None)
            X = np.diag(lval) - (lval[:, None] * K * lval[None, :])
        X = (X + X.T) / 2
        lam_min = float(np.linalg.eigvalsh(X)[0])
        if lam_min <= 0:
            raise SolverError(method, status if not fast else "closed form",
                              f"layer {k + 1}: X_k is not positive definite (min eigenvalue {lam_min:.3g})")
    WL = Ws[-1]
    rho = float(np.linalg.eigvalsh(WL @ np.linalg.solve(X, WL.T))[-1])
    return Bound(float(np.sqrt(max(rho, 0.0)) * scale), method, "2", time.perf_counter() - start, status, used)


def eclipse(model, input_shape=None, solver: str = "CLARABEL") -> Bound:
    """ECLipsE: the LipSDP-Neuron inequality decomposed layer by layer; at each hidden layer a small SDP
    (size 2 n_k) picks the diagonal multipliers (L2, global)."""
    return _eclipse(model, input_shape, fast=False, solver=solver)


def eclipse_fast(model, input_shape=None) -> Bound:
    """ECLipsE-Fast: ECLipsE with the closed-form multipliers ``lambda_k I`` (no solver; L2, global)."""
    return _eclipse(model, input_shape, fast=True, solver="none")

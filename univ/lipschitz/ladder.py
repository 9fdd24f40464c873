"""The ladder: every Lipschitz bound of one network in one table, between a certified lower bound and
(for small nets) the exact constant."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from ..repro import lipschitz as _classic
from .bab import branch_and_bound, check_budget
from .exact import exact_lipschitz
from .lower import lower_bound
from .network import as_affine_net
from .sdp import SolverError, eclipse, eclipse_fast, lipsdp

#: rung order, loosest first
METHODS = ("product", "split", "ECLipsE-Fast", "ECLipsE", "LipSDP-Layer", "LipSDP-Neuron", "branch-and-bound", "exact",
           "lower bound")
UPPER = METHODS[:7]


def _product(model, shape):
    return _classic.product_bound(_classic.layer_bounds(model, shape)["exact"])


_RUNGS = {
    "product": _product,
    "split": lambda m, s: _classic.split_bound(m, s),
    "ECLipsE-Fast": lambda m, s: eclipse_fast(m, s).value,
    "ECLipsE": lambda m, s: eclipse(m, s).value,
    "LipSDP-Layer": lambda m, s: lipsdp(m, "layer", input_shape=s).value,
    "LipSDP-Neuron": lambda m, s: lipsdp(m, "neuron", input_shape=s).value,
}


def ladder(model, input_shape=None, methods=METHODS, sdp_max_dim: int = 600, exact_max_relus: int = 24,
           exact_max_regions: int = 20_000, bab_max_relus: int = 24, bab_max_nodes: int = 2000,
           bab_max_seconds: float | None = None, lower_starts=None, n_starts: int = 64, steps: int = 200,
           seed: int = 0) -> pd.DataFrame:
    """Global L2 Lipschitz bounds of ``model``, one row per method (see :data:`METHODS`).

    sdp_max_dim: the SDP rungs (ECLipsE, LipSDP) are skipped above this matrix size (inputs + ReLUs);
    exact_max_relus / exact_max_regions: the exact rung runs only on nets this small; bab_max_relus:
    the branch-and-bound rung runs only on nets with at most this many ReLUs (its node count grows with
    the activation regions), expanding at most bab_max_nodes nodes in at most bab_max_seconds (None: no
    time limit). lower_starts: inputs (n, ...) that seed the lower-bound search beside random starts.

    Returns: method, value, seconds, status ("ok", "budget: ..." (branch and bound stopped by its budget:
    the value is still an upper bound), "skipped: ...", "unsupported: ...", "solver failed: ..."),
    over_lower (value / lower bound), over_exact (value / exact constant, where computed).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; known: {list(METHODS)}")
    check_budget(bab_max_nodes, bab_max_seconds, prefix="bab_")
    if isinstance(bab_max_relus, bool) or not isinstance(bab_max_relus, (int, np.integer)) or bab_max_relus < 0:
        raise ValueError(f"bab_max_relus: expected an integer >= 0, got {bab_max_relus!r}")
    rows = []
    try:
        net = as_affine_net(model, input_shape)
        why = None
    except ValueError as e:
        net, why = None, str(e)
    size = None if net is None else net.n_in + sum(net.widths)
    for meth in methods:
        t0, value, status = time.perf_counter(), float("nan"), "ok"
        try:
            if meth in ("product", "split"):
                value = _RUNGS[meth](model, input_shape)
            elif net is None:
                status = f"unsupported: {why}"
            elif meth in _RUNGS:
                if meth != "ECLipsE-Fast" and size > sdp_max_dim:
                    status = f"skipped: SDP size {size} > sdp_max_dim {sdp_max_dim}"
                else:
                    value = _RUNGS[meth](net, None)
            elif meth == "branch-and-bound":
                if sum(net.widths) > bab_max_relus:
                    status = f"skipped: {sum(net.widths)} ReLUs > bab_max_relus {bab_max_relus}"
                else:
                    res = branch_and_bound(net, "2", max_nodes=bab_max_nodes, max_seconds=bab_max_seconds)
                    value = res.value
                    if res.status != "converged":
                        gap = res.value / res.lower if res.lower > 0 else math.inf
                        status = (f"budget: stopped by the {res.status} ({res.n_nodes} nodes) at {gap:.3g}x "
                                  "its best realised norm")
            elif meth == "exact":
                if sum(net.widths) > exact_max_relus:
                    status = f"skipped: {sum(net.widths)} ReLUs > exact_max_relus {exact_max_relus}"
                else:
                    try:
                        value = exact_lipschitz(net, "2", max_regions=exact_max_regions).value
                    except ValueError as e:
                        status = f"skipped: {e}"
            else:
                starts = None
                if lower_starts is not None:
                    starts = np.asarray(lower_starts, dtype=float).reshape(-1, net.n_in)
                res = [lower_bound(net, "2", n_starts=n_starts, steps=steps, seed=seed)]
                if starts is not None:
                    res.append(lower_bound(net, "2", starts=starts, steps=steps, seed=seed))
                value = max(r.value for r in res)
        except SolverError as e:
            status = f"solver failed: {e}"
        rows.append({"method": meth, "value": value, "seconds": time.perf_counter() - t0, "status": status})
    df = pd.DataFrame(rows)
    get = dict(zip(df.method, df.value))
    lower, exact = get.get("lower bound", math.nan), get.get("exact", math.nan)
    df["over_lower"] = df["value"] / lower
    df["over_exact"] = df["value"] / exact
    return df


def tightest(df: pd.DataFrame) -> pd.Series:
    """The row of the smallest upper bound of a :func:`ladder` table."""
    up = df[df.method.isin(UPPER) & df.value.notna()]
    return up.loc[up.value.idxmin()]

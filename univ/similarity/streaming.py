"""Exact similarity from streamed sufficient statistics, and :func:`compare_stores` over activation stores.

Linear CKA (biased and debiased), CCA, SVCCA and the Procrustes similarity are functions of second moments:
n, the column sums, X^T X, Y^T Y and X^T Y. Debiased CKA also needs sum_i ||xc_i||^2 ||yc_i||^2 over rows
centred by the *final* mean; that expands exactly into moments of the row norms p_i = ||x_i||^2 (sum p_i q_i,
sum p_i y_i, sum q_i x_i, sum p_i, ...), so one pass suffices for all of them. Memory is
O(d1^2 + d2^2 + d1 d2) whatever n. Moments are accumulated in float64 about the first batch's mean (which
keeps the final centring free of cancellation), each side scaled by one exact power of two (which keeps the
fourth-order terms in range); every measure is invariant to both.

    s = StreamingSimilarity()
    for xb, yb in pairs_of_batches:        # xb: (b, d1), yb: (b, d2): the same rows; b may vary
        s.update(xb, yb)
    s.linear_cka(), s.linear_cka(debiased=True), s.cca(), s.svcca(0.99), s.procrustes()

Not streamable: RBF CKA, RSA and mutual kNN (they need every pair of samples) and PWCCA (its weights need
every sample's projection).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import pandas as pd
import torch

from .._checks import check_fraction, unknown_name_error
from ._core import RowWatch, cka_ratio, debiased_hsic, gram, matrix, pair, pow2_exponent, times_pow2
from .cca import CCAResult, cca_from_scatter, svcca_from_scatter
from .compare import COLUMNS, get_metric


class ScatterMoments(NamedTuple):
    """Centred scatters of the rows seen (of the data times a power of two per side, which no measure here
    sees): cxx = Xc^T Xc, cyy = Yc^T Yc, cxy = Xc^T Yc, float64."""

    n: int
    cxx: torch.Tensor
    """(d1, d1)"""
    cyy: torch.Tensor
    """(d2, d2)"""
    cxy: torch.Tensor
    """(d1, d2)"""


class _Side:
    """One side's moments about its first batch's mean: rows, sums, scatter and row-norm moments."""

    def __init__(self, name: str):
        self.name, self.n = name, 0
        self.rows = RowWatch()

    def check_width(self, xb: torch.Tensor) -> None:
        if self.n and xb.shape[1] != self.s.shape[0]:
            raise ValueError(f"{self.name}: expected {self.s.shape[0]} features as in earlier batches, "
                             f"got {xb.shape[1]}")

    def update(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add a validated float64 batch xb: (b, d); returns its shifted rows (b, d) and their squared norms (b,)."""
        self.check_width(xb)
        if self.n == 0:
            self.exp = pow2_exponent(float(xb.abs().max()))
        xb = times_pow2(xb, self.exp)
        if self.n == 0:
            d = xb.shape[1]
            self.shift = xb.mean(0)
            self.s, self.pu, self.G = xb.new_zeros(d), xb.new_zeros(d), xb.new_zeros(d, d)
            self.p, self.pp = xb.new_zeros(()), xb.new_zeros(())
        self.rows.update(xb)
        xs = xb - self.shift
        p = (xs * xs).sum(1)
        self.G += gram(xs)
        self.s += xs.sum(0)
        self.p += p.sum()
        self.pp += p @ p
        self.pu += p @ xs
        self.n += xb.shape[0]
        return xs, p

    def mean(self) -> torch.Tensor:
        return self.s / self.n

    def scatter(self) -> torch.Tensor:
        d = self.mean()
        return self.G - self.n * torch.outer(d, d)


class _Cross:
    """The moments that couple two sides: sum x_i y_i^T, sum p_i q_i, sum p_i y_i, sum q_i x_i."""

    def __init__(self):
        self.sxy = None

    def update(self, xs: torch.Tensor, p: torch.Tensor, ys: torch.Tensor, q: torch.Tensor) -> None:
        if self.sxy is None:
            self.sxy, self.pq = xs.new_zeros(xs.shape[1], ys.shape[1]), xs.new_zeros(())
            self.pv, self.qu = xs.new_zeros(ys.shape[1]), xs.new_zeros(xs.shape[1])
        self.sxy += xs.T @ ys
        self.pq += p @ q
        self.pv += p @ ys
        self.qu += q @ xs


def _row_norm_dot(a: _Side, b: _Side, pq, pv, qu, uv) -> torch.Tensor:
    """sum_i ||u_i - du||^2 ||v_i - dv||^2 (u, v: the shifted rows of a and b; du, dv their means) from
    pq = sum p_i q_i, pv = sum p_i v_i, qu = sum q_i u_i, uv = sum u_i v_i^T."""
    n, du, dv = a.n, a.mean(), b.mean()
    cu, cv = du @ du, dv @ dv
    return (pq - 2 * dv @ pv + cv * a.p - 2 * du @ qu + 4 * du @ uv @ dv - 2 * cv * du @ a.s
            + cu * b.p - 2 * cu * dv @ b.s + n * cu * cv)


class StreamingSimilarity:
    """Exact linear CKA (biased, debiased), CCA, SVCCA and Procrustes similarity of paired batches, each equal
    to the in-memory function on the concatenated rows (to ~1e-12 on well-conditioned data; CCA and SVCCA,
    which go through covariances, lose digits as cond(X)^2: see :func:`univ.similarity.cca_from_scatter`).

    ``update(xb, yb)`` adds the same b rows of both sides, xb: (b, d1), yb: (b, d2); batch sizes may vary.
    Memory O(d1^2 + d2^2 + d1 d2), float64, on ``device`` (default: the batches').
    """

    def __init__(self, device=None):
        self.device = device
        self._x, self._y, self._xy = _Side("xb"), _Side("yb"), _Cross()

    @classmethod
    def _from_parts(cls, x: _Side, y: _Side, xy: _Cross) -> StreamingSimilarity:
        s = cls()
        s._x, s._y, s._xy = x, y, xy
        return s

    @property
    def n_(self) -> int:
        """Rows seen so far."""
        return self._x.n

    def update(self, xb, yb) -> StreamingSimilarity:
        """Add a batch: xb: (b, d1), yb: (b, d2), the same b samples in the same order. Returns self."""
        xb, yb = pair(xb, yb, min_rows=1, device=self.device, names=("xb", "yb"), rescale=False)
        self._x.check_width(xb)
        self._y.check_width(yb)
        xs, p = self._x.update(xb)
        ys, q = self._y.update(yb)
        self._xy.update(xs, p, ys, q)
        return self

    def _ready(self, what: str, min_rows: int) -> None:
        if self.n_ < min_rows:
            raise ValueError(f"{type(self).__name__}: needs at least {min_rows} samples in total for {what}, "
                             f"got {self.n_}")
        for side in (self._x, self._y):
            side.rows.check(what, self.n_, (side.name,))

    def moments(self) -> ScatterMoments:
        """The centred scatters of all rows seen (n >= 1)."""
        self._ready("the scatter", 1)
        x, y = self._x, self._y
        return ScatterMoments(x.n, x.scatter(), y.scatter(), self._xy.sxy - x.n * torch.outer(x.mean(), y.mean()))

    def linear_cka(self, debiased: bool = False) -> float:
        """Linear CKA (``debiased``: with unbiased HSIC, n >= 4) of all rows seen, as :func:`linear_cka`."""
        self._ready("linear CKA", 4 if debiased else 2)
        n, cxx, cyy, cxy = self.moments()
        xty, xx, yy = (cxy * cxy).sum(), (cxx * cxx).sum(), (cyy * cyy).sum()
        if not debiased:
            return cka_ratio(xty, xx, yy, False, ("xb", "yb"))
        x, y, c = self._x, self._y, self._xy
        sx, sy = torch.trace(cxx), torch.trace(cyy)
        ab = _row_norm_dot(x, y, c.pq, c.pv, c.qu, c.sxy)
        aa = _row_norm_dot(x, x, x.pp, x.pu, x.pu, x.G)
        bb = _row_norm_dot(y, y, y.pp, y.pu, y.pu, y.G)
        return cka_ratio(debiased_hsic(xty, ab, None, sx, sy, n), debiased_hsic(xx, aa, None, sx, sx, n),
                         debiased_hsic(yy, bb, None, sy, sy, n), True, ("xb", "yb"))

    def cca(self) -> CCAResult:
        """CCA of all rows seen -> CCAResult (all min(r1, r2) correlations), as :func:`cca`."""
        self._ready("CCA", 3)
        return cca_from_scatter(*self.moments()[1:], self.n_)

    def svcca(self, variance_kept: float = 0.99) -> float:
        """SVCCA of all rows seen (google/svcca's recipe on the covariances), as :func:`svcca`."""
        check_fraction(variance_kept, "variance_kept")
        self._ready("SVCCA", 3)
        return svcca_from_scatter(*self.moments()[1:], self.n_, variance_kept)

    def procrustes(self) -> float:
        """Orthogonal-Procrustes similarity ||Xc^T Yc||_* / (||Xc|| ||Yc||) of all rows seen, as :func:`procrustes`."""
        self._ready("Procrustes", 2)
        _, cxx, cyy, cxy = self.moments()
        nuc = torch.linalg.svdvals(cxy).sum()
        return float((nuc / torch.sqrt(torch.trace(cxx) * torch.trace(cyy))).clamp(0.0, 1.0))

    def measure(self, metric: str) -> float:
        """The measure registered in :data:`univ.similarity.METRICS` as ``metric``, if it streams (see
        :data:`STREAMABLE`)."""
        return STREAMABLE[_streamable([metric])[0]](self)


class StreamingLinearCKA(StreamingSimilarity):
    """Exact linear CKA accumulated batch by batch: :class:`StreamingSimilarity` whose ``value()`` is its
    linear CKA (``debiased``: with unbiased HSIC).

        s = StreamingLinearCKA()
        for xb, yb in loader:        # xb: (b, d1), yb: (b, d2); batch sizes may differ
            s.update(xb, yb)
        s.value()
    """

    def __init__(self, debiased: bool = False, device=None):
        super().__init__(device)
        self.debiased = debiased

    def value(self) -> float:
        """Linear CKA (or debiased linear CKA) of all samples seen so far."""
        return self.linear_cka(self.debiased)


STREAMABLE = {
    "linear_cka": lambda s: s.linear_cka(),
    "linear_cka_debiased": lambda s: s.linear_cka(debiased=True),
    "cca": lambda s: s.cca().mean,
    "cca_r2": lambda s: s.cca().r2,
    "svcca": lambda s: s.svcca(),
    "procrustes": lambda s: s.procrustes(),
}
"""The metric names of :data:`univ.similarity.METRICS` that :class:`StreamingSimilarity` computes exactly."""


def _streamable(metrics) -> list[str]:
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("metrics: give at least one metric name")
    for m in names:
        get_metric(m)  # unknown names: the error lists every metric
    bad = [m for m in names if m not in STREAMABLE]
    if bad:
        raise ValueError(f"metrics: {bad} cannot be computed from streamed statistics (they need every pair "
                         f"of samples or every sample's projection); streamable metrics: {list(STREAMABLE)}. "
                         f"Load the layers (store[name]) and use compare() for the others")
    return names


# ---------------------------------------------------------------------------------------------------
# Activation stores


def _layers(store, which: str, names) -> list[str]:
    arg = f"names_{which}"
    if not all(hasattr(store, a) for a in ("names", "blocks", "__len__")):
        raise TypeError(f"store_{which}: expected an ActivationStore (univ.store), got {type(store).__name__}")
    if names is None:
        return list(store.names)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError(f"{arg}: give at least one layer name (or None for all)")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{arg}: layer names are strings, got {type(n).__name__} {n!r}")
        if n not in store.names:
            raise ValueError(f"{arg}: {unknown_name_error('layer', n, list(store.names))}") from None
    return names


def _aligned(blocks_a: Iterable[dict], blocks_b: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    """Row-aligned pieces of two streams of {name: (rows, d)} blocks over the same rows, cut where either
    stream's blocks end (the stores may have different shard sizes)."""
    ia, ib = iter(blocks_a), iter(blocks_b)
    a = b = None
    oa = ob = na = nb = 0
    while True:
        while a is None or oa == na:
            a, oa = next(ia, None), 0
            if a is None:
                return
            na = len(next(iter(a.values())))
        while b is None or ob == nb:
            b, ob = next(ib, None), 0
            if b is None:
                return
            nb = len(next(iter(b.values())))
        k = min(na - oa, nb - ob)
        yield {n: t[oa:oa + k] for n, t in a.items()}, {n: t[ob:ob + k] for n, t in b.items()}
        oa, ob = oa + k, ob + k


def compare_stores(store_a, store_b, metrics: Iterable[str] | str = ("linear_cka",), names_a=None,
                   names_b=None, *, pairs: str = "all", device=None) -> pd.DataFrame:
    """:func:`compare`'s tidy table for two activation stores (:mod:`univ.store`) of the same inputs, from
    one pass over both: every layer pair's statistics accumulate as the shards stream by, so memory is one
    shard of each store plus O(sum d_a^2 + sum d_b^2 + sum over pairs d_a d_b) float64 numbers.

    metrics: names in :data:`STREAMABLE` (linear_cka, linear_cka_debiased, cca, cca_r2, svcca, procrustes);
        another registered metric raises ValueError naming it and the streamable ones.
    names_a, names_b: the layers of each store to compare (default: all). pairs: "all" or "matching".
    Columns as :func:`compare` (layer_a, layer_b, metric, value, baseline_mean, p_value, ci_low, ci_high;
    no baseline or interval here, so those are NaN). Raises ValueError when the stores hold different
    numbers of rows, or were captured on different inputs (when both record an input hash).
    """
    metric_names = _streamable(metrics)
    if pairs not in ("all", "matching"):
        raise ValueError(f"pairs: unknown value {pairs!r}; choose 'all' or 'matching'")
    la, lb = _layers(store_a, "a", names_a), _layers(store_b, "b", names_b)
    if len(store_a) != len(store_b):
        raise ValueError(f"store_a and store_b must hold the same rows (the same inputs in the same order): "
                         f"got {len(store_a)} and {len(store_b)} rows")
    ha, hb = (getattr(s, "meta", {}).get("inputs") for s in (store_a, store_b))
    if ha is not None and hb is not None and ha != hb:
        raise ValueError(f"store_a and store_b were captured on different inputs (input hashes {ha} and {hb}); "
                         "their rows do not correspond")
    todo = [(a, b) for a in la for b in lb if pairs == "all" or a == b]
    if not todo:
        raise ValueError(f"pairs: 'matching' found no layer name in both names_a {la} and names_b {lb}")
    used_a, used_b = list(dict.fromkeys(a for a, _ in todo)), list(dict.fromkeys(b for _, b in todo))
    sides_a = {n: _Side(f"store_a[{n!r}]") for n in used_a}
    sides_b = {n: _Side(f"store_b[{n!r}]") for n in used_b}
    cross = {ab: _Cross() for ab in todo}
    for ba, bb in _aligned(store_a.blocks(used_a), store_b.blocks(used_b)):
        sa = {n: sides_a[n].update(matrix(ba[n], sides_a[n].name, min_rows=1, device=device)) for n in used_a}
        sb = {n: sides_b[n].update(matrix(bb[n], sides_b[n].name, min_rows=1, device=device)) for n in used_b}
        for a, b in todo:
            cross[a, b].update(*sa[a], *sb[b])
    rows = []
    for a, b in todo:
        s = StreamingSimilarity._from_parts(sides_a[a], sides_b[b], cross[a, b])
        for m in metric_names:
            try:
                value = STREAMABLE[m](s)
            except ValueError as e:
                raise ValueError(f"{m} of store_a[{a!r}] and store_b[{b!r}]: {e}") from None
            rows.append(dict(layer_a=a, layer_b=b, metric=m, value=value, baseline_mean=float("nan"),
                             p_value=float("nan"), ci_low=float("nan"), ci_high=float("nan")))
    return pd.DataFrame(rows, columns=COLUMNS)

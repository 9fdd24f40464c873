"""Every measure by its similarity-repository standard name (Cloos et al. 2024): ``measure(name)(X, Y)``.

A name is ``{family}[-{param}={value}...]-{form}``: e.g. ``cka-kernel=linear-hsic=gretton-score``,
``cka-kernel=(rbf-sigma=2.5)-hsic=song-distance=angular``, ``svcca-var=0.99-score``,
``procrustes-distance=euclidean``, ``rsa-rdm=correlation-compare=kendall``. The parameters in the name are
parsed; a name with a ``{placeholder}`` (as :func:`names` lists parametric ones) takes the value as a keyword.

Forms (the repository's transforms, applied to every family alike):
    score                       the similarity s
    distance=angular            arccos(s) (Williams et al. 2021)
    distance=euclidean          sqrt(||Xc||^2 + ||Yc||^2 - 2 ||Xc|| ||Yc|| s) (Xc: column-centred, unnormalised;
                                for Procrustes the size-and-shape distance min_Q ||Xc - Yc Q||_F)
    distance=squared_euclidean  its square
    distance=one_minus_score    1 - s (Ding et al. 2021)
    squared_score               mean squared canonical correlation (CCA and SVCCA only)

Each measure declares its :class:`Properties` (bounds, symmetry, invariances) in ``_FAMILIES`` below; the
property tests are generated from those declarations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..registry import unknown_name_error
from ._core import center, pair
from .cca import cca, principal_basis, pwcca, svcca
from .cka import linear_cka
from .dependence import bures_distance, distance_correlation, ensd, ensd_angular
from .geometry import mutual_knn, procrustes
from .variants import COMPARES, RDMS, cosine, kernel_cka, rsa_variant, shape_metric, svcca_dim

O, S, T, L, P = INVARIANCES = ("orthogonal", "isotropic_scaling", "translation", "invertible_linear", "permutation")
_SHAPE = frozenset({O, S, T, P})  # rotation, scale, translation and unit order: the usual set


@dataclass(frozen=True)
class Properties:
    """What a measure promises: ``bounds`` (low, high) of its value, ``symmetric`` (f(X, Y) = f(Y, X)) and
    the transformations of one argument it is invariant to (a subset of :data:`INVARIANCES`)."""

    bounds: tuple[float, float]
    symmetric: bool
    invariances: frozenset[str]


@dataclass(frozen=True)
class StandardMeasure:
    """``measure(name)``'s result: call it as ``m(X, Y)`` (X: (n, d1), Y: (n, d2)) -> float; ``params`` are the
    values parsed from the name, ``needs`` the placeholders still to pass as keywords."""

    name: str
    properties: Properties
    fn: Callable = field(repr=False)
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()

    def __call__(self, X, Y, **kwargs) -> float:
        missing = [k for k in self.needs if k not in kwargs]
        extra = [k for k in kwargs if k not in self.needs]
        if missing or extra:
            raise TypeError(f"{self.name}: " + (f"pass {missing} as keywords (the name's placeholders)"
                                                if missing else f"unexpected keywords {extra}"))
        return float(self.fn(X, Y, **{**self.params, **kwargs}))

    @property
    def __doc__(self):  # the docstring of the function behind the name
        return getattr(self.fn, "__doc__", None)


_NUM = r"[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?"


def _forms(score_fn, props: Properties, forms: tuple[str, ...]):
    """(form -> (fn, Properties)) for a score function: the repository's score-to-distance transforms."""
    lo, hi = props.bounds
    out = {"score": (score_fn, props)}

    def angular(X, Y, **kw):
        s = score_fn(X, Y, **kw)
        return 0.0 if abs(s - 1) < 1e-10 else math.acos(min(1.0, max(-1.0, s)))

    def euclidean2(X, Y, **kw):
        Xc, Yc = (center(t) for t in pair(X, Y, rescale=False))
        nx, ny = float(torch.linalg.norm(Xc)), float(torch.linalg.norm(Yc))
        return max(0.0, nx * nx + ny * ny - 2 * nx * ny * score_fn(X, Y, **kw))

    unscaled = Properties((0.0, math.inf), props.symmetric, props.invariances - {S, L})
    table = {
        "distance=angular": (angular, Properties((math.acos(min(hi, 1)), math.acos(max(lo, -1))),
                                                 props.symmetric, props.invariances)),
        "distance=one_minus_score": (lambda X, Y, **kw: 1 - score_fn(X, Y, **kw),
                                     Properties((1 - hi, 1 - lo), props.symmetric, props.invariances)),
        "distance=euclidean": (lambda X, Y, **kw: math.sqrt(euclidean2(X, Y, **kw)), unscaled),
        "distance=squared_euclidean": (euclidean2, unscaled),
    }
    out.update({f: table[f] for f in forms if f in table})
    return out


_DIST = ("distance=angular", "distance=euclidean", "distance=squared_euclidean", "distance=one_minus_score")
_ALL = ("score",) + _DIST


def _cka(sigma=None, hsic="gretton"):
    if sigma is None and hsic in ("gretton", "song"):
        fn = (lambda X, Y: linear_cka(X, Y)) if hsic == "gretton" else (lambda X, Y: linear_cka(X, Y, debiased=True))
    else:
        def fn(X, Y):
            return kernel_cka(X, Y, sigma=sigma, hsic=hsic)
    fn.__doc__ = kernel_cka.__doc__
    inv = frozenset({O, T, P}) | ({S} if sigma is None else set())
    return fn, Properties((0.0 if hsic == "gretton" else -1.0, 1.0), True, inv)


def _svcca(var=None, dim=None, squared=False):
    def fn(X, Y):
        if dim is not None:
            return svcca_dim(X, Y, dim, squared=squared)
        if not squared:
            return svcca(X, Y, variance_kept=var)
        rho = torch.linalg.svdvals(principal_basis(X, var).T @ principal_basis(Y, var)).clamp(0, 1)
        return float((rho * rho).mean())
    fn.__doc__ = (svcca_dim if dim is not None else svcca).__doc__
    return fn, Properties((0.0, 1.0), True, _SHAPE)


def _rsa(rdm, compare):
    def fn(X, Y):
        return rsa_variant(X, Y, rdm=rdm, compare=compare)
    fn.__doc__ = rsa_variant.__doc__
    inv = {P} | ({O, T} if rdm in ("euclidean", "squared_euclidean") else {O} if rdm == "cosine" else set())
    if compare != "euclidean":
        inv.add(S)
    bounds = (0.0, math.inf) if compare == "euclidean" else (-1.0, 1.0)
    return fn, Properties(bounds, True, frozenset(inv))


def _fixed(fn, bounds, symmetric, inv):
    return lambda: (fn, Properties(bounds, symmetric, frozenset(inv)))


# family regex (named groups are the name's parameters) -> (builder(**params) -> (score fn, Properties), forms)
_FAMILIES: list[tuple[str, Callable, tuple[str, ...]]] = [
    (r"cka-kernel=(?:linear|\(rbf-sigma=(?P<sigma>{NUM})\))-hsic=(?P<hsic>gretton|song|lange)", _cka, _ALL),
    (r"cca", _fixed(lambda X, Y: cca(X, Y).mean, (0.0, 1.0), True, {O, S, T, L, P}), _ALL),
    (r"cca", _fixed(lambda X, Y: cca(X, Y).r2, (0.0, 1.0), True, {O, S, T, L, P}), ("squared_score",)),
    (r"svcca-(?:var=(?P<var>{NUM})|dim=(?P<dim>{INT}))", _svcca, _ALL),
    (r"svcca-(?:var=(?P<var>{NUM})|dim=(?P<dim>{INT}))", lambda **p: _svcca(**p, squared=True), ("squared_score",)),
    # PWCCA weights by one side's neurons and (google's "+ mean" term) by the arbitrary sign of each singular
    # vector: not symmetric, not invariant to rotations, translations or even reordering of units
    (r"pwcca", _fixed(pwcca, (0.0, 1.0), False, {S}), _ALL),
    (r"(?:procrustes|nbs)", _fixed(procrustes, (0.0, 1.0), True, _SHAPE), _ALL),
    (r"shape_metric-alpha=(?P<alpha>{NUM})",
     lambda alpha: (lambda X, Y: shape_metric(X, Y, alpha), Properties((0.0, 1.0), True, frozenset({O, T, P}))),
     _ALL[:4]),
    (r"rsa-rdm=(?P<rdm>{RDM})-compare=(?P<compare>{CMP})", _rsa, ("",)),
    (r"cosine", _fixed(cosine, (-1.0, 1.0), True, {S}), ("",)),
    (r"bures_distance", _fixed(bures_distance, (0.0, math.inf), True, {O, T, P}), ("",)),
    (r"distance_correlation", _fixed(distance_correlation, (0.0, 1.0), True, _SHAPE), ("",)),
    (r"ensd", _fixed(lambda X, Y: ensd(X, Y).ensd, (0.0, math.inf), True, _SHAPE), ("",)),
    (r"ensd", _fixed(ensd_angular, (0.0, 1.0), True, _SHAPE), ("distance=angular_normalized",)),
    (r"mutual_knn-topk=(?P<topk>{INT})",
     lambda topk: (lambda X, Y: mutual_knn(X, Y, k=topk), Properties((0.0, 1.0), True, frozenset({O, S, P}))),
     ("",)),
]

_SUBST = {"{NUM}": _NUM, "{INT}": r"[0-9]+", "{RDM}": "|".join(RDMS), "{CMP}": "|".join(COMPARES)}
_PLACEHOLDER = re.compile(r"\{(sigma|var|dim|alpha|topk)\}")


def _compile(pattern: str, form: str) -> re.Pattern:
    for k, v in _SUBST.items():
        pattern = pattern.replace(k, v)
    return re.compile("^" + pattern + (f"-{re.escape(form)}" if form else "") + "$")


_PATTERNS = [(_compile(p, form), build, form) for p, build, forms in _FAMILIES for form in forms]

_RSA_NAMES = ([f"correlation-compare={c}" for c in COMPARES]
              + [f"euclidean-compare={c}" for c in ("euclidean", "pearson", "spearman")]
              + [f"squared_euclidean-compare={c}" for c in ("cosine", "kendall", "pearson", "rho_a", "spearman",
                                                           "tau_a", "tau_b")]
              + [f"cosine-compare={c}" for c in ("pearson", "spearman")])


def names() -> list[str]:
    """The similarity-repository standard names univ supports, sorted; parametric ones in their standard form
    with a placeholder (``cka-kernel=(rbf-sigma={sigma})-hsic=gretton-score``: pass ``sigma=`` when calling),
    plus the concrete parameter values the repository registers (``svcca-var=0.99-score``, ``svcca-dim=10-...``)."""
    out = []
    for kernel in ("linear", "(rbf-sigma={sigma})"):
        for hsic in ("gretton", "song", "lange"):
            out += [f"cka-kernel={kernel}-hsic={hsic}-{f}" for f in ("score",) + _DIST]
    for fam in ("cca", "pwcca", "procrustes", "nbs", "svcca-var=0.95", "svcca-var=0.99", "svcca-dim=10",
                "svcca-dim={dim}", "shape_metric-alpha={alpha}"):
        out += [f"{fam}-{f}" for f in ("score",) + _DIST if not (fam.startswith("shape") and "one_minus" in f)]
        if fam.startswith(("cca", "svcca")):
            out.append(f"{fam}-squared_score")
    out += [f"rsa-rdm={r}" for r in _RSA_NAMES]
    out += ["cosine", "bures_distance", "distance_correlation", "ensd", "ensd-distance=angular_normalized",
            "mutual_knn-topk={topk}"]
    return sorted(out)


def _parse(value: str, key: str):
    return int(value) if key in ("dim", "topk") else float(value)


def measure(name: str) -> StandardMeasure:
    """The measure called ``name`` (a similarity-repository standard name) -> :class:`StandardMeasure`, a
    callable ``m(X, Y) -> float`` with ``m.properties``. Unknown names raise a ValueError listing the closest
    supported ones (:func:`names`)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a standard measure name (str), got {type(name).__name__}")
    needs = tuple(_PLACEHOLDER.findall(name))
    probe = _PLACEHOLDER.sub(lambda m: "10" if m.group(1) in ("dim", "topk") else "0.5", name)
    for pattern, build, form in _PATTERNS:
        m = pattern.match(probe)
        if m is not None:
            params = {k: v for k, v in m.groupdict().items() if v is not None and k not in needs}
            fixed = {k: v if k in ("hsic", "rdm", "compare") else _parse(v, k) for k, v in params.items()}
            _check_params(name, fixed)
            return _standard(name, build, form, fixed, needs)
    raise unknown_name_error("similarity measure", name, names())


def _standard(name: str, build, form: str, fixed: dict, needs: tuple[str, ...]) -> StandardMeasure:
    def make(**kw):
        fn, props = build(**kw)
        return _forms(fn, props, _DIST)[form] if form in _ALL else (fn, props)

    # the declaration does not depend on the placeholders' values: build it once with stand-ins
    fn, props = make(**fixed, **{k: 10 if k in ("dim", "topk") else 0.5 for k in needs})
    if needs:
        def fn(X, Y, **kw):
            _check_params(name, kw)
            return make(**fixed, **{k: _parse(str(v), k) for k, v in kw.items()})[0](X, Y)
    return StandardMeasure(name, props, fn, {}, needs)


def _check_params(name: str, params: dict) -> None:
    for key, v in params.items():
        if key in ("hsic", "rdm", "compare"):
            continue
        if key in ("dim", "topk") and (isinstance(v, bool) or int(v) != v or int(v) < 1):
            raise ValueError(f"{name}: {key} must be a positive integer, got {v!r}")
        if key == "sigma" and not 0 < float(v) < math.inf:
            raise ValueError(f"{name}: sigma must be positive and finite, got {v!r}")
        if key == "var" and not 0 < float(v) <= 1:
            raise ValueError(f"{name}: var (the variance fraction kept) must be in (0, 1], got {v!r}")
        if key == "alpha" and not 0 <= float(v) <= 1:
            raise ValueError(f"{name}: alpha must be in [0, 1], got {v!r}")

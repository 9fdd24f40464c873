"""Every measure by its similarity-repository standard name (Cloos et al. 2024): ``measure(name)(X, Y)``.

A name is ``{family}[-{param}={value}...]-{form}``: e.g. ``cka-kernel=linear-hsic=gretton-score``,
``cka-kernel=(rbf-sigma=2.5)-hsic=song-distance=angular``, ``svcca-var=0.99-score``,
``procrustes-distance=euclidean``, ``rsa-rdm=correlation-compare=kendall``, ``ridge-lambda=1-r2-cv=5folds``.
The parameters in the name are parsed; a name with a ``{placeholder}`` (as :func:`names` lists parametric
ones) takes the value as a keyword.

Forms (the repository's transforms, applied to every family alike):
    score                       the similarity s
    distance=angular            arccos(s) (Williams et al. 2021)
    distance=euclidean          sqrt(nx^2 + ny^2 - 2 nx ny s), nx and ny the norms of what the measure
                                compares, as the repository derives it (for Procrustes the size-and-shape
                                distance min_Q ||Xc - Yc Q||_F): ||Xc||, ||Yc|| of the column-centred inputs,
                                except for RBF-kernel CKA, sqrt(tr(H K H)) of each centred kernel (the
                                repository computes kernel CKA on the kernel's square root), and for SVCCA,
                                the norms of the PCA-reduced data that its CCA compares
    distance=squared_euclidean  its square
    distance=one_minus_score    1 - s (Ding et al. 2021)
    squared_score               mean squared canonical correlation (CCA and SVCCA only)

Where the repository's wrapped implementations disagree, univ follows the majority; where a name has a
single peer that univ does not follow, the measure's docstring (``measure(name).__doc__``) says which
convention univ follows and why (``svcca-dim=...`` by platonic-rep, ``pwcca-distance=one_minus_score`` by
sim_metric, ``linear_regression`` by ReSi, ``linear_regression-...-cv=5folds`` by DeepDive, ``jaccard_similarity``
where ReSi and llm_repsim disagree, ``soft_correlation_match``).

Each measure declares its :class:`Properties` (bounds, symmetry, invariances) in ``_FAMILIES`` below; the
property tests are generated from those declarations. A non-symmetric measure's invariances hold for
transformations of either argument.
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
from .matching import hard_correlation_match, permutation_procrustes, permutation_score, soft_correlation_match
from .neighbours import cknna, cycle_knn, jaccard_knn
from .predictivity import SCORES, linear_regression_r2, regression_predictivity, ridge_r2
from .variants import COMPARES, RDMS, cosine, kernel_cka, kernel_norm, pca_norm, rsa_variant, shape_metric, svcca_dim

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


def centred_norms(X, Y) -> tuple[float, float]:
    """||Xc||_F, ||Yc||_F of the column-centred, unscaled inputs: the default norms of the Euclidean forms."""
    Xc, Yc = (center(t) for t in pair(X, Y, rescale=False))
    return float(torch.linalg.norm(Xc)), float(torch.linalg.norm(Yc))


_FORM_DOC = {
    "distance=angular": "Form: arccos(score).",
    "distance=one_minus_score": "Form: 1 - score.",
    "distance=euclidean": "Form: sqrt(nx^2 + ny^2 - 2 nx ny score); nx, ny: {norms}.",
    "distance=squared_euclidean": "Form: nx^2 + ny^2 - 2 nx ny score; nx, ny: {norms}.",
}


def _forms(score_fn, props: Properties, forms: tuple[str, ...], norms=None, norms_doc: str = ""):
    """(form -> (fn, Properties)) for a score function: the repository's score-to-distance transforms.
    ``norms(X, Y) -> (nx, ny)``: the norms the Euclidean forms use (default :func:`centred_norms`)."""
    lo, hi = props.bounds
    norms = norms or centred_norms
    out = {"score": (score_fn, props)}

    def angular(X, Y, **kw):
        s = score_fn(X, Y, **kw)
        return 0.0 if abs(s - 1) < 1e-10 else math.acos(min(1.0, max(-1.0, s)))

    def euclidean2(X, Y, **kw):
        s = score_fn(X, Y, **kw)  # first: it validates X and Y
        nx, ny = norms(X, Y)
        return max(0.0, nx * nx + ny * ny - 2 * nx * ny * s)

    unscaled = Properties((0.0, math.inf), props.symmetric, props.invariances - {S, L})
    table = {
        "distance=angular": (angular, Properties((math.acos(min(hi, 1)), math.acos(max(lo, -1))),
                                                 props.symmetric, props.invariances)),
        "distance=one_minus_score": (lambda X, Y, **kw: 1 - score_fn(X, Y, **kw),
                                     Properties((1 - hi, 1 - lo), props.symmetric, props.invariances)),
        "distance=euclidean": (lambda X, Y, **kw: math.sqrt(euclidean2(X, Y, **kw)), unscaled),
        "distance=squared_euclidean": (euclidean2, unscaled),
    }
    for f in forms:
        if f in table:
            fn, p = table[f]
            note = _FORM_DOC[f].format(norms=norms_doc or "the Frobenius norms of the column-centred inputs")
            fn.__doc__ = f"{score_fn.__doc__ or ''}\n\n{note}"
            out[f] = (fn, p)
    return out


_DIST = ("distance=angular", "distance=euclidean", "distance=squared_euclidean", "distance=one_minus_score")
_ALL = ("score",) + _DIST


def _documented(fn, doc, note: str = ""):
    fn.__doc__ = (doc or "") + (f"\n\nConvention: {note}" if note else "")
    return fn


def _cka(sigma=None, hsic="gretton"):
    if sigma is None and hsic in ("gretton", "song"):
        fn = (lambda X, Y: linear_cka(X, Y)) if hsic == "gretton" else (lambda X, Y: linear_cka(X, Y, debiased=True))
    else:
        def fn(X, Y):
            return kernel_cka(X, Y, sigma=sigma, hsic=hsic)
    _documented(fn, kernel_cka.__doc__)
    inv = frozenset({O, T, P}) | ({S} if sigma is None else set())
    props = Properties((0.0 if hsic == "gretton" else -1.0, 1.0), True, inv)
    if sigma is None:
        return fn, props
    return fn, props, lambda X, Y: (kernel_norm(X, sigma), kernel_norm(Y, sigma)), (
        "sqrt(tr(H K H)) of each side's centred RBF kernel (16 of 18 peers; platonic-rep and thingsvision "
        "use the inputs' norms)")


_SVCCA_DIM_NOTE = (
    "univ's svcca-dim=K is PCA to K components of the column-centred data, then the mean of the K canonical "
    "correlations (contrasim, netrep, sim_metric and google/svcca: 4 of the 5 peers of svcca-dim=10). "
    "platonic-rep, the only peer registered under the parametric name svcca-dim={dim}, standardises each unit "
    "(z-scores), uses a randomised low-rank SVD (torch.svd_lowrank) and scikit-learn's iterative CCA with "
    "added noise: its value is not deterministic (0.484, 0.510 and 0.435 in three runs on the benchmark input, "
    "where univ and the four others give 0.717) and is a different measure, so univ keeps one definition for "
    "every dim.")


def _svcca(var=None, dim=None, squared=False):
    def fn(X, Y):
        if dim is not None:
            return svcca_dim(X, Y, dim, squared=squared)
        if not squared:
            return svcca(X, Y, variance_kept=var)
        X, Y = pair(X, Y, min_rows=3, what="SVCCA")  # validated here, so that errors name the right side
        rho = torch.linalg.svdvals(principal_basis(X, var).T @ principal_basis(Y, var)).clamp(0, 1)
        return float((rho * rho).mean())
    _documented(fn, (svcca_dim if dim is not None else svcca).__doc__, _SVCCA_DIM_NOTE if dim is not None else "")

    def norms(X, Y):
        return pca_norm(X, var=var, dim=dim), pca_norm(Y, var=var, dim=dim)
    return fn, Properties((0.0, 1.0), True, _SHAPE), norms, "the norms of each side's PCA-reduced data"


_PWCCA_NOTE = (
    "every form is computed from univ's pwcca-score, google/svcca's compute_pwcca (contrasim, ReSi, rtd and "
    "google/svcca agree: 4 of the 5 peers of pwcca-score). sim_metric, the only peer of "
    "pwcca-distance=one_minus_score, computes Ding et al.'s (2021) PWCCA (unregularised CCA of centred data, "
    "weights without google's '+ mean' term), which differs by about 1e-3; univ keeps 1 - s consistent with "
    "its score and its other distances.")


def _rsa(rdm, compare):
    def fn(X, Y):
        return rsa_variant(X, Y, rdm=rdm, compare=compare)
    _documented(fn, rsa_variant.__doc__)
    inv = {P} | ({O, T} if rdm in ("euclidean", "squared_euclidean") else {O} if rdm == "cosine" else set())
    if compare != "euclidean":
        inv.add(S)
    bounds = (0.0, math.inf) if compare == "euclidean" else (-1.0, 1.0)
    return fn, Properties(bounds, True, frozenset(inv))


def _fixed(fn, bounds, symmetric, inv, note: str = ""):
    def build():
        def f(X, Y):
            return fn(X, Y)
        return _documented(f, fn.__doc__, note), Properties(bounds, symmetric, frozenset(inv))
    return build


_REGRESSION_NOTE = (
    "the direction follows the repository's regression peers (DeepDive, NeuroAIMetrics): the score of "
    "predicting Y from X; the -reverse name predicts X from Y.")


_OLS_NOTE = (
    " univ fits ordinary least squares under linear_regression-...; DeepDive, the only peer of these names, "
    "fits Ridge(alpha=1) (its wrapper's alphas=[0] goes to an argument the k-fold path ignores), so its value "
    "is univ's ridge-lambda=1-... (0.76037 against OLS's 0.76012 for r2 on the benchmark input).")
_RESI_REGRESSION_NOTE = (
    "ReSi, the only peer of linear_regression, projects its first argument onto the second's span, i.e. "
    "scores X from Y; univ keeps the direction of its other regression measures (Y from X, as DeepDive and "
    "NeuroAIMetrics), so ReSi's value is univ's linear_regression_r2(X, Y, reverse=True).")
_JACCARD_NOTE = (
    "the two peers disagree: ReSi compares the raw rows, llm_repsim centres each column first; univ follows "
    "ReSi (the measure's source, Klabunde et al.); llm_repsim's value is jaccard_knn(X - mean, Y - mean), "
    "i.e. univ.similarity.neighbours.jaccard_knn(X, Y, center=True).")


def _regression(score, folds, ridge=0.0, reverse=False):
    def fn(X, Y):
        return regression_predictivity(X, Y, folds=folds, ridge=ridge, score=score, reverse=reverse)
    _documented(fn, regression_predictivity.__doc__, _REGRESSION_NOTE + ("" if ridge else _OLS_NOTE))
    bounds = {"r2": (-math.inf, 1.0), "pearsonr": (-1.0, 1.0), "pearsonr2": (0.0, 1.0)}[score]
    return fn, Properties(bounds, False, frozenset({P, T} | ({S} if ridge == 0 else set())))


def _knn(fn, bounds, symmetric):
    def build(topk):
        def f(X, Y):
            return fn(X, Y, k=topk)
        return _documented(f, fn.__doc__), Properties(bounds, symmetric, frozenset({O, S, P}))
    return build


_SOFT_NOTE = (
    "optimal transport between units (Khosla & Williams 2023; NeuroAIMetrics' ot.emd). ReSi's function of "
    "the same name averages each unit's best correlation over both directions, which is not a transport "
    "plan; univ follows the paper's definition.")
_REG = r"(?P<score>r2|pearsonr|pearsonr2)-cv=(?P<folds>{INT})folds(?P<reverse>-reverse)?"

# family regex (named groups are the name's parameters) -> (builder(**params) -> (score fn, Properties[, norms,
# what the norms are]), forms)
_FAMILIES: list[tuple[str, Callable, tuple[str, ...]]] = [
    (r"cka-kernel=(?:linear|\(rbf-sigma=(?P<sigma>{NUM})\))-hsic=(?P<hsic>gretton|song|lange)", _cka, _ALL),
    (r"cca", _fixed(lambda X, Y: cca(X, Y).mean, (0.0, 1.0), True, {O, S, T, L, P}), _ALL),
    (r"cca", _fixed(lambda X, Y: cca(X, Y).r2, (0.0, 1.0), True, {O, S, T, L, P}), ("squared_score",)),
    (r"svcca-(?:var=(?P<var>{NUM})|dim=(?P<dim>{INT}))", _svcca, _ALL),
    (r"svcca-(?:var=(?P<var>{NUM})|dim=(?P<dim>{INT}))", lambda **p: _svcca(**p, squared=True), ("squared_score",)),
    # PWCCA weights by one side's neurons and (google's "+ mean" term) by the arbitrary sign of each singular
    # vector: not symmetric, not invariant to rotations, translations or even reordering of units
    (r"pwcca", _fixed(pwcca, (0.0, 1.0), False, {S}, _PWCCA_NOTE), _ALL),
    (r"(?:procrustes|nbs)", _fixed(procrustes, (0.0, 1.0), True, _SHAPE), _ALL),
    (r"shape_metric-alpha=(?P<alpha>{NUM})",
     lambda alpha: (_documented(lambda X, Y: shape_metric(X, Y, alpha), shape_metric.__doc__),
                    Properties((0.0, 1.0), True, frozenset({O, T, P}))),
     _ALL[:4]),
    (r"rsa-rdm=(?P<rdm>{RDM})-compare=(?P<compare>{CMP})", _rsa, ("",)),
    (r"cosine", _fixed(cosine, (-1.0, 1.0), True, {S}), ("",)),
    (r"bures_distance", _fixed(bures_distance, (0.0, math.inf), True, {O, T, P}), ("",)),
    (r"distance_correlation", _fixed(distance_correlation, (0.0, 1.0), True, _SHAPE), ("",)),
    (r"ensd", _fixed(lambda X, Y: ensd(X, Y).ensd, (0.0, math.inf), True, _SHAPE), ("",)),
    (r"ensd", _fixed(ensd_angular, (0.0, 1.0), True, _SHAPE), ("distance=angular_normalized",)),
    (r"mutual_knn-topk=(?P<topk>{INT})", _knn(mutual_knn, (0.0, 1.0), True), ("",)),
    (r"jaccard_similarity", _fixed(jaccard_knn, (0.0, 1.0), True, {O, S, P}, _JACCARD_NOTE), ("",)),
    # CKNNA's numerator and denominators use different masks: no Cauchy-Schwarz bound; its kNN masks are not
    # symmetric matrices, and the unbiased HSIC of two non-symmetric matrices depends on their order
    (r"cknna-topk=(?P<topk>{INT})", _knn(cknna, (-math.inf, math.inf), False), ("",)),
    (r"cycle_knn-topk=(?P<topk>{INT})", _knn(cycle_knn, (0.0, 1.0), False), ("",)),
    (r"linear_regression", _fixed(linear_regression_r2, (0.0, 1.0), False, _SHAPE, _RESI_REGRESSION_NOTE),
     ("",)),
    (r"linear_regression-" + _REG, _regression, ("",)),
    (r"ridge-lambda=(?P<ridge>{NUM})-" + _REG, _regression, ("",)),
    # kernel ridge (the dual form) gives the same predictions: brain_language_nlp registers both
    (r"(?:kernel_)?ridge-lambda=(?P<ridge>{NUM})-r2",
     lambda ridge: (_documented(lambda X, Y: ridge_r2(X, Y, ridge), ridge_r2.__doc__, _REGRESSION_NOTE),
                    Properties((-math.inf, 1.0), False, frozenset({P}))), ("",)),
    (r"permutation_metric", _fixed(permutation_score, (0.0, 1.0), True, {S, T, P}), _ALL),
    (r"permutation_procrustes", _fixed(permutation_procrustes, (0.0, math.inf), True, {P}), ("",)),
    (r"hard_correlation_match", _fixed(hard_correlation_match, (-1.0, 1.0), True, {S, T, P}), ("",)),
    (r"soft_correlation_match", _fixed(soft_correlation_match, (-1.0, 1.0), True, {S, T, P}, _SOFT_NOTE), ("",)),
]

_SUBST = {"{INT}": r"[0-9]+", "{NUM}": _NUM, "{RDM}": "|".join(RDMS), "{CMP}": "|".join(COMPARES)}
_INTS = ("dim", "topk", "folds")
_PLACEHOLDER = re.compile(r"\{(sigma|var|dim|alpha|topk|folds|ridge)\}")
_WORDS = ("hsic", "rdm", "compare", "score")  # parameters that stay strings


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
    plus the concrete parameter values the repository registers (``svcca-var=0.99-score``, ``svcca-dim=10-...``,
    ``ridge-lambda=1-r2-cv=5folds``)."""
    out = []
    for kernel in ("linear", "(rbf-sigma={sigma})"):
        for hsic in ("gretton", "song", "lange"):
            out += [f"cka-kernel={kernel}-hsic={hsic}-{f}" for f in _ALL]
    for fam in ("cca", "pwcca", "procrustes", "nbs", "svcca-var=0.95", "svcca-var=0.99", "svcca-dim=10",
                "svcca-dim={dim}", "shape_metric-alpha={alpha}", "permutation_metric"):
        out += [f"{fam}-{f}" for f in _ALL if not (fam.startswith("shape") and "one_minus" in f)]
        if fam.startswith(("cca", "svcca")):
            out.append(f"{fam}-squared_score")
    out += [f"rsa-rdm={r}" for r in _RSA_NAMES]
    out += ["cosine", "bures_distance", "distance_correlation", "ensd", "ensd-distance=angular_normalized",
            "mutual_knn-topk={topk}", "jaccard_similarity", "cknna-topk={topk}", "cycle_knn-topk={topk}",
            "linear_regression", "permutation_procrustes", "hard_correlation_match", "soft_correlation_match",
            "ridge-lambda=1-r2", "ridge-lambda={ridge}-r2", "kernel_ridge-lambda=1-r2",
            "kernel_ridge-lambda={ridge}-r2"]
    for fam in ("linear_regression", "ridge-lambda=1", "ridge-lambda={ridge}"):
        for folds in ("5", "{folds}"):
            out += [f"{fam}-{s}-cv={folds}folds{rev}" for s in SCORES for rev in ("", "-reverse")]
    return sorted(out)


def _parse(value, key: str):
    if key == "reverse":
        return True
    return int(value) if key in _INTS else float(value)


def measure(name: str) -> StandardMeasure:
    """The measure called ``name`` (a similarity-repository standard name) -> :class:`StandardMeasure`, a
    callable ``m(X, Y) -> float`` with ``m.properties``. Unknown names raise a ValueError listing the closest
    supported ones (:func:`names`)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a standard measure name (str), got {type(name).__name__}")
    needs = tuple(_PLACEHOLDER.findall(name))
    probe = _PLACEHOLDER.sub(lambda m: "10" if m.group(1) in _INTS else "0.5", name)
    for pattern, build, form in _PATTERNS:
        m = pattern.match(probe)
        if m is not None:
            params = {k: v for k, v in m.groupdict().items() if v is not None and k not in needs}
            fixed = {k: v if k in _WORDS else _parse(v, k) for k, v in params.items()}
            _check_params(name, fixed)
            return _standard(name, build, form, fixed, needs)
    raise unknown_name_error("similarity measure", name, names())


def _standard(name: str, build, form: str, fixed: dict, needs: tuple[str, ...]) -> StandardMeasure:
    def make(**kw):
        fn, props, *norms = build(**kw)
        return _forms(fn, props, _DIST, *norms)[form] if form in _ALL else (fn, props)

    # the declaration does not depend on the placeholders' values: build it once with stand-ins
    fn, props = make(**fixed, **{k: 10 if k in _INTS else 0.5 for k in needs})
    if needs:
        doc = fn.__doc__

        def fn(X, Y, **kw):
            _check_params(name, kw)
            return make(**fixed, **{k: _parse(v, k) for k, v in kw.items()})[0](X, Y)
        fn.__doc__ = doc
    return StandardMeasure(name, props, fn, {}, needs)


def _check_params(name: str, params: dict) -> None:
    for key, v in params.items():
        if key in _WORDS or key == "reverse":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, str)) and not hasattr(v, "__float__"):
            raise TypeError(f"{name}: {key} must be a number, got {v!r} ({type(v).__name__})")
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"{name}: {key} must be a number, got {v!r}") from None
        if key in _INTS:
            low = 2 if key == "folds" else 1
            if f != int(f) if math.isfinite(f) else True:
                raise ValueError(f"{name}: {key} must be an integer >= {low}, got {v!r}")
            if int(f) < low:
                raise ValueError(f"{name}: {key} must be an integer >= {low}, got {v!r}")
        elif not math.isfinite(f):
            raise ValueError(f"{name}: {key} must be finite, got {v!r}")
        if key == "sigma" and not f > 0:
            raise ValueError(f"{name}: sigma must be positive and finite, got {v!r}")
        if key == "var" and not 0 < f <= 1:
            raise ValueError(f"{name}: var (the variance fraction kept) must be in (0, 1], got {v!r}")
        if key == "alpha" and not 0 <= f <= 1:
            raise ValueError(f"{name}: alpha must be in [0, 1], got {v!r}")
        if key == "ridge" and not f >= 0:
            raise ValueError(f"{name}: ridge (the penalty lambda) must be >= 0, got {v!r}")

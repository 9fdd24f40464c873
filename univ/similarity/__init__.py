"""Representation similarity: CKA, CCA/SVCCA/PWCCA, Procrustes, RSA, mutual kNN, all-pairs compare, and
exact streaming versions of the second-moment measures (compare_stores over on-disk activation stores).

Every metric takes X: (n, d1), Y: (n, d2) as numpy arrays or torch tensors (rows are samples, any
float dtype), computes in float64 on ``device`` (default: the input's) and returns a float.
"""

from __future__ import annotations

from .cca import (
    CCAResult,
    PWCCASide,
    cca,
    principal_basis,
    pwcca,
    pwcca_from_sides,
    pwcca_side,
    span_basis,
    svcca,
)
from .cka import center_gram, gram_cka, linear_cka, minibatch_cka, rbf_cka, rbf_gram
from .compare import METRICS, compare, compare_grid, get_metric, grid, register_metric
from .geometry import knn_indices, mutual_knn, procrustes, procrustes_distance, rsa
from .moments import LayerMoments, layer_moments, moment_measures
from .streaming import STREAMABLE, ScatterMoments, StreamingLinearCKA, StreamingSimilarity, compare_stores

__all__ = [
    "linear_cka", "rbf_cka", "gram_cka", "rbf_gram", "center_gram", "StreamingLinearCKA", "minibatch_cka",
    "cca", "CCAResult", "svcca", "span_basis", "principal_basis", "pwcca", "pwcca_side", "pwcca_from_sides",
    "PWCCASide",
    "StreamingSimilarity", "ScatterMoments", "STREAMABLE", "compare_stores",
    "procrustes", "procrustes_distance", "rsa", "mutual_knn", "knn_indices",
    "layer_moments", "moment_measures", "LayerMoments", "compare", "compare_grid",
    "grid", "METRICS", "get_metric", "register_metric",
]
from .names import StandardMeasure, measure, names  # noqa: E402  (standard names; kept apart from the list above)

__all__ += ["measure", "names", "StandardMeasure"]

"""A ground truth for multi-model dictionaries: N "models'" activations built from sparse features whose
subset of models is known (``univ.data.shared_features``).

Every feature f lives in a subset S_f of the models (all of them, some, or one). On each input it is active
with probability ``p_active`` and then takes a magnitude drawn from Uniform(0.5, 1.5); model m sees

    x_m = phi_m( sum_{f : m in S_f} a_f * g_{f,m} * u_{f,m} ) + noise        x_m: (n, d_ins[m])

with u_{f,m} a random unit direction in R^{d_ins[m]} (independent across models, so each model maps the
shared code to its own width by its own map), g_{f,m} a per-model gain (1, or log-uniform in
[1 / gain_spread, 1] for features shared by several models: a feature can be weaker in one model, which is
where L1 crosscoders shrink it away), and phi_m the identity or, with ``nonlinear``, a per-model
elementwise softplus-like bend. Scoring a dictionary against it: :func:`univ.sae.tags.score_subsets`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_real, check_seed


@dataclass(frozen=True)
class SharedFeatures:
    """What :func:`shared_features` returns.

    xs: N tensors (n, d_ins[m]) float32, the models' activations on the same n inputs (row i of every
    model is input i). coefficients: (n, F) the features' magnitudes (0 when inactive; before gains).
    membership: (F, N) bool, feature f lives in model m. directions: N tensors (F, d_ins[m]), unit rows
    for the features model m has, zero rows for the others. gains: (F, N), 0 where absent.
    """

    xs: list[Tensor]
    coefficients: Tensor
    membership: Tensor
    directions: list[Tensor]
    gains: Tensor

    @property
    def n_models(self) -> int:
        return len(self.xs)

    def subsets(self) -> list[tuple[int, ...]]:
        """The true subset of every feature, as a sorted tuple of model indices."""
        return [tuple(int(m) for m in torch.nonzero(row).flatten()) for row in self.membership]


def default_subsets(n_models: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of the models when N <= 4; else each model alone, each pair and all of them."""
    idx = range(n_models)
    sizes = range(1, n_models + 1) if n_models <= 4 else (1, 2, n_models)
    return [s for r in sizes for s in itertools.combinations(idx, r)]


def shared_features(n: int = 20_000, d_ins=(48, 64, 96), *, features_per_subset: int = 16, subsets=None,
                    p_active: float = 0.04, gain_spread: float = 1.0, noise: float = 0.01,
                    nonlinear: bool = False, seed: int = 0) -> SharedFeatures:
    """N models' activations on the same n inputs from shared and model-private sparse features.

    n: inputs. d_ins: the models' widths (N = len(d_ins) >= 2). subsets: the subsets of models features
    live in (tuples of model indices; default :func:`default_subsets`), ``features_per_subset`` features
    each. p_active: each feature's firing probability per input. gain_spread: >= 1; a shared feature's
    gain in each of its models is log-uniform in [1 / gain_spread, 1] (1: the same everywhere).
    noise: std of the Gaussian noise per coordinate, relative to 1 / sqrt(d). nonlinear: bend each model's
    activations by its own elementwise map (x -> softplus(c x) / c with c drawn per model).
    Returns :class:`SharedFeatures` (with the truth: coefficients, membership, directions, gains).
    """
    n = check_int(n, "n", low=2)
    if isinstance(d_ins, (str, bytes)) or not hasattr(d_ins, "__len__"):
        raise TypeError(f"d_ins: expected a list of model widths, got {type(d_ins).__name__} {d_ins!r}")
    d_ins = [check_int(d, f"d_ins[{m}]", low=1) for m, d in enumerate(d_ins)]
    if len(d_ins) < 2:
        raise ValueError(f"d_ins: needs at least 2 models, got {len(d_ins)}")
    n_models = len(d_ins)
    features_per_subset = check_int(features_per_subset, "features_per_subset", low=1)
    p_active = check_real(p_active, "p_active", 0.0, 1.0)
    gain_spread = check_real(gain_spread, "gain_spread", low=1.0)
    noise = check_real(noise, "noise", low=0.0)
    seed = check_seed(seed) or 0
    subsets = default_subsets(n_models) if subsets is None else _check_subsets(subsets, n_models)
    g = torch.Generator().manual_seed(seed)
    membership = torch.zeros(len(subsets) * features_per_subset, n_models, dtype=torch.bool)
    for i, s in enumerate(subsets):
        membership[i * features_per_subset:(i + 1) * features_per_subset, list(s)] = True
    n_feat = len(membership)
    log_gain = -torch.rand(n_feat, n_models, generator=g, dtype=torch.float64) * math.log(gain_spread)
    shared = membership.sum(1, keepdim=True) > 1
    gains = torch.where(shared, log_gain.exp(), torch.ones_like(log_gain)) * membership
    on = torch.rand(n, n_feat, generator=g) < p_active
    coef = on * (0.5 + torch.rand(n, n_feat, generator=g, dtype=torch.float64))
    xs, dirs = [], []
    for m, d in enumerate(d_ins):
        u = torch.randn(n_feat, d, generator=g, dtype=torch.float64)
        u = u / u.norm(dim=1, keepdim=True) * membership[:, m, None]
        x = (coef * gains[:, m]) @ u + noise / math.sqrt(d) * torch.randn(n, d, generator=g, dtype=torch.float64)
        if nonlinear:
            c = 1.0 + 2.0 * float(torch.rand((), generator=g))
            x = torch.nn.functional.softplus(c * x) / c - math.log(2) / c
        xs.append(x.float())
        dirs.append(u.float())
    return SharedFeatures(xs, coef.float(), membership, dirs, gains.float())


def _check_subsets(subsets, n_models: int) -> list[tuple[int, ...]]:
    out = []
    for i, s in enumerate(subsets):
        try:
            t = tuple(sorted({int(m) for m in s}))
        except (TypeError, ValueError):
            raise TypeError(f"subsets[{i}]: expected a tuple of model indices, got {s!r}") from None
        if not t or t[0] < 0 or t[-1] >= n_models:
            raise ValueError(f"subsets[{i}]: expected a non-empty tuple of model indices in [0, {n_models - 1}], "
                             f"got {s!r}")
        out.append(t)
    if not out:
        raise ValueError("subsets: expected at least one subset of models")
    return out

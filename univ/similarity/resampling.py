"""Cheap permutation nulls and bootstrap resamples for the measures of :data:`univ.similarity.METRICS`.

A permutation of B's rows leaves every per-layer statistic unchanged (centring, Grams, span and principal bases,
RDM ranks, neighbour lists are permutation-equivariant), so each layer is prepared once and each permutation
costs only the cross term:

    linear CKA, debiased CKA, Procrustes: C = Fx^T Fy[p]  (F = Xc, or U S of its SVD when d > n: same Gram)
    CCA / SVCCA:                          svdvals(Qx^T Qy[p])  (Q: span / principal basis of the layer)
    RBF CKA (+ debiased), RSA:            <Mx, My[p][:, p]>   (M: centred Gram, or centred RDM ranks)
    mutual kNN:                           shared neighbours of x_i and p^-1(N_y(p_i))
    PWCCA:                                its per-side statistics once, google's cross computation per draw

A plan is one family: ``prepare(X) -> state`` once per layer, ``null(sx, sy, perms) -> {metric: (B,)}`` for
B permutations of Y's rows, ``resample(state, X, counts)`` for a bootstrap resample (``counts``: (n,) how often
each input is drawn) and ``boot(bx, by) -> {metric: float}``. Other registered metrics use :class:`NaivePlan`
(the metric recomputed per draw).
"""

from __future__ import annotations

import torch

from ._core import center, debiased_hsic, matrix, sym_fro2
from .cca import pwcca_from_sides, pwcca_side
from .cka import center_gram, rbf_gram
from .geometry import knn_indices, rdm_upper


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / sqrt(den), NaN where den <= 0 (a degenerate resample, not an error)."""
    den = torch.as_tensor(den, dtype=num.dtype, device=num.device)
    return torch.where(den > 0, num / den.clamp_min(1e-300).sqrt(), torch.full_like(num, float("nan")))


def _np(t: torch.Tensor):
    return t.detach().cpu().numpy()


def _svd_basis(Xc: torch.Tensor) -> torch.Tensor:
    """(n, r) F with F F^T = Xc Xc^T and r = min(n, d): Xc itself when d <= n, else U S."""
    if Xc.shape[1] <= Xc.shape[0]:
        return Xc
    U, S, _ = torch.linalg.svd(Xc, full_matrices=False)
    return U * S


class Plan:
    """A family of measures sharing per-layer statistics; ``metrics``: the names it serves."""

    metrics: tuple[str, ...] = ()

    def __init__(self, names):
        self.names = tuple(names)

    def prepare(self, X: torch.Tensor):
        raise NotImplementedError

    def null(self, sx, sy, perms: torch.Tensor) -> dict:
        raise NotImplementedError

    def values(self, sx, sy) -> dict[str, float]:
        """The measures on the unpermuted data (the identity permutation through :meth:`null`)."""
        ident = torch.arange(self.n(sx), device=self.device(sx))[None]
        return {k: float(v[0]) for k, v in self.null(sx, sy, ident).items()}

    def resample(self, state, X: torch.Tensor, counts: torch.Tensor):
        return self.prepare(X[torch.repeat_interleave(torch.arange(len(counts), device=X.device), counts)])

    def boot(self, bx, by) -> dict[str, float]:
        return self.values(bx, by)

    def n(self, state) -> int:
        return state["n"]

    def device(self, state):
        return state["device"]


class MomentPlan(Plan):
    """linear_cka, linear_cka_debiased, procrustes, cca, cca_r2, svcca (svcca: variance kept 0.99)."""

    metrics = ("linear_cka", "linear_cka_debiased", "procrustes", "cca", "cca_r2", "svcca")

    def prepare(self, X):
        from .cca import principal_basis, span_basis

        Xc = center(matrix(X, "X", rescale=True))
        r = (Xc * Xc).sum(1)
        tot = r.sum()
        s = {"n": X.shape[0], "device": Xc.device, "F": _svd_basis(Xc), "r": r, "tot": tot}
        xx = sym_fro2(s["F"])
        s["xx"], s["xxd"] = xx, debiased_hsic(xx, r, r, tot, tot, X.shape[0])
        # the bases from X in its own dtype: their rank cut uses the precision the data were computed in
        if {"cca", "cca_r2"} & set(self.names):
            s["Q"] = span_basis(X)
        if "svcca" in self.names:
            s["P"] = principal_basis(X)
        return s

    def null(self, sx, sy, perms):
        names, out, n = set(self.names), {}, sx["n"]
        if names & {"linear_cka", "linear_cka_debiased", "procrustes"}:
            C = torch.einsum("nr,bns->brs", sx["F"], sy["F"][perms])
            xy = (C * C).sum((1, 2))
            if "linear_cka" in names:
                out["linear_cka"] = _ratio(xy, sx["xx"] * sy["xx"])
            if "linear_cka_debiased" in names:
                dot = sy["r"][perms] @ sx["r"]
                out["linear_cka_debiased"] = _ratio(debiased_hsic(xy, dot, None, sx["tot"], sy["tot"], n),
                                                    sx["xxd"] * sy["xxd"])
            if "procrustes" in names:
                nuc = torch.linalg.svdvals(C).sum(-1)
                out["procrustes"] = (nuc / (sx["tot"] * sy["tot"]).sqrt()).clamp(0.0, 1.0)
        for key, basis in (("cca", "Q"), ("svcca", "P")):
            if key in names or (key == "cca" and "cca_r2" in names):
                rho = torch.linalg.svdvals(torch.einsum("nr,bns->brs", sx[basis], sy[basis][perms])).clamp(0, 1)
                if key in names:
                    out[key] = rho.mean(-1)
                if key == "cca" and "cca_r2" in names:
                    out["cca_r2"] = (rho * rho).mean(-1)
        return {k: _np(v) for k, v in out.items() if k in names}


class GramPlan(Plan):
    """Measures <Mx, My> / (|Mx| |My|) of (n, n) matrices: rbf_cka, rbf_cka_debiased (threshold 0.8) and rsa
    (correlation distance, Spearman). A bootstrap resample keeps the full sample's RBF bandwidth (the kernel is
    a fixed function of the inputs) and, for RSA, drops the pairs of copies of one input (distance 0 by
    construction) and ranks the rest with their multiplicities c_i c_j."""

    metrics = ("rbf_cka", "rbf_cka_debiased", "rsa")

    def prepare(self, X):
        X = matrix(X, "X", rescale=True)
        s = {"n": X.shape[0], "device": X.device, "M": {}, "sq": {}}
        if {"rbf_cka", "rbf_cka_debiased"} & set(self.names):
            s["K"] = rbf_gram(X)
        for name in self.names:
            if name == "rsa":
                s["d"] = rdm_upper(X)  # (m,) upper triangle, k > 0
                s["order"] = torch.argsort(s["d"])
                M = torch.zeros(X.shape[0], X.shape[0], dtype=X.dtype, device=X.device)
                iu = torch.triu_indices(X.shape[0], X.shape[0], 1, device=X.device)
                ranks = torch.empty_like(s["d"])
                ranks[s["order"]] = torch.arange(1, len(ranks) + 1, dtype=X.dtype, device=X.device)
                M[iu[0], iu[1]] = ranks - ranks.mean()
                s["M"][name], s["iu"] = M + M.T, iu
                s["sq"][name] = ((ranks - ranks.mean()) ** 2).sum() * 2
            else:
                s["M"][name] = self._center(s["K"], name)
                s["sq"][name] = (s["M"][name] ** 2).sum()
        return s

    @staticmethod
    def _center(K, name):
        return center_gram(K, unbiased=name == "rbf_cka_debiased")

    def null(self, sx, sy, perms):
        out = {}
        for name in self.names:
            Mx, My = sx["M"][name], sy["M"][name]
            # two index_selects per draw: much faster than one (B, n, n) advanced-index gather
            cross = torch.stack([(Mx * My[p][:, p]).sum() for p in perms])
            v = _ratio(cross, sx["sq"][name] * sy["sq"][name])
            out[name] = _np(v.clamp(-1.0, 1.0))
        return out

    def resample(self, state, X, counts):
        idx = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        b = {"n": len(idx), "device": state["device"], "M": {}, "sq": {}}
        for name in self.names:
            if name == "rsa":
                w = (counts[state["iu"][0]] * counts[state["iu"][1]]).to(state["d"].dtype)
                ws = w[state["order"]]
                ranks = torch.empty_like(ws)
                ranks[state["order"]] = torch.cumsum(ws, 0) - (ws - 1) / 2  # average rank of c_i c_j copies
                mean = (w * ranks).sum() / w.sum()
                b["M"][name], b["sq"][name] = (ranks - mean, w), (w * (ranks - mean) ** 2).sum()
            else:
                M = self._center(state["K"][idx][:, idx], name)
                b["M"][name], b["sq"][name] = M, (M * M).sum()
        return b

    def boot(self, bx, by):
        out = {}
        for name in self.names:
            if name == "rsa":
                (rx, w), (ry, _) = bx["M"][name], by["M"][name]
                cross = (w * rx * ry).sum()
            else:
                cross = (bx["M"][name] * by["M"][name]).sum()
            out[name] = float(_ratio(cross[None], bx["sq"][name] * by["sq"][name])[0])
        return out


class KnnPlan(Plan):
    """mutual_knn (k = 10, raw rows, as :func:`univ.similarity.mutual_knn`'s defaults)."""

    metrics = ("mutual_knn",)
    k = 10

    def prepare(self, X):
        X = matrix(X, "X", rescale=True)
        nn = knn_indices(X, self.k)
        adj = torch.zeros(X.shape[0], X.shape[0], dtype=torch.bool, device=X.device)
        adj.scatter_(1, nn, True)
        return {"n": X.shape[0], "device": X.device, "nn": nn, "adj": adj}

    def null(self, sx, sy, perms):
        # row i of Y[p] is Y[p_i]; its neighbours are the rows j with p_j in N_y(p_i), i.e. j = p^-1(N_y(p_i))
        inv = torch.argsort(perms, dim=1)
        nb = torch.gather(inv, 1, sy["nn"][perms].flatten(1)).view(perms.shape[0], sx["n"], self.k)
        rows = torch.arange(sx["n"], device=perms.device)[None, :, None]
        shared = sx["adj"][rows, nb].sum((1, 2))
        return {"mutual_knn": _np(shared.double() / (sx["n"] * self.k))}


class PwccaPlan(Plan):
    """pwcca (epsilon 1e-10): google/svcca's computation per draw from sides prepared once."""

    metrics = ("pwcca",)

    def prepare(self, X):
        side = pwcca_side(X)
        return {"n": X.shape[0], "device": X.device, "side": side}

    def null(self, sx, sy, perms):
        s = sy["side"]
        vals = []
        for p in perms.cpu():
            ps = s._replace(raw=s.raw[p], centered=s.centered[p])
            vals.append(pwcca_from_sides(sx["side"], ps))
        return {"pwcca": torch.tensor(vals, dtype=torch.float64).numpy()}


class NaivePlan(Plan):
    """Any ``fn(X, Y, device=None) -> float``: recomputed on every permutation and resample."""

    def __init__(self, names, fn, device=None):
        super().__init__(names)
        self.fn, self.dev = fn, device

    def prepare(self, X):
        return {"n": X.shape[0], "device": X.device, "X": X}

    def null(self, sx, sy, perms):
        vals = [self.fn(sx["X"], sy["X"][p], device=self.dev) for p in perms]
        return {self.names[0]: torch.tensor(vals, dtype=torch.float64).numpy()}


PLANS: dict[str, type[Plan]] = {m: cls for cls in (MomentPlan, GramPlan, KnnPlan, PwccaPlan) for m in cls.metrics}
"""metric name -> the plan class serving its built-in definition."""


def plans_for(metrics: dict, builtin: dict, device=None) -> list[Plan]:
    """One plan per family for ``metrics`` ({name: fn}); a name whose fn is not ``builtin[name]`` (a user's
    metric, or a built-in name re-registered) gets a :class:`NaivePlan`."""
    groups: dict[type, list[str]] = {}
    plans: list[Plan] = []
    for name, fn in metrics.items():
        if name in PLANS and builtin.get(name) is fn:
            groups.setdefault(PLANS[name], []).append(name)
        else:
            plans.append(NaivePlan([name], fn, device))
    return [cls(names) for cls, names in groups.items()] + plans

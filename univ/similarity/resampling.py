"""Cheap permutation nulls and bootstrap resamples for the measures of :data:`univ.similarity.METRICS`.

A permutation of B's rows leaves every per-layer statistic unchanged (centring, Grams, span and principal bases,
RDM ranks, neighbour lists are permutation-equivariant), so each layer is prepared once and each permutation
costs only the cross term:

    linear CKA, debiased CKA, Procrustes: C = Fx^T Fy[p]  (F = Xc, or U S of its SVD when d > n: same Gram)
    CCA / SVCCA:                          svdvals(Qx^T Qy[p])  (Q: span / principal basis of the layer)
    RBF CKA (+ debiased), RSA:            <Mx, My[p][:, p]>   (M: centred Gram, or centred RDM ranks)
    mutual kNN:                           shared neighbours of x_i and p^-1(N_y(p_i))
    PWCCA:                                its per-side statistics once, google's cross computation per draw
                                          (after the first min_draws, only the largest canonical correlation
                                          where it already settles that the draw cannot exceed the value)

A plan is one family: ``prepare(X) -> state`` once per layer, ``null(sx, sy, perms) -> {metric: (B,)}`` for
B permutations of Y's rows, ``resample(state, X, counts)`` for a bootstrap resample (``counts``: (n,) how often
each input is drawn) and ``boot(bx, by) -> {metric: float}``, or, where the resampled measure has a closed
form in the counts, ``boot_batch(sx, sy, counts) -> {metric: (B,)}`` for all resamples at once:

    linear CKA, debiased CKA:             a resample with counts c has the kernel S K S^T (S: (N, n) row
                                          selection), so every HSIC term is a quadratic form in c of K = Xc Xc^T
                                          and K o L (e.g. tr(K M L M), M = diag(c) - c c^T / N): one (B, n) x
                                          (n, n) product per cell instead of B recomputations

Other registered metrics use :class:`NaivePlan` (the metric recomputed per draw).
"""

from __future__ import annotations

import numpy as np
import torch

from ._core import center, debiased_hsic, matrix, sym_fro2
from .cca import lower_solve, pwcca_side
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


class LinearCkaPlan(Plan):
    """linear_cka and linear_cka_debiased: the null from the feature-space cross term, the bootstrap in closed
    form from the (n, n) Grams (see the module docstring)."""

    metrics = ("linear_cka", "linear_cka_debiased")

    def prepare(self, X):
        Xc = center(matrix(X, "X", rescale=True))
        r = (Xc * Xc).sum(1)
        tot = r.sum()
        s = {"n": X.shape[0], "device": Xc.device, "F": _svd_basis(Xc), "r": r, "tot": tot, "K": Xc @ Xc.T}
        xx = sym_fro2(s["F"])
        s["xx"], s["xxd"] = xx, debiased_hsic(xx, r, r, tot, tot, X.shape[0])
        return s

    def null(self, sx, sy, perms):
        out, n = {}, sx["n"]
        C = perm_cross(sx["F"], sy["F"], perms)  # (B, r, s): a batched GEMM, ~2x einsum's speed
        xy = (C * C).sum((1, 2))
        if "linear_cka" in self.names:
            out["linear_cka"] = _ratio(xy, sx["xx"] * sy["xx"])
        if "linear_cka_debiased" in self.names:
            dot = sy["r"][perms] @ sx["r"]
            out["linear_cka_debiased"] = _ratio(debiased_hsic(xy, dot, None, sx["tot"], sy["tot"], n),
                                                sx["xxd"] * sy["xxd"])
        return {k: _np(v) for k, v in out.items()}

    @staticmethod
    def _terms(sx, sy, c, cu, cv):
        """The quadratic forms of one kernel pair for counts c: (B, n) (cu = c K, cv = c L precomputed)."""
        H = sx["K"] * sy["K"]
        return {"t1": ((c @ H) * c).sum(1), "t2": (c * cu * cv).sum(1), "ku": (cu * c).sum(1),
                "lv": (cv * c).sum(1), "dxy": c @ (sx["r"] * sy["r"]), "dx": c @ sx["r"], "dy": c @ sy["r"],
                "t3": (c * (cu - sx["r"]) * (cv - sy["r"])).sum(1)}

    def _hsic(self, t, N, debiased):
        if not debiased:  # tr(K M L M), M = diag(c) - c c^T / N
            return t["t1"] - 2 * t["t2"] / N + t["ku"] * t["lv"] / (N * N)
        # Song et al.'s unbiased HSIC on the N resampled rows (K~: K with its diagonal zeroed)
        kl = t["t1"] - t["dxy"]
        k1, l1 = t["ku"] - t["dx"], t["lv"] - t["dy"]
        return (kl + k1 * l1 / ((N - 1) * (N - 2)) - 2 / (N - 2) * t["t3"]) / (N * (N - 3))

    def _layer_terms(self, s, counts):
        """(c, c K, the layer's own quadratic forms) for ``counts``, computed once per layer: a grid meets each
        layer in many cells with the same resamples (kept on the layer's prepared state, keyed by ``counts``)."""
        memo = s.get("boot")
        if memo is None or memo[0] is not counts:
            c = counts.to(s["K"].dtype)
            cu = c @ s["K"]
            memo = s["boot"] = (counts, c, cu, self._terms(s, s, c, cu, cu))
        return memo[1:]

    def boot_batch(self, sx, sy, counts):
        c, cu, xx = self._layer_terms(sx, counts)
        _, cv, yy = self._layer_terms(sy, counts)
        N = c.sum(1)
        xy = self._terms(sx, sy, c, cu, cv)
        out = {}
        for name, deb in (("linear_cka", False), ("linear_cka_debiased", True)):
            if name in self.names:
                hx, hy = self._hsic(xx, N, deb), self._hsic(yy, N, deb)
                out[name] = _np(_ratio(self._hsic(xy, N, deb), torch.where((hx > 0) & (hy > 0), hx * hy, -1.0)))
        return out


class SvccaPlan(Plan):
    """svcca (variance kept 0.99): the null from the principal bases prepared once; the bootstrap in chunks
    of resamples at once (:meth:`boot_prepare` per layer, :meth:`boot_pair` per cell). A resample with counts
    c is the weighted data: weighted mean, scatter Xc^T diag(c) Xc (its eigendecomposition: the resample's
    principal directions, the same variance and rank cuts as :func:`univ.similarity.svcca` on N = sum(c)
    rows) and whitened weighted scores Z = diag(sqrt(c)) Xc W, so that Z_x^T Z_y is the resample's whitened
    cross-covariance and its singular values its canonical correlations."""

    metrics = ("svcca",)
    variance_kept = 0.99

    def prepare(self, X):
        from .cca import principal_basis

        X64 = matrix(X, "X", rescale=True)
        return {"n": X.shape[0], "device": X64.device, "P": principal_basis(X), "X": X64}

    def null(self, sx, sy, perms):
        rho = torch.linalg.svdvals(perm_cross(sx["P"], sy["P"], perms)).clamp(0, 1)
        return {"svcca": _np(rho.mean(-1))}

    def boot_prepare(self, state, X, counts):
        X = state["X"]
        n, d = X.shape
        c = counts.to(X.dtype)  # (b, n)
        N = c.sum(1)
        if d > n:  # the resample's PCA through its (N, N) Gram: per resample (rare for layer activations)
            return self._boot_prepare_slow(X, counts)
        mu = (c @ X) / N[:, None]
        Xs = (X[None] - mu[:, None]).mul_(c.sqrt()[:, :, None])  # (b, n, d): centred, weighted rows
        C = Xs.transpose(1, 2) @ Xs  # (b, d, d) weighted scatter
        lam, V = torch.linalg.eigh(C)
        lam, V = lam.flip(-1).clamp_min(0.0), V.flip(-1)
        rank = (lam > lam[:, :1] * torch.clamp(N, min=d)[:, None] * torch.finfo(lam.dtype).eps).sum(1)
        frac = torch.cumsum(lam, -1) / lam.sum(-1, keepdim=True)
        k = torch.minimum((frac < self.variance_kept - 1e-12).sum(-1) + 1, rank).clamp_min(1)
        keep = torch.arange(d, device=X.device)[None] < k[:, None]  # (b, d)
        W = torch.where(keep[:, None, :], V / lam.clamp_min(1e-300).sqrt()[:, None, :], torch.zeros_like(V))
        kmax = int(k.max())
        return {"Z": Xs @ W[:, :, :kmax], "k": k}

    def _boot_prepare_slow(self, X, counts):
        from .cca import principal_basis

        zs, ks = [], []
        for c in counts:
            idx = torch.repeat_interleave(torch.arange(len(c), device=X.device), c)
            P = principal_basis(X[idx])  # (N, k): rows of copies are equal; back to the n inputs, weighted
            first = torch.zeros(len(c), dtype=torch.long, device=X.device)
            first[idx.flip(0)] = torch.arange(len(idx) - 1, -1, -1, device=X.device)
            zs.append(P[first] * c.to(P.dtype).sqrt()[:, None])
            ks.append(P.shape[1])
        kmax = max(ks)
        Z = torch.stack([torch.nn.functional.pad(z, (0, kmax - z.shape[1])) for z in zs])
        return {"Z": Z, "k": torch.tensor(ks, device=X.device)}

    def boot_pair(self, bx, by):
        rho = torch.linalg.svdvals(bx["Z"].transpose(1, 2) @ by["Z"]).clamp(0, 1)
        return {"svcca": _np(rho.sum(-1) / torch.minimum(bx["k"], by["k"]).to(rho.dtype))}


class MomentPlan(Plan):
    """procrustes, cca, cca_r2."""

    metrics = ("procrustes", "cca", "cca_r2")

    def prepare(self, X):
        from .cca import span_basis

        Xc = center(matrix(X, "X", rescale=True))
        s = {"n": X.shape[0], "device": Xc.device, "F": _svd_basis(Xc), "tot": (Xc * Xc).sum()}
        # the bases from X in its own dtype: their rank cut uses the precision the data were computed in
        if {"cca", "cca_r2"} & set(self.names):
            s["Q"] = span_basis(X)
        return s

    def null(self, sx, sy, perms):
        names, out = set(self.names), {}
        if "procrustes" in names:
            C = perm_cross(sx["F"], sy["F"], perms)
            nuc = torch.linalg.svdvals(C).sum(-1)
            out["procrustes"] = (nuc / (sx["tot"] * sy["tot"]).sqrt()).clamp(0.0, 1.0)
        if names & {"cca", "cca_r2"}:
            rho = torch.linalg.svdvals(perm_cross(sx["Q"], sy["Q"], perms)).clamp(0, 1)
            if "cca" in names:
                out["cca"] = rho.mean(-1)
            if "cca_r2" in names:
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
    bounded = True
    """:meth:`null` takes ``below``: PWCCA = sum_i w_i rho_i with weights summing to 1 is at most the largest
    canonical correlation, which the largest eigenvalue of arr arr^T gives (a fifth of the full SVD's cost)."""

    null_chunk = 50
    """Permutations per :meth:`null` call (its memory: 50 x n x the wider side)."""

    def prepare(self, X):
        from ..utils import one_blas_thread

        side = pwcca_side(X)
        with one_blas_thread():  # the whitened rows and the kept columns, for every pair this layer meets
            white = side.centered.numpy() @ side.inv_sqrt.numpy()
        return {"n": X.shape[0], "device": X.device, "side": side, "white": white,
                "kept": side.raw.numpy()[:, side.keep.numpy()]}

    def null(self, sx, sy, perms, below: dict | None = None):
        """``below``: {"pwcca": t} or None. With it, a draw whose largest canonical correlation is below t
        (so PWCCA is too) reports -inf instead of its value: it is not an exceedance of t, and the full
        computation (the singular vectors and google's projection weights) is skipped."""
        from ..utils import one_blas_thread

        a_is_x = int(sx["side"].keep.sum()) <= int(sy["side"].keep.sum())  # PWCCA weights by the narrower side
        sa, sb = (sx, sy) if a_is_x else (sy, sx)
        a = sa["side"]
        with one_blas_thread():
            vals = _pwcca_null(a.centered.numpy(), a.mean.numpy(), a.scatter.numpy(), sa["white"], sb["white"],
                               sa["kept"], perms.cpu().numpy(), permute_a=not a_is_x,
                               below=None if below is None else below["pwcca"])
        return {"pwcca": vals}


    # the bootstrap: chunks of resamples as weighted data (see PwccaPlan.boot_prepare)
    epsilon = 1e-10

    def boot_prepare(self, state, X, counts):
        """One layer's PWCCA side for each resample of ``counts``: (b, n) as weighted data: mean, scatter
        Z^T Z with Z = diag(sqrt(c)) (X - mean), google's small-variance cut and the regularised inverse square
        root, all as google's computation on the N = sum(c) duplicated rows. Resamples whose cut differs (a
        rarely active neuron can be constant in some) form separate groups of the chunk."""
        from ..utils import one_blas_thread

        Xn = state["side"].raw.numpy()
        c = counts.cpu().numpy().astype(np.float64)
        N = c.sum(1)
        base = {"X": state["side"].raw, "counts": counts, "groups": None}
        with one_blas_thread():
            m = (c @ Xn) / N[:, None]
            Z = Xn[None] - m[:, None]
            Z *= np.sqrt(c)[:, :, None]
            C = _bmm(np.swapaxes(Z, 1, 2), Z)
            scale = np.abs(C).max((1, 2)) / (N - 1)
            if (scale <= 0).any():
                return base  # a constant resample: the per-resample path says what is wrong
            keep = np.diagonal(C, axis1=1, axis2=2) / (N - 1)[:, None] / scale[:, None] >= self.epsilon
            masks, which = np.unique(keep, axis=0, return_inverse=True)
            groups = []
            for j, kp in enumerate(masks):
                pos = np.flatnonzero(which.ravel() == j)
                Cg, Zg, mg, Ng, sg = C[pos], Z[pos], m[pos], N[pos], scale[pos]
                if not kp.all():
                    Cg, Zg, mg = Cg[:, kp][:, :, kp], Zg[:, :, kp], mg[:, kp]
                S = Cg / (Ng - 1)[:, None, None] / sg[:, None, None] + self.epsilon * np.eye(Cg.shape[1])
                w, V = np.linalg.eigh(S)
                cutoff = 1e-15 * np.abs(w).max(-1, keepdims=True)
                inv = np.where(w > cutoff, 1.0 / np.sqrt(np.maximum(w, cutoff)), 0.0)
                inv_sqrt = _bmm(V * inv[:, None, :], np.swapaxes(V, 1, 2)) / np.sqrt(sg)[:, None, None]
                # W = Z S^-1/2: the whitened rows, so that a pair's google matrix is W_a^T W_b / (N - 1)
                groups.append((pos, {"W": _bmm(Zg, inv_sqrt), "m": mg, "C": Cg, "N": Ng, "k": int(kp.sum()),
                                     "Xk": Xn[:, kp]}))
        return {**base, "groups": groups}

    def boot_pair(self, bx, by):
        n_res = len(bx["counts"])
        if bx["groups"] is None or by["groups"] is None:
            return {"pwcca": self._slow(bx, by, range(n_res))}
        out = np.full(n_res, np.nan)
        for pa, ga in bx["groups"]:
            for pb, gb in by["groups"]:
                common = np.intersect1d(pa, pb)
                if len(common):
                    out[common] = self._pair(_take(ga, pa, common), _take(gb, pb, common), bx, by, common)
        return {"pwcca": out}

    def _pair(self, gx, gy, bx, by, which):
        from ..utils import one_blas_thread

        a, b = (gx, gy) if gx["k"] <= gy["k"] else (gy, gx)
        N = a["N"]

        def rows():  # the resamples' duplicated rows of the weighting side (for google's QR), by row count
            c = bx["counts"][which].cpu().numpy()
            out = []
            for size in np.unique(c.sum(1)):  # bootstrap resamples have n rows, jackknife ones fewer
                sel = np.flatnonzero(c.sum(1) == size)
                A = a["Xk"][np.stack([np.repeat(np.arange(c.shape[1]), ci) for ci in c[sel]])]
                out.append((sel, A - a["m"][sel][:, None, :], A))
            return out

        with one_blas_thread():
            arr = _bmm(np.swapaxes(a["W"], 1, 2), b["W"]) / (N - 1)[:, None, None]
            u, rho, _ = np.linalg.svd(arr, full_matrices=False)
            nmm = N[:, None, None] * a["m"][:, :, None] * a["m"][:, None, :]
            return _weighted_rho(u, np.abs(rho), a["C"], nmm, rows, a["m"])

    @staticmethod
    def _slow(bx, by, which):
        from .cca import pwcca

        vals = []
        for i in which:
            c = bx["counts"][i]
            idx = torch.repeat_interleave(torch.arange(len(c)), c.cpu())
            try:
                vals.append(pwcca(bx["X"][idx], by["X"][idx]))
            except ValueError:
                vals.append(float("nan"))
        return np.array(vals)


def _bmm(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A @ B for stacked numpy matrices through torch's batched GEMM on the same memory: ~1.3x numpy's stacked
    matmul at 32 x (449 x 48), and each product on one thread whatever torch's thread count (bitwise the same
    for 1 and 2 threads)."""
    return (torch.from_numpy(A) @ torch.from_numpy(B)).numpy()


def _take(g: dict, pos, common) -> dict:
    """The resamples ``common`` of one group (holding the resamples ``pos``) of a PWCCA bootstrap side."""
    if len(common) == len(pos):
        return g
    i = np.searchsorted(pos, common)
    return {k: (v if k in ("k", "Xk") else v[i]) for k, v in g.items()}  # k, Xk: the group's, not per resample


def perm_cross(F, G, perms):
    """(B, r, s) F^T G[p] for each permutation p of ``perms``: (B, n), F: (n, r), G: (n, s). Tensors: torch's
    batched GEMM; numpy arrays: one (r, n) x (n, B s) product, ~1.4x the speed of numpy's B small ones at
    r = 48 (torch's batched GEMM is ~2x faster than its one large product here)."""
    if isinstance(F, torch.Tensor):
        return torch.matmul(F.T, G[perms])
    n, s = G.shape
    B = len(perms)
    return (F.T @ G[perms.T].reshape(n, B * s)).reshape(F.shape[1], B, s).swapaxes(0, 1)


BOUND_MARGIN = 1e-9
"""A null draw is settled by its bound only when the largest canonical correlation is this far below the
threshold (the bound and the full computation come from different LAPACK calls, which round differently)."""


def _pwcca_null(Ac, mA, Caa, Wa, Wb, A, perms, permute_a: bool, below: float | None = None):
    """PWCCA of A against B with one side's rows permuted, for every permutation at once (stacked LAPACK
    calls; see :func:`univ.similarity.cca._pwcca`, which this follows step by step; A: the weighting side's
    uncentred kept columns; Wa, Wb: each side's whitened rows, centred kept columns times the inverse square
    root). A permutation leaves A's mean and scatter unchanged, so only the cross term and what follows it are
    per draw. ``below``: draws whose largest canonical correlation is below it get -inf (see
    :meth:`PwccaPlan.null`)."""
    import numpy as np

    n = Ac.shape[0]
    out = np.full(len(perms), -np.inf)
    nmm = n * np.outer(mA, mA)
    Wb = Wb / (n - 1)  # google's matrix is Wa^T Wb with one side's rows permuted
    for start in range(0, len(perms), 50):
        p = perms[start:start + 50]
        arr = np.swapaxes(perm_cross(Wb, Wa, p), 1, 2) if permute_a else perm_cross(Wa, Wb, p)
        todo = np.arange(len(p))
        if below is not None:
            t = torch.from_numpy(arr)  # the largest singular value from the k_a x k_a Gram: ~1.5x svdvals' speed
            top = torch.linalg.eigvalsh(t @ t.mT)[:, -1].clamp_min(0).sqrt().numpy()
            todo = np.flatnonzero(~(top < below - BOUND_MARGIN))  # NaN (a failed draw): computed in full
            if not len(todo):
                continue
            arr, p = arr[todo], p[todo]
        u, rho, _ = np.linalg.svd(arr, full_matrices=False)
        out[start + todo] = _weighted_rho(
            u, np.abs(rho), Caa, nmm, lambda p=p: [(slice(None), Ac[p], A[p]) if permute_a else (slice(None), Ac, A)],
            mA)
    return out


def _weighted_rho(u, rho, C, nmm, rows, m):
    """google's projection weights of stacked canonical directions u: (b, k, k) and their correlations rho:
    (b, k) -> (b,) PWCCA values. C: (b or 1, k, k) centred scatter of the weighting side, nmm = N m m^T;
    ``rows()`` -> [(which draws, Ac, A)]: its centred and uncentred rows ((N, k) or (draws, N, k)), needed only
    when a direction matrix is rank-deficient, where (as :func:`univ.similarity.cca._pwcca`) google's explicit
    QR decides."""
    ut = np.swapaxes(u, 1, 2)
    Cu = _bmm(C, u)  # C symmetric: u^T C = (C u)^T
    try:
        L = np.linalg.cholesky(_bmm(ut, Cu) + nmm)
        proj = lower_solve(L, np.swapaxes(Cu, 1, 2) + nmm)
    except np.linalg.LinAlgError:  # rank-deficient directions: the explicit QR of every draw, stacked
        proj = np.empty_like(ut)
        mm = np.broadcast_to(m, (len(u), m.shape[-1]))
        for sel, Ac, A in rows():
            P, _ = np.linalg.qr(np.swapaxes(_bmm(ut[sel], np.swapaxes(Ac, -1, -2)) + mm[sel][:, :, None], -1, -2))
            proj[sel] = _bmm(np.swapaxes(P, 1, 2), A)
    w = np.abs(proj).sum(2)
    w = w / w.sum(1, keepdims=True)
    return np.clip((w[:, :rho.shape[1]] * rho).sum(1), 0.0, 1.0)


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


PLANS: dict[str, type[Plan]] = {m: cls for cls in (LinearCkaPlan, SvccaPlan, MomentPlan, GramPlan, KnnPlan,
                                                   PwccaPlan) for m in cls.metrics}


def boot_cell(plan: Plan, sx, sy, X, Y, counts: torch.Tensor) -> dict:
    """{metric: (B,)} the plan's measures on every resample ``counts``: (B, n) of one cell (X, Y prepared as
    sx, sy), by whichever path the plan has (closed form, chunked batch, or one resample at a time)."""
    if hasattr(plan, "boot_batch"):
        return plan.boot_batch(sx, sy, counts)
    if hasattr(plan, "boot_prepare"):
        out = [plan.boot_pair(plan.boot_prepare(sx, X, c), plan.boot_prepare(sy, Y, c)) for c in counts.split(32)]
        return {m: np.concatenate([o[m] for o in out]) for m in plan.names}
    res = [plan.boot(plan.resample(sx, X, c), plan.resample(sy, Y, c)) for c in counts]
    return {m: np.array([r[m] for r in res]) for m in plan.names}
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

"""How much a network amplifies a perturbation depends on its direction: the gain ``||J r|| / ||r||``
of random, adversarial and worst-case directions, per layer and end to end.

An uncorrelatedness assumption (r independent of J, isotropic) predicts the typical gain
``||J||_F / sqrt(d)`` (the root mean square of ``||J r|| / ||r||`` over random r in d dimensions), far
below the worst case ``||J||_2``. Adversarial directions (PGD, DeepFool) are chosen by the gradient,
which lies in J's row space, so they sit near the top singular vectors and their gain approaches the
worst case: local smoothness arguments that assume random-like perturbations do not bound them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from .network import as_affine_net, pre_activations


def _layer_maps(net, x):
    """Per input, the local linear map of every layer, (n, n_out_k, n_in_k): D_k W_k for hidden layers
    (post-activation to post-activation) and W_L for the last."""
    zs = pre_activations(net, x)
    maps = [(z > 0).double()[:, :, None] * W for z, W in zip(zs, net.weights[:-1])]
    maps.append(net.weights[-1].expand(len(x), *net.weights[-1].shape))
    return maps


def direction_gains(model, x, directions: dict, n_random: int = 32, seed: int = 0, input_shape=None) -> pd.DataFrame:
    """Gains of input directions through each layer and end to end, at inputs ``x: (n, ...)``.

    directions: {name: r (n, ...)} perturbations at the inputs (e.g. x_adv - x of PGD and DeepFool);
    "random" (``n_random`` Gaussian directions per input) and "worst" (the top right singular vector of
    the end-to-end Jacobian) are added. A direction is pushed through the local linear maps (J_k r of
    each layer in turn); a layer's gain is ``||out|| / ||in||`` of what reaches it. Each layer also gets
    the gain of a fresh random direction in its own input space ("random (fresh)"), its Frobenius
    estimate ``||J_k||_F / sqrt(d_k)`` and its spectral norm.

    Returns a tidy DataFrame: layer, direction, gain_mean, gain_rms (root mean square, what the
    Frobenius estimate predicts for random directions), gain_sem, gain_median, frobenius_estimate,
    spectral_norm, cos_top (mean |cos| between the input direction and the top right singular vector
    of the end-to-end Jacobian; end-to-end rows only), row_space_frac (mean fraction of the
    direction's energy in the Jacobian's row space; end-to-end rows only), n.
    """
    net = as_affine_net(model, input_shape)
    x = torch.as_tensor(x).double().reshape(-1, net.n_in)
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    maps = _layer_maps(net, x)
    J = maps[0]
    for M in maps[1:]:
        J = M @ J
    U, S, Vh = torch.linalg.svd(J, full_matrices=False)  # (n, m, m), (n, m), (n, m, d)
    rank = (S > S[:, :1] * 1e-10).sum(1)
    dirs = {k: torch.as_tensor(v).double().reshape(n, -1) for k, v in directions.items()}
    for k, v in dirs.items():
        if v.shape != (n, net.n_in):
            raise ValueError(f"directions: {k!r} must hold one perturbation per input, shape ({n}, ...), got "
                             f"{tuple(v.shape)}")
    dirs["random"] = torch.randn(n * n_random, net.n_in, generator=g, dtype=torch.float64)
    dirs["worst"] = Vh[:, 0]
    names = [f"layer {i + 1} ({nm})" for i, nm in enumerate(net.names)]
    rows = []

    def stats(v):
        v = v[torch.isfinite(v)]
        sem = float(v.std() / np.sqrt(len(v))) if len(v) > 1 else 0.0
        return {"gain_mean": float(v.mean()), "gain_rms": float(v.pow(2).mean().sqrt()), "gain_sem": sem,
                "gain_median": float(v.median()), "n": len(v)}

    fro = [(M.norm(dim=(1, 2)) / np.sqrt(M.shape[2])).mean().item() for M in maps] + \
          [(J.norm(dim=(1, 2)) / np.sqrt(net.n_in)).mean().item()]
    spec = [torch.linalg.matrix_norm(M, 2).mean().item() for M in maps] + [S[:, 0].mean().item()]
    for dname, r in dirs.items():
        rep = len(r) // n
        Ms = [M.repeat_interleave(rep, 0) for M in maps]
        d = r
        for i, M in enumerate(Ms):
            out = (M @ d[:, :, None])[:, :, 0]
            gain = out.norm(dim=1) / d.norm(dim=1)
            gain[d.norm(dim=1) == 0] = float("nan")
            rows.append({"layer": names[i], "direction": dname, **stats(gain), "frobenius_estimate": fro[i],
                         "spectral_norm": spec[i]})
            d = out
        rn = r / r.norm(dim=1, keepdim=True).clamp_min(1e-30)
        V = Vh.repeat_interleave(rep, 0)
        proj = (V @ rn[:, :, None])[:, :, 0]  # (n, m) coordinates in the top right singular vectors
        mask = torch.arange(proj.shape[1])[None] < rank.repeat_interleave(rep)[:, None]
        e2e = (J.repeat_interleave(rep, 0) @ r[:, :, None])[:, :, 0].norm(dim=1) / r.norm(dim=1)
        rows.append({"layer": "end to end", "direction": dname, **stats(e2e), "frobenius_estimate": fro[-1],
                     "spectral_norm": spec[-1], "cos_top": float(proj[:, 0].abs().mean()),
                     "row_space_frac": float(((proj * mask) ** 2).sum(1).mean())})
    for i, M in enumerate(maps):  # a fresh isotropic direction in each layer's own input space
        r = torch.randn(n * n_random, M.shape[2], generator=g, dtype=torch.float64)
        out = (M.repeat_interleave(n_random, 0) @ r[:, :, None])[:, :, 0]
        rows.append({"layer": names[i], "direction": "random (fresh)", **stats(out.norm(dim=1) / r.norm(dim=1)),
                     "frobenius_estimate": fro[i], "spectral_norm": spec[i]})
    df = pd.DataFrame(rows)
    df["gain_over_spectral"] = df["gain_mean"] / df["spectral_norm"]
    df["gain_over_frobenius"] = df["gain_mean"] / df["frobenius_estimate"]
    return df

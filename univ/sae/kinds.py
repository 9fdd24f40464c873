"""The built-in SAE kinds: ReLU-L1, TopK, BatchTopK and JumpReLU, each one class and one registry line."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_positive, check_real
from ._sparse import SparseDecode, SparseEncode
from .model import SAE, SAE_KINDS, StepOutput


def auxk_loss(sae: SAE, x_c: Tensor, pre: Tensor, residual: Tensor, dead: Tensor | None, aux_k: int,
              coef: float) -> Tensor:
    """AuxK (Gao et al. 2024): the top aux_k dead latents predict the residual x - x_hat.

    x_c: (n, d_in) centred inputs (xn - b_dec); pre: (n, d_sae) pre-activations (their gradient is
    taken sparsely, through x_c). Normalised by the residual's variance; scaled down while fewer than
    aux_k latents are dead.
    """
    n_dead = 0 if dead is None else int(dead.sum())
    if n_dead == 0 or coef == 0:
        return pre.new_zeros(())
    k = min(aux_k, n_dead)
    with torch.no_grad():
        masked = torch.where(dead, pre, torch.full_like(pre, -math.inf))
        sel, idx = masked.topk(k, dim=-1, sorted=False)
    vals = F.relu(SparseEncode.apply(x_c, sae.W_enc, sae.b_enc, idx, sel))
    e_hat = SparseDecode.apply(vals, idx, sae.W_dec)
    e = residual.detach()
    # a one-row batch (a stream's last) has no variance: normalise by its energy instead
    total = (e - e.mean(0)) if len(e) > 1 else e
    return coef * min(n_dead / aux_k, 1.0) * (e_hat - e).pow(2).sum() / total.pow(2).sum().clamp_min(1e-12)


def _check_k(k, d_sae: int) -> int:
    return check_int(k, "k", 1, d_sae, why=" (d_sae)")


def _aux_k(aux_k, d_in: int, d_sae: int) -> int:
    """AuxK's latent budget: the given one (at most d_sae), or d_in // 2 by default."""
    if aux_k is None:
        return max(1, min(d_sae, d_in // 2))
    return min(d_sae, check_int(aux_k, "aux_k", low=1))


@SAE_KINDS.register("relu")
class ReluSAE(SAE):
    """ReLU SAE with an L1 penalty on codes weighted by decoder row norms (Anthropic, April 2024).

    l1_coefficient: weight of mean_rows(sum_i |f_i| * ||W_dec_i||) / sqrt(d_in) against the MSE
    (both in the normalised space; ``fit`` warms it up from 0).
    """

    architecture, has_sparsity_penalty = "standard", True

    def __init__(self, d_in: int, d_sae: int, l1_coefficient: float = 0.1, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        check_positive(l1_coefficient, "l1_coefficient", strict=False)
        self.l1_coefficient = float(l1_coefficient)

    def activate(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        codes = F.relu(self.pre_activations(xn))
        x_hat = codes @ self.W_dec + self.b_dec
        l1 = (codes * self.W_dec.norm(dim=1)).sum(-1).mean() / math.sqrt(self.d_in)
        losses = {"mse": self.reconstruction_loss(x_hat, xn), "l1": self.l1_coefficient * sparsity_scale * l1}
        return self.step_output(x_hat, codes, losses, want_codes)


@SAE_KINDS.register("topk")
class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024): keep the k largest ReLU pre-activations per row; AuxK for dead latents.

    aux_k: latents the AuxK loss may use (default d_in // 2); aux_coefficient: its weight (1/32).
    Training takes gradients through the k active latents only (sparse products, see ``_sparse``).
    """

    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, k: int = 32, *, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        self.k = _check_k(k, self.d_sae)
        self.aux_k = _aux_k(aux_k, self.d_in, self.d_sae)
        check_positive(aux_coefficient, "aux_coefficient", strict=False)
        self.aux_coefficient = float(aux_coefficient)

    def saelens_cfg(self) -> dict:
        return {"k": self.k}

    def activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        x_c = xn - self.b_dec
        with torch.no_grad():  # dense forward; the backward only touches the k selected latents per row
            pre = x_c @ self.W_enc + self.b_enc  # (n, d_sae)
            sel, idx = pre.topk(self.k, dim=-1, sorted=False)  # (n, k) each
        vals = F.relu(SparseEncode.apply(x_c, self.W_enc, self.b_enc, idx, sel))
        x_hat = SparseDecode.apply(vals, idx, self.W_dec) + self.b_dec
        losses = {"mse": self.reconstruction_loss(x_hat, xn)}
        losses["auxk"] = auxk_loss(self, x_c, pre, xn - x_hat, dead, self.aux_k, self.aux_coefficient)
        on = vals.detach() > 0
        fired = torch.zeros(self.d_sae, device=xn.device).index_add_(0, idx.flatten(), on.flatten().float()) > 0
        codes = None
        if want_codes:
            codes = torch.zeros_like(pre).scatter(-1, idx, vals)
        return StepOutput(x_hat, losses, fired, on.sum(-1).float().mean(), codes)


@SAE_KINDS.register("batchtopk")
class BatchTopKSAE(SAE):
    """BatchTopK SAE (Bussmann et al. 2024): keep the k * n largest activations over a batch of n rows.

    At inference a latent fires when its pre-activation exceeds ``threshold``, a running average (updated
    during training) of the smallest activation kept per batch; it is a buffer, saved and restored.
    """

    architecture = "batchtopk"

    def __init__(self, d_in: int, d_sae: int, k: int = 32, *, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, threshold_beta: float = 0.99, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        self.k = _check_k(k, self.d_sae)
        self.aux_k = _aux_k(aux_k, self.d_in, self.d_sae)
        check_positive(aux_coefficient, "aux_coefficient", strict=False)
        self.aux_coefficient = float(aux_coefficient)
        self.threshold_beta = check_real(threshold_beta, "threshold_beta", 0.0, 1.0)
        self.register_buffer("threshold", torch.full((), -1.0, dtype=dtype))  # < 0: not yet estimated

    def saelens_cfg(self) -> dict:
        return {"k": self.k}

    def export_tensors(self) -> dict[str, Tensor]:
        return {**super().export_tensors(), "threshold": self.threshold.reshape(1)}

    @torch.no_grad()
    def import_tensors(self, tensors) -> None:
        super().import_tensors(tensors)
        self.threshold.copy_(tensors["threshold"].reshape(()))

    def activate(self, pre: Tensor) -> Tensor:
        if self.threshold < 0:  # never trained: fall back to per-row TopK
            vals, idx = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))
        return pre * (pre > self.threshold.clamp_min(0))

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        pre = self.pre_activations(xn)
        acts = F.relu(pre)
        flat = acts.flatten()
        vals, idx = flat.topk(min(self.k * len(xn), flat.numel()), sorted=False)
        codes = torch.zeros_like(flat).scatter(0, idx, vals).view_as(acts)
        if self.training:
            with torch.no_grad():
                pos = vals[vals > 0]
                if len(pos):
                    m = pos.min()
                    b = self.threshold_beta
                    self.threshold.copy_(m if self.threshold < 0 else b * self.threshold + (1 - b) * m)
        x_hat = codes @ self.W_dec + self.b_dec
        losses = {"mse": self.reconstruction_loss(x_hat, xn)}
        losses["auxk"] = auxk_loss(self, xn - self.b_dec, pre.detach(), xn - x_hat, dead, self.aux_k,
                                   self.aux_coefficient)
        return self.step_output(x_hat, codes, losses, want_codes)


class _JumpReLU(torch.autograd.Function):
    """z = pre * H(pre - theta); d/dtheta by a rectangle-kernel straight-through estimator."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        g_pre = grad * (pre > theta)
        kernel = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        g_theta = (-theta * kernel * grad).sum(0)
        return g_pre, g_theta, None


class _Step(torch.autograd.Function):
    """H(pre - theta); d/dtheta = -kernel / eps (straight-through), no gradient to pre."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        return None, (-kernel * grad).sum(0), None


@SAE_KINDS.register("jumprelu")
class JumpReluSAE(SAE):
    """JumpReLU SAE (Rajamanoharan et al. 2024): per-latent thresholds learned through a straight-through
    estimator with bandwidth ``bandwidth``; an L0 penalty ``l0_coefficient * mean L0 / sqrt(d_in)``.

    The threshold is stored as ``log_threshold`` (a parameter) and saved as ``threshold`` (SAELens).
    """

    architecture, has_sparsity_penalty = "jumprelu", True

    def __init__(self, d_in: int, d_sae: int, l0_coefficient: float = 0.1, *, bandwidth: float = 0.05,
                 threshold_init: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        check_positive(l0_coefficient, "l0_coefficient", strict=False)
        check_positive(bandwidth, "bandwidth")
        check_positive(threshold_init, "threshold_init")
        self.l0_coefficient, self.bandwidth = float(l0_coefficient), float(bandwidth)
        self.threshold_init = float(threshold_init)
        self.log_threshold = nn.Parameter(torch.full((self.d_sae,), math.log(threshold_init), dtype=dtype))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def export_tensors(self) -> dict[str, Tensor]:
        # ``threshold`` is for SAELens; univ reloads from log_threshold, which is exact
        return {**super().export_tensors(), "log_threshold": self.log_threshold, "threshold": self.threshold}

    @torch.no_grad()
    def import_tensors(self, tensors) -> None:
        super().import_tensors(tensors)
        self.log_threshold.copy_(tensors["log_threshold"])

    def activate(self, pre: Tensor) -> Tensor:
        pre = F.relu(pre)
        return pre * (pre > self.threshold)

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        pre = F.relu(self.pre_activations(xn))
        theta = self.threshold
        codes = _JumpReLU.apply(pre, theta, self.bandwidth)
        x_hat = codes @ self.W_dec + self.b_dec
        l0 = _Step.apply(pre, theta, self.bandwidth).sum(-1).mean()
        losses = {"mse": self.reconstruction_loss(x_hat, xn),
                  "l0": self.l0_coefficient * sparsity_scale * l0 / math.sqrt(self.d_in)}
        return self.step_output(x_hat, codes, losses, want_codes)

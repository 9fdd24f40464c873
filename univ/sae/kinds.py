"""The built-in SAE kinds: ReLU-L1, TopK, BatchTopK, JumpReLU and Gated, each one class and one registry line.

Each also says how it maps onto SAELens (``architecture``, ``saelens_cfg``, ``saelens_tensors``,
``import_saelens``): ReLU is SAELens's "standard", TopK "topk", JumpReLU and Gated their namesakes; a
trained BatchTopK is written as SAELens writes its own, a "jumprelu" with its threshold in every latent.
"""

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
        return {**super().saelens_cfg(), "k": self.k, "rescale_acts_by_decoder_norm": False}

    @classmethod
    def saelens_hparams(cls, cfg) -> dict:
        return {"k": cfg.get("k")}

    @torch.no_grad()
    def import_saelens(self, tensors, cfg) -> None:
        super().import_saelens(tensors, cfg)
        if cfg.get("rescale_acts_by_decoder_norm", False):
            # SAELens ranks pre * ||W_dec_i|| and decodes codes / ||W_dec_i||: the same as these weights
            n = self.W_dec.double().norm(dim=1)
            self.W_enc.copy_(self.W_enc.double() * n)
            self.b_enc.copy_(self.b_enc.double() * n)
            self.W_dec.copy_(self.W_dec.double() / n[:, None])

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
    SAELens has no inference BatchTopK: a trained one is written as a "jumprelu" with that threshold in
    every latent (as SAELens writes its own), an untrained one (per-row TopK) as a "topk".
    """

    architecture = ""  # reads no SAELens architecture; writes jumprelu or topk (saelens_cfg)

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
        if self.threshold < 0:
            return {"architecture": "topk", "k": self.k, "rescale_acts_by_decoder_norm": False}
        return {"architecture": "jumprelu"}

    def saelens_tensors(self) -> dict[str, Tensor]:
        out = self.folded()
        if self.threshold >= 0:
            out["threshold"] = self.threshold.detach().expand(self.d_sae).clone()
        return out

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
        return {**super().export_tensors(), "log_threshold": self.log_threshold}

    @torch.no_grad()
    def import_tensors(self, tensors) -> None:
        super().import_tensors(tensors)
        self.log_threshold.copy_(tensors["log_threshold"])

    def saelens_tensors(self) -> dict[str, Tensor]:
        # thresholds compare pre-activations, which folding the input scale leaves unchanged
        return {**self.folded(), "threshold": self.threshold.detach()}

    @torch.no_grad()
    def import_saelens(self, tensors, cfg) -> None:
        super().import_saelens(tensors, cfg)
        # held as its log, so exp(log t) may miss t by an ulp (a pre-activation that close may differ);
        # a threshold <= 0 passes every positive pre-activation, as the smallest positive one does
        t = tensors["threshold"].double().clamp_min(torch.finfo(self.dtype).tiny)
        self.log_threshold.copy_(t.log())

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


@SAE_KINDS.register("gated")
class GatedSAE(SAE):
    """Gated SAE (Rajamanoharan et al. 2024): a gate says which latents fire, H(x_c @ W_enc + b_enc), and
    a magnitude path how strongly, relu(x_c @ (W_enc * exp(r_mag)) + b_mag), sharing W_enc (x_c = xn - b_dec).

    ``b_enc`` is the gate's bias (SAELens's ``b_gate``). Training: the MSE, plus ``l1_coefficient`` times the
    decoder-norm-weighted L1 of relu(gate pre-activations) / sqrt(d_in), plus the auxiliary reconstruction
    of the input from relu(gate pre-activations) through the frozen decoder (which trains the gate).
    """

    architecture, has_sparsity_penalty = "gated", True

    def __init__(self, d_in: int, d_sae: int, l1_coefficient: float = 0.1, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        check_positive(l1_coefficient, "l1_coefficient", strict=False)
        self.l1_coefficient = float(l1_coefficient)
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))

    def export_tensors(self) -> dict[str, Tensor]:
        return {**super().export_tensors(), "r_mag": self.r_mag, "b_mag": self.b_mag}

    @torch.no_grad()
    def import_tensors(self, tensors) -> None:
        super().import_tensors(tensors)
        self.r_mag.copy_(tensors["r_mag"])
        self.b_mag.copy_(tensors["b_mag"])

    def saelens_tensors(self) -> dict[str, Tensor]:
        f = self.folded()
        return {"W_enc": f["W_enc"], "b_gate": f["b_enc"], "r_mag": self.r_mag.detach(),
                "b_mag": self.b_mag.detach(), "W_dec": f["W_dec"], "b_dec": f["b_dec"]}

    @torch.no_grad()
    def import_saelens(self, tensors, cfg) -> None:
        super().import_saelens({**tensors, "b_enc": tensors["b_gate"]}, cfg)
        self.r_mag.copy_(tensors["r_mag"])
        self.b_mag.copy_(tensors["b_mag"])
        if not cfg.get("apply_b_dec_to_input", True):
            W_mag = tensors["W_enc"].double() * tensors["r_mag"].double().exp()
            self.b_mag.copy_(self.b_mag.double() + tensors["b_dec"].double() @ W_mag)

    def _paths(self, xn: Tensor) -> tuple[Tensor, Tensor]:
        """Gate and magnitude pre-activations, (n, d_sae) each."""
        x_c = xn - self.b_dec
        return x_c @ self.W_enc + self.b_enc, x_c @ (self.W_enc * self.r_mag.exp()) + self.b_mag

    def encode_normalised(self, xn: Tensor) -> Tensor:
        gate, mag = self._paths(xn)
        return (gate > 0).to(mag.dtype) * F.relu(mag)

    def activate(self, pre: Tensor) -> Tensor:
        # from the gate's pre-activations alone: the magnitude path is the same projection rescaled
        mag = (pre - self.b_enc) * self.r_mag.exp() + self.b_mag
        return (pre > 0).to(pre.dtype) * F.relu(mag)

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        gate, mag = self._paths(xn)
        codes = (gate > 0).to(mag.dtype) * F.relu(mag)
        x_hat = codes @ self.W_dec + self.b_dec
        gate_act = F.relu(gate)
        l1 = (gate_act * self.W_dec.norm(dim=1)).sum(-1).mean() / math.sqrt(self.d_in)
        via_gate = gate_act @ self.W_dec.detach() + self.b_dec.detach()
        losses = {"mse": self.reconstruction_loss(x_hat, xn), "l1": self.l1_coefficient * sparsity_scale * l1,
                  "aux": self.reconstruction_loss(via_gate, xn)}
        return self.step_output(x_hat, codes, losses, want_codes)

"""Sparse autoencoders: one small base class and one subclass per kind (ReLU-L1, TopK, BatchTopK, JumpReLU).

Conventions (SAELens's parameter layout, so weights load there too):
    W_enc: (d_in, d_sae), b_enc: (d_sae,), W_dec: (d_sae, d_in) with unit-norm rows, b_dec: (d_in,).
Inputs are multiplied by ``norm_scale`` (set by ``fit`` so that the mean input norm is sqrt(d_in)) before
encoding, and reconstructions divided by it after decoding, so ``encode``/``decode``/``forward`` all speak
the caller's units. Losses are computed in the normalised space, divided by d_in, so that their size does
not depend on the width or the scale of the layer: the default coefficients transfer across layers.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_matrix, check_positive
from ._sparse import SparseDecode, SparseEncode


class SAEOutput(NamedTuple):
    """What ``sae(x)`` returns.

    x_hat: (n, d_in) reconstruction in input units; codes: (n, d_sae) latent activations;
    loss: the scalar training objective, the sum of ``losses`` (named parts: "mse", "l1", "l0", "auxk").
    """

    x_hat: Tensor
    codes: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


class StepOutput(NamedTuple):
    """One training step's result, in normalised units (used by :func:`univ.sae.train.fit`)."""

    x_hat: Tensor  # (n, d_in)
    losses: dict[str, Tensor]
    fired: Tensor  # (d_sae,) bool: latents active on at least one row
    l0: Tensor  # scalar: mean number of active latents per row
    codes: Tensor | None  # (n, d_sae) when asked for


class SAE(nn.Module, ABC):
    """Base class: parameters, normalisation, ``encode``/``decode``/``forward``, and ``fit``.

    Subclasses set ``kind`` (the registry key), ``architecture`` (SAELens's name) and implement
    ``_activate`` (inference codes from pre-activations) and ``_step`` (the training loss).
    """

    kind: str = ""
    architecture: str = ""

    def __init__(self, d_in: int, d_sae: int, *, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        for name, v in (("d_in", d_in), ("d_sae", d_sae)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: must be a positive int, got {v!r}")
        self.d_in, self.d_sae, self.seed = d_in, d_sae, seed
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g, dtype=torch.float64)
        W_dec = (W_dec / W_dec.norm(dim=1, keepdim=True)).to(dtype)
        self.W_dec = nn.Parameter(W_dec)  # (d_sae, d_in)
        self.W_enc = nn.Parameter(W_dec.T.clone())  # (d_in, d_sae): the decoder's transpose at init
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.register_buffer("norm_scale", torch.ones((), dtype=dtype))

    # ---- hyperparameters (saved in cfg.json; every subclass lists its own) ----
    def hparams(self) -> dict:
        """The constructor arguments that define this SAE (what ``save`` writes to cfg.json)."""
        return {"d_in": self.d_in, "d_sae": self.d_sae, "seed": self.seed}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items())

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    # ---- the maps ----
    def _check_input(self, x, name: str = "x") -> Tensor:
        t = as_matrix(x, name, min_rows=1, dtype=self.dtype, device=self.device)
        if t.shape[1] != self.d_in:
            raise ValueError(f"{name}: expected {self.d_in} features (the SAE's d_in), got {t.shape[1]}")
        return t

    def _pre(self, xn: Tensor) -> Tensor:
        return (xn - self.b_dec) @ self.W_enc + self.b_enc  # (n, d_sae)

    @abstractmethod
    def _activate(self, pre: Tensor) -> Tensor:
        """Inference codes (n, d_sae) from pre-activations (n, d_sae)."""

    @abstractmethod
    def _step(self, xn: Tensor, dead: Tensor | None, sparsity_scale: float, want_codes: bool) -> StepOutput:
        """Training forward pass on normalised inputs xn: (n, d_in)."""

    def encode(self, x) -> Tensor:
        """Codes (n, d_sae) of activations x: (n, d_in) (numpy or torch, any float dtype)."""
        x = self._check_input(x)
        return self._activate(self._pre(x * self.norm_scale))

    def decode(self, codes) -> Tensor:
        """Reconstruction (n, d_in), in input units, of codes (n, d_sae)."""
        z = as_matrix(codes, "codes", min_rows=1, dtype=self.dtype, device=self.device)
        if z.shape[1] != self.d_sae:
            raise ValueError(f"codes: expected {self.d_sae} latents (the SAE's d_sae), got {z.shape[1]}")
        return (z @ self.W_dec + self.b_dec) / self.norm_scale

    def forward(self, x, dead: Tensor | None = None, sparsity_scale: float = 1.0) -> SAEOutput:
        """Reconstruct x: (n, d_in) and return the codes and the training losses (see SAEOutput).

        dead: optional (d_sae,) bool mask of dead latents (drives the AuxK loss of TopK kinds);
        sparsity_scale: multiplies the sparsity penalty (the warm-up factor during training).
        """
        x = self._check_input(x)
        out = self._step(x * self.norm_scale, dead, sparsity_scale, True)
        return SAEOutput(out.x_hat / self.norm_scale, out.codes, sum(out.losses.values()), out.losses)

    def fit(self, acts, **kwargs) -> SAE:
        """Train on activations (a (n, d_in) array, or an iterable of batches); returns self.

        See :func:`univ.sae.train.fit` for the options; the defaults train until the loss stops improving.
        """
        from .train import fit

        return fit(self, acts, **kwargs)

    # ---- shared pieces ----
    def _mse(self, x_hat: Tensor, xn: Tensor) -> Tensor:
        return (x_hat - xn).pow(2).sum(-1).mean() / self.d_in

    def _auxk(self, x_c: Tensor, pre: Tensor, residual: Tensor, dead: Tensor | None, aux_k: int,
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
        vals = F.relu(SparseEncode.apply(x_c, self.W_enc, self.b_enc, idx, sel))
        e_hat = SparseDecode.apply(vals, idx, self.W_dec)
        e = residual.detach()
        total = (e - e.mean(0)).pow(2).sum().clamp_min(1e-12)
        return coef * min(n_dead / aux_k, 1.0) * (e_hat - e).pow(2).sum() / total


class ReluSAE(SAE):
    """ReLU SAE with an L1 penalty on codes weighted by decoder row norms (Anthropic, April 2024).

    l1_coefficient: weight of mean_rows(sum_i |f_i| * ||W_dec_i||) / sqrt(d_in) against the MSE
    (both in the normalised space; ``fit`` warms it up from 0).
    """

    kind, architecture = "relu", "standard"

    def __init__(self, d_in: int, d_sae: int, l1_coefficient: float = 0.1, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        check_positive(l1_coefficient, "l1_coefficient", strict=False)
        self.l1_coefficient = float(l1_coefficient)

    def hparams(self) -> dict:
        return {**super().hparams(), "l1_coefficient": self.l1_coefficient}

    def _activate(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def _step(self, xn, dead, sparsity_scale, want_codes) -> StepOutput:
        codes = F.relu(self._pre(xn))
        x_hat = codes @ self.W_dec + self.b_dec
        l1 = (codes * self.W_dec.norm(dim=1)).sum(-1).mean() / math.sqrt(self.d_in)
        losses = {"mse": self._mse(x_hat, xn), "l1": self.l1_coefficient * sparsity_scale * l1}
        active = codes.detach() > 0
        return StepOutput(x_hat, losses, active.any(0), active.sum(-1).float().mean(),
                          codes if want_codes else None)


class TopKSAE(SAE):
    """TopK SAE (Gao et al. 2024): keep the k largest ReLU pre-activations per row; AuxK for dead latents.

    aux_k: latents the AuxK loss may use (default d_in // 2); aux_coefficient: its weight (1/32).
    Training takes gradients through the k active latents only (sparse products, see ``_sparse``).
    """

    kind, architecture = "topk", "topk"

    def __init__(self, d_in: int, d_sae: int, k: int = 32, *, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        if not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(f"k: must be an int with 1 <= k <= d_sae={d_sae}, got {k!r}")
        self.k = k
        self.aux_k = max(1, min(d_sae, aux_k if aux_k is not None else d_in // 2))
        check_positive(aux_coefficient, "aux_coefficient", strict=False)
        self.aux_coefficient = float(aux_coefficient)

    def hparams(self) -> dict:
        return {**super().hparams(), "k": self.k, "aux_k": self.aux_k, "aux_coefficient": self.aux_coefficient}

    def _activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def _step(self, xn, dead, sparsity_scale, want_codes) -> StepOutput:
        x_c = xn - self.b_dec
        with torch.no_grad():  # dense forward; the backward only touches the k selected latents per row
            pre = x_c @ self.W_enc + self.b_enc  # (n, d_sae)
            sel, idx = pre.topk(self.k, dim=-1, sorted=False)  # (n, k) each
        vals = F.relu(SparseEncode.apply(x_c, self.W_enc, self.b_enc, idx, sel))
        x_hat = SparseDecode.apply(vals, idx, self.W_dec) + self.b_dec
        losses = {"mse": self._mse(x_hat, xn)}
        losses["auxk"] = self._auxk(x_c, pre, xn - x_hat, dead, self.aux_k, self.aux_coefficient)
        on = vals.detach() > 0
        fired = torch.zeros(self.d_sae, device=xn.device).index_add_(0, idx.flatten(), on.flatten().float()) > 0
        codes = None
        if want_codes:
            codes = torch.zeros_like(pre).scatter(-1, idx, vals)
        return StepOutput(x_hat, losses, fired, on.sum(-1).float().mean(), codes)


class BatchTopKSAE(SAE):
    """BatchTopK SAE (Bussmann et al. 2024): keep the k * n largest activations over a batch of n rows.

    At inference a latent fires when its pre-activation exceeds ``threshold``, a running average (updated
    during training) of the smallest activation kept per batch; it is a buffer, saved and restored.
    """

    kind, architecture = "batchtopk", "batchtopk"

    def __init__(self, d_in: int, d_sae: int, k: int = 32, *, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, threshold_beta: float = 0.99, seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        if not isinstance(k, int) or not 1 <= k <= d_sae:
            raise ValueError(f"k: must be an int with 1 <= k <= d_sae={d_sae}, got {k!r}")
        self.k = k
        self.aux_k = max(1, min(d_sae, aux_k if aux_k is not None else d_in // 2))
        self.aux_coefficient = float(aux_coefficient)
        self.threshold_beta = float(threshold_beta)
        self.register_buffer("threshold", torch.full((), -1.0, dtype=dtype))  # < 0: not yet estimated

    def hparams(self) -> dict:
        return {**super().hparams(), "k": self.k, "aux_k": self.aux_k,
                "aux_coefficient": self.aux_coefficient, "threshold_beta": self.threshold_beta}

    def _activate(self, pre: Tensor) -> Tensor:
        if self.threshold < 0:  # never trained: fall back to per-row TopK
            vals, idx = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))
        return pre * (pre > self.threshold.clamp_min(0))

    def _step(self, xn, dead, sparsity_scale, want_codes) -> StepOutput:
        pre = self._pre(xn)
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
        losses = {"mse": self._mse(x_hat, xn)}
        losses["auxk"] = self._auxk(xn - self.b_dec, pre.detach(), xn - x_hat, dead, self.aux_k,
                                    self.aux_coefficient)
        active = codes.detach() > 0
        return StepOutput(x_hat, losses, active.any(0), active.sum(-1).float().mean(),
                          codes if want_codes else None)


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


class JumpReluSAE(SAE):
    """JumpReLU SAE (Rajamanoharan et al. 2024): per-latent thresholds learned through a straight-through
    estimator with bandwidth ``bandwidth``; an L0 penalty ``l0_coefficient * mean L0 / sqrt(d_in)``.

    The threshold is stored as ``log_threshold`` (a parameter) and saved as ``threshold`` (SAELens).
    """

    kind, architecture = "jumprelu", "jumprelu"

    def __init__(self, d_in: int, d_sae: int, l0_coefficient: float = 0.1, *, bandwidth: float = 0.05,
                 threshold_init: float = 0.1, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        check_positive(l0_coefficient, "l0_coefficient", strict=False)
        check_positive(bandwidth, "bandwidth")
        check_positive(threshold_init, "threshold_init")
        self.l0_coefficient, self.bandwidth = float(l0_coefficient), float(bandwidth)
        self.threshold_init = float(threshold_init)
        self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(threshold_init), dtype=dtype))

    def hparams(self) -> dict:
        return {**super().hparams(), "l0_coefficient": self.l0_coefficient, "bandwidth": self.bandwidth,
                "threshold_init": self.threshold_init}

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def _activate(self, pre: Tensor) -> Tensor:
        pre = F.relu(pre)
        return pre * (pre > self.threshold)

    def _step(self, xn, dead, sparsity_scale, want_codes) -> StepOutput:
        pre = F.relu(self._pre(xn))
        theta = self.threshold
        codes = _JumpReLU.apply(pre, theta, self.bandwidth)
        x_hat = codes @ self.W_dec + self.b_dec
        l0 = _Step.apply(pre, theta, self.bandwidth).sum(-1).mean()
        losses = {"mse": self._mse(x_hat, xn),
                  "l0": self.l0_coefficient * sparsity_scale * l0 / math.sqrt(self.d_in)}
        active = codes.detach() > 0
        return StepOutput(x_hat, losses, active.any(0), active.sum(-1).float().mean(),
                          codes if want_codes else None)


SAE_KINDS: dict[str, type[SAE]] = {
    "relu": ReluSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE, "jumprelu": JumpReluSAE,
}
"""Registry: kind name -> class. A new kind is one subclass and one line here."""

"""Universal SAEs (Thasarathan et al. 2025): one shared TopK code space, an encoder and a decoder per model.

    usae = univ.sae.UniversalSAE(d_ins=[d1, d2, d3], d_sae=1024, k=16).fit([x1, x2, x3])
    z = usae.encode(x2, model=1)          # codes from model 1 alone
    x0_hat, x1_hat, x2_hat = usae.decode(z)  # ... decoded into every model
    usae.cross_r2([x1, x2, x3])           # (N, N): R^2 of model j reconstructed from model i's code
    usae.firing_entropy([x1, x2, x3])     # per latent: how evenly it fires across the source models

Each training step encodes the batch from one model, drawn at random (seeded by the step count, a saved
buffer, so a resumed fit draws the same models), and decodes that code into every model; the loss is the
reconstruction error summed over models. Layout, normalisation and training: :mod:`univ.sae.multi`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import as_matrix, check_int, check_positive
from ._sparse import SparseDecode, SparseEncode
from .kinds import auxk_loss
from .model import StepOutput
from .multi import MultiModel, check_model_index, register_multi, topk_step_output


@register_multi
class UniversalSAE(MultiModel):
    """Universal SAE over N models. d_ins: the models' widths; d_sae: shared latents; k: active latents per
    row (at most d_sae); aux_k / aux_coefficient: AuxK (default budget D // 2, weight 1/32); seed."""

    joint_code = False  # each model has its own code of the shared space: no joint Latent Scaling test

    def __init__(self, d_ins, d_sae: int, k: int = 32, *, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_ins, d_sae, seed=seed, dtype=dtype)
        self.k = check_int(k, "k", 1, self.d_sae, why=" (d_sae)")
        self.aux_k = max(1, min(self.d_sae, self.d_in // 2)) if aux_k is None else \
            min(self.d_sae, check_int(aux_k, "aux_k", low=1))
        check_positive(aux_coefficient, "aux_coefficient", strict=False)
        self.aux_coefficient = float(aux_coefficient)
        # each model's encoder block starts at full norm (it reads alone, not summed with the others)
        with torch.no_grad():
            self.W_enc.mul_(math.sqrt(self.n_models))
        self.b_enc = torch.nn.Parameter(torch.zeros(self.n_models, self.d_sae, dtype=dtype))
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))

    @classmethod
    def all_kind_names(cls) -> tuple[str, ...]:
        return ("universal",)

    def kind_names(self) -> tuple[str, ...]:
        return ("universal",)

    def _source_model(self) -> int:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.steps_taken))
        return int(torch.randint(self.n_models, (), generator=g))

    def activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def _pre(self, xn_m: Tensor, m: int) -> Tensor:
        return (xn_m - self.split(self.b_dec)[m]) @ self.W_encs[m] + self.b_enc[m]

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        m = self._source_model()
        if self.training:
            self.steps_taken += 1
        x_c = self.split(xn)[m] - self.split(self.b_dec)[m]
        W_enc, b_enc = self.W_encs[m], self.b_enc[m]
        with torch.no_grad():
            pre = x_c @ W_enc + b_enc
            sel, idx = pre.topk(self.k, dim=-1, sorted=False)
        vals = F.relu(SparseEncode.apply(x_c, W_enc, b_enc, idx, sel))
        x_hat = SparseDecode.apply(vals, idx, self.W_dec) + self.b_dec  # every model from model m's code
        view = SimpleNamespace(W_enc=W_enc, b_enc=b_enc, W_dec=self.W_dec)
        losses = {"mse": self.reconstruction_loss(x_hat, xn),
                  "auxk": auxk_loss(view, x_c, pre, xn - x_hat, dead, self.aux_k, self.aux_coefficient)}
        return topk_step_output(x_hat, losses, vals, idx, pre, self.d_sae, want_codes)

    @torch.no_grad()
    def encode(self, x, model: int | None = None) -> Tensor:
        """Codes (n, d_sae) of model ``model``'s activations x: (n, d_ins[model]); with model=None, x is the
        list of all N models' activations and the codes are averaged over the models."""
        if model is None:
            joined = self.check_inputs(x)
            parts = self.split(joined * self.norm_scale)
            return sum(self.activate(self._pre(p, m)) for m, p in enumerate(parts)) / self.n_models
        m = check_model_index(model, self.n_models)
        t = as_matrix(x, f"x (model {m})", min_rows=1, dtype=self.dtype, device=self.device)
        if t.shape[1] != self.d_ins[m]:
            raise ValueError(f"x (model {m}): expected {self.d_ins[m]} features (d_ins[{m}]), got {t.shape[1]}")
        return self.activate(self._pre(t * self.split(self.norm_scale)[m], m))

    @torch.no_grad()
    def cross_r2(self, xs) -> Tensor:
        """(N, N) float64: R^2 of model j's activations reconstructed from model i's code (row i, column j),
        1 - SSE / total sum of squares around model j's mean, in input units."""
        parts = self.split(self.check_inputs(xs, min_rows=2))
        out = torch.empty(self.n_models, self.n_models, dtype=torch.float64)
        for i, x in enumerate(parts):
            recon = self.decode(self.encode(x, model=i))
            for j, (y, y_hat) in enumerate(zip(parts, recon)):
                y, y_hat = y.double(), y_hat.double()
                out[i, j] = 1 - (y - y_hat).pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-30)
        return out

    @torch.no_grad()
    def firing_entropy(self, xs) -> tuple[Tensor, Tensor]:
        """(entropy (d_sae,), rates (d_sae, N)): each latent's firing rate when encoding from each model, and
        the entropy of those rates normalised to a distribution over models, divided by log N (1: fires
        equally from every model, a universal concept; 0: from one model only; NaN: never fires)."""
        parts = self.split(self.check_inputs(xs))
        rates = torch.stack([(self.encode(x, model=m) > 0).double().mean(0) for m, x in enumerate(parts)], 1)
        p = rates / rates.sum(1, keepdim=True)
        ent = -(p * p.clamp_min(1e-300).log()).sum(1) / math.log(self.n_models)
        ent[rates.sum(1) == 0] = float("nan")
        return ent, rates

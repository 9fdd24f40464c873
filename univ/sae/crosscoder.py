"""Acausal crosscoders (Lindsey et al. 2024): one dictionary whose latents read from and write to N models'
activations on the same inputs.

    cc = univ.sae.Crosscoder(d_ins=[d1, d2, d3], d_sae=4096, kind="batchtopk", k=32).fit([x1, x2, x3])
    z = cc.encode([x1, x2, x3])          # (n, d_sae): every model's encoder block contributes
    x1_hat, x2_hat, x3_hat = cc.decode(z)
    cc.decoder_norms()                   # (d_sae, N): a latent's decoder norm in every model

Latent i's code is relu(sum_m (x_m - b_dec_m) @ W_enc_m + b_enc)_i (one matmul over the joined inputs) and
its output in model m is z_i * W_dec_m[i]. The kinds (registry :data:`CROSSCODER_KINDS`, one class and one
line each):

- ``batchtopk`` (Bussmann et al. 2024; the crosscoder of Minder et al. 2025): the k * n largest codes over
  a batch of n rows; at inference a code fires above a running threshold. Gradients are sparse products
  through the selected entries only (``_sparse``'s ragged products).
- ``topk`` (Gao et al. 2024): the k largest codes per row, sparse products, AuxK for dead latents.
- ``l1``: ReLU codes with Lindsey et al.'s penalty sum_i z_i * sum_m ||W_dec_m[i]||, which charges a latent
  once per model it writes to (the penalty behind Minder et al.'s Complete Shrinkage and Latent Decoupling).

Layout, normalisation and training are :mod:`univ.sae.multi`'s: the joined weights train in univ's SAE loop.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int, check_positive, check_real
from ..registry import Registry
from ._sparse import RaggedDecode, RaggedEncode, SparseDecode, SparseEncode, ragged_selection
from .kinds import auxk_loss
from .model import SAE, StepOutput
from .multi import MultiModel, check_model_index, register_multi, topk_step_output

CROSSCODER_KINDS = Registry("crosscoder kind")
"""Registry: kind name -> Crosscoder subclass (``Crosscoder(kind=name)`` builds one)."""


class CrosscoderOutput(NamedTuple):
    """What ``cc(xs)`` returns: x_hats (N tensors (n, d_ins[m]), input units), codes (n, d_sae), the loss
    and its named parts."""

    x_hats: list[Tensor]
    codes: Tensor
    loss: Tensor
    losses: dict[str, Tensor]


@register_multi
class Crosscoder(MultiModel):
    """Crosscoder over N models; ``Crosscoder(d_ins, d_sae, kind=...)`` returns the subclass of that kind.

    d_ins: the models' widths (N >= 2). d_sae: latents. kind: "batchtopk", "topk" or "l1".
    k: active latents per row (TopK kinds; mean per row for BatchTopK; at most d_sae).
    l1_coefficient: weight of the L1 kind's penalty (/ sqrt(D), warmed up by fit).
    aux_k, aux_coefficient: AuxK's latent budget (default D // 2) and weight (TopK kinds).
    threshold_beta: BatchTopK's running-threshold momentum. seed: initialisation.
    """

    kind: ClassVar[str] = ""
    uses_k: ClassVar[bool] = True
    joint_code = True  # one code reconstructs every model (what Latent Scaling tests)

    def __new__(cls, *args, **kwargs):
        if cls is Crosscoder:
            kind = kwargs.get("kind", args[2] if len(args) > 2 else "batchtopk")
            if not isinstance(kind, str):
                raise TypeError(f"kind: expected a crosscoder kind name, got {type(kind).__name__} {kind!r}")
            cls = CROSSCODER_KINDS[kind]
        return super().__new__(cls)

    def __init__(self, d_ins, d_sae: int, kind: str | None = None, k: int | None = 32, *,
                 l1_coefficient: float = 0.3, aux_k: int | None = None, aux_coefficient: float = 1 / 32,
                 threshold_beta: float = 0.99, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__(d_ins, d_sae, seed=seed, dtype=dtype)
        if kind is not None and kind != type(self).kind:
            raise ValueError(f"kind: {type(self).__name__} is the {type(self).kind!r} kind, got kind={kind!r}")
        self.kind = type(self).kind
        # the L1 kind has no k: it is not stored (None), so the kind's hyperparameters say what it uses
        self.k = None if k is None or not self.uses_k else check_int(k, "k", 1, self.d_sae, why=" (d_sae)")
        check_positive(l1_coefficient, "l1_coefficient", strict=False)
        self.l1_coefficient = float(l1_coefficient)
        self.aux_k = max(1, min(self.d_sae, self.d_in // 2)) if aux_k is None else \
            min(self.d_sae, check_int(aux_k, "aux_k", low=1))
        check_positive(aux_coefficient, "aux_coefficient", strict=False)
        self.aux_coefficient = float(aux_coefficient)
        self.threshold_beta = check_real(threshold_beta, "threshold_beta", 0.0, 1.0)
        self.b_enc = torch.nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self._init_state()

    @classmethod
    def all_kind_names(cls) -> tuple[str, ...]:
        return ("crosscoder", *(f"crosscoder-{k}" for k in CROSSCODER_KINDS))

    def kind_names(self) -> tuple[str, ...]:
        return ("crosscoder", f"crosscoder-{self.kind}")

    def _init_state(self) -> None:
        """Register a kind's extra buffers (saved and restored with the weights)."""

    def _need_k(self) -> int:
        if self.k is None:
            raise ValueError(f"k: the {self.kind!r} crosscoder needs k (active latents per row), got None")
        return self.k

    def pre_activations(self, xn: Tensor) -> Tensor:
        """Encoder pre-activations (n, d_sae) of joined normalised inputs xn: (n, D)."""
        return (xn - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Inference codes (n, d_sae) from pre-activations."""
        raise NotImplementedError

    @torch.no_grad()
    def calibrate_encoder(self, xn: Tensor, chunk: int = 512) -> float:
        """Scale the encoder (W_enc, b_enc) so that the codes of the normalised sample xn: (n, D) reconstruct it
        at the least-squares best scale; returns the factor. ``fit`` calls it after b_dec's initialisation.

        Why: the tied initialisation (W_enc = W_dec^T) selects the largest of d_sae random projections, whose
        values overshoot the part of x they reconstruct (a factor of about 0.63 at N = 3, d_in = 256,
        d_sae = 4096, k = 32), and with decoder rows held at unit norm only the encoder can undo that, at
        Adam's pace. Fitting the scale first cut the held-out FVU after 100 steps from 0.71 to 0.58 and after
        400 steps from 0.043 to 0.018 (benchmarks/crosscoder.md). The TopK selections do not change (codes
        scale linearly), so this only rescales. Codes are the kind's training codes (BatchTopK: over batches of
        ``chunk`` rows, fit's default batch). The L1 kind is left alone: its penalty sets the code scale."""
        if not self.uses_k:
            return 1.0
        num = den = 0.0
        for xb in torch.split(xn.to(self.dtype), chunk):
            r = self._training_codes(self.pre_activations(xb)) @ self.W_dec  # reconstruction of xb - b_dec
            num += float((r.double() * (xb - self.b_dec).double()).sum())
            den += float(r.double().pow(2).sum())
        alpha = num / den if den > 0 else 1.0
        if not math.isfinite(alpha) or alpha <= 0:
            return 1.0
        self.W_enc.mul_(alpha)
        self.b_enc.mul_(alpha)
        threshold = getattr(self, "threshold", None)  # a refit BatchTopK's running threshold is in code units
        if threshold is not None and threshold >= 0:
            threshold.mul_(alpha)
        return alpha

    def _training_codes(self, pre: Tensor) -> Tensor:
        """The codes (n, d_sae) training selects from pre-activations of a batch (inference codes by default)."""
        return self.activate(pre)

    def encode(self, xs) -> Tensor:
        """Codes (n, d_sae) of the N models' activations xs (a list of (n, d_ins[m]) arrays)."""
        x = self.check_inputs(xs)
        return self.activate(self.pre_activations(x * self.norm_scale))

    def forward(self, xs) -> CrosscoderOutput:
        x = self.check_inputs(xs)
        out = self.training_step(x * self.norm_scale, None, 1.0, True)
        x_hats = self.split(out.x_hat / self.norm_scale)
        return CrosscoderOutput(x_hats, out.codes, sum(out.losses.values()), out.losses)

    view_kind: ClassVar[str] = ""  # the univ SAE kind of a one-model view (model_sae)

    @torch.no_grad()
    def model_sae(self, m: int) -> SAE:
        """Model m's block as a univ SAE of the matching kind (l1: relu, topk: topk, batchtopk: batchtopk),
        which ``univ.sae.save`` writes in SAELens's layout (normalisation folded in): encoder block, b_enc,
        decoder block, model m's part of b_dec and its input scale. Its codes are the crosscoder's when the
        other models contribute nothing (their inputs at their decoder bias), i.e. what model m alone says."""
        from .model import SAE_KINDS

        m = check_model_index(m, self.n_models)
        cls = SAE_KINDS[self.view_kind]
        kw = {"l1_coefficient": self.l1_coefficient} if not self.uses_k else {"k": self.k}
        sae = cls(self.d_ins[m], self.d_sae, **kw, seed=self.seed, dtype=self.dtype)
        sae.W_enc.copy_(self.W_encs[m])
        sae.b_enc.copy_(self.b_enc)
        sae.W_dec.copy_(self.W_decs[m])
        sae.b_dec.copy_(self.split(self.b_dec)[m])
        sae.norm_scale.copy_(self.split(self.norm_scale)[m][0])
        if hasattr(self, "threshold"):
            sae.threshold.copy_(self.threshold)
        sae.metadata = {"model_name": self.metadata.get("model_names", [None] * self.n_models)[m]}
        return sae.eval()

    @torch.no_grad()
    def reconstruct(self, xs) -> list[Tensor]:
        """decode(encode(xs)): the N models' reconstructions in input units."""
        return self.decode(self.encode(xs))


@CROSSCODER_KINDS.register("l1")
class L1Crosscoder(Crosscoder):
    """ReLU crosscoder with Lindsey et al.'s decoder-norm-weighted L1 penalty (summed over models)."""

    kind, uses_k, view_kind = "l1", False, "relu"
    has_sparsity_penalty = True

    def activate(self, pre: Tensor) -> Tensor:
        return F.relu(pre)

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        codes = F.relu(self.pre_activations(xn))
        x_hat = codes @ self.W_dec + self.b_dec
        norm_sum = sum(b.norm(dim=1) for b in self.W_decs)  # (d_sae,): sum_m ||W_dec_m[i]||
        l1 = (codes * norm_sum).sum(-1).mean() / math.sqrt(self.d_in)
        losses = {"mse": self.reconstruction_loss(x_hat, xn), "l1": self.l1_coefficient * sparsity_scale * l1}
        return SAE.step_output(x_hat, codes, losses, want_codes)


@CROSSCODER_KINDS.register("topk")
class TopKCrosscoder(Crosscoder):
    """TopK crosscoder: the k largest codes per row; AuxK keeps latents alive."""

    kind, view_kind = "topk", "topk"

    def activate(self, pre: Tensor) -> Tensor:
        vals, idx = pre.topk(self._need_k(), dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        x_c = xn - self.b_dec
        with torch.no_grad():  # dense forward; the backward only touches the k selected latents per row
            pre = x_c @ self.W_enc + self.b_enc
            sel, idx = pre.topk(self._need_k(), dim=-1, sorted=False)
        vals = F.relu(SparseEncode.apply(x_c, self.W_enc, self.b_enc, idx, sel))
        x_hat = SparseDecode.apply(vals, idx, self.W_dec) + self.b_dec
        losses = {"mse": self.reconstruction_loss(x_hat, xn),
                  "auxk": auxk_loss(self, x_c, pre, xn - x_hat, dead, self.aux_k, self.aux_coefficient)}
        return topk_step_output(x_hat, losses, vals, idx, pre, self.d_sae, want_codes)


@CROSSCODER_KINDS.register("batchtopk")
class BatchTopKCrosscoder(Crosscoder):
    """BatchTopK crosscoder: the k * n largest codes over a batch of n rows; at inference a code fires when
    its pre-activation exceeds ``threshold``, the running mean of the smallest code kept per batch."""

    kind, view_kind = "batchtopk", "batchtopk"

    def _init_state(self) -> None:
        self.register_buffer("threshold", torch.full((), -1.0, dtype=self.dtype))  # < 0: not yet estimated

    def activate(self, pre: Tensor) -> Tensor:
        if self.threshold < 0:  # never trained: per-row TopK
            vals, idx = pre.topk(self._need_k(), dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, F.relu(vals))
        return pre * (pre > self.threshold.clamp_min(0))

    def _training_codes(self, pre: Tensor) -> Tensor:
        flat = pre.flatten()
        top, idx = flat.topk(min(self._need_k() * len(pre), flat.numel()), sorted=False)
        return torch.zeros_like(flat).scatter_(0, idx, F.relu(top)).view_as(pre)

    def training_step(self, xn, dead=None, sparsity_scale=1.0, want_codes=False) -> StepOutput:
        n = len(xn)
        x_c = xn - self.b_dec
        with torch.no_grad():
            pre = x_c @ self.W_enc + self.b_enc  # (n, d_sae)
            flat = pre.flatten()
            top, flat_idx = flat.topk(min(self._need_k() * n, flat.numel()), sorted=False)
            keep = top > 0
            flat_idx = flat_idx[keep]
            order, rows, cols, crow = ragged_selection(flat_idx, n, self.d_sae)
            selected = top[keep][order]
            if self.training and len(selected):
                m, b = selected.min(), self.threshold_beta
                self.threshold.copy_(m if self.threshold < 0 else b * self.threshold + (1 - b) * m)
        vals = RaggedEncode.apply(x_c, self.W_enc, self.b_enc, rows, cols, crow, selected)
        x_hat = RaggedDecode.apply(vals, rows, cols, crow, self.W_dec) + self.b_dec
        losses = {"mse": self.reconstruction_loss(x_hat, xn),
                  "auxk": auxk_loss(self, x_c, pre, xn - x_hat, dead, self.aux_k, self.aux_coefficient)}
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=xn.device)
        fired[cols] = True
        codes = None
        if want_codes:
            codes = torch.zeros(n, self.d_sae, dtype=vals.dtype, device=xn.device).index_put((rows, cols), vals)
        return StepOutput(x_hat, losses, fired, torch.tensor(len(cols) / n), codes)

"""SAE quality metrics: sparsity (L0, dead and dense fractions), reconstruction (MSE, FVU, explained
variance), recovery of a known dictionary (MMCS), and the SAE's reconstruction spliced into the model at its
layer: a classifier's accuracy (:func:`spliced_accuracy`) or a language model's next-token loss and KL
divergence (:func:`spliced_lm_metrics`, SAELens's "CE loss score").

FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the whole set (mean over columns, not per sample),
and explained variance = 1 - FVU: the pooled form, which several peers get wrong by averaging per-sample
ratios.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import as_labels, as_matrix, check_int, check_real, check_same_n
from ..activations import hooks, resolve
from ..batch import batch_len, batch_mask, batch_slice, check_batch
from ..models import as_logits, check_model, eval_mode, model_device, model_input, run_model
from .model import SAE


def l0(codes) -> float:
    """Mean number of non-zero latents per row of codes: (n, d_sae)."""
    z = as_matrix(codes, "codes", min_rows=1, dtype=None)
    return float((z != 0).sum(1).double().mean())


def _pair(x, x_hat, min_rows: int) -> tuple[Tensor, Tensor]:
    """x and x_hat as float64 matrices of one shape; ValueError naming the argument otherwise (a width
    mismatch would otherwise broadcast into a wrong number)."""
    x, x_hat = as_matrix(x, "x", min_rows), as_matrix(x_hat, "x_hat", min_rows)
    check_same_n(x, x_hat, ("x", "x_hat"))
    if x_hat.shape[1] != x.shape[1]:
        raise ValueError(f"x_hat: has {x_hat.shape[1]} features (columns) but x has {x.shape[1]}")
    return x, x_hat


def mse(x, x_hat) -> float:
    """Mean squared error per element between x and x_hat: (n, d)."""
    x, x_hat = _pair(x, x_hat, 1)
    return float((x - x_hat).pow(2).mean())


def fvu(x, x_hat) -> float:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; x, x_hat: (n, d)."""
    x, x_hat = _pair(x, x_hat, 2)
    total = (x - x.mean(0)).pow(2).sum()
    if total == 0:
        raise ValueError("x: has zero variance, so FVU is undefined")
    return float((x - x_hat).pow(2).sum() / total)


def explained_variance(x, x_hat) -> float:
    """1 - FVU (pooled over the set)."""
    return 1.0 - fvu(x, x_hat)


def dead_fraction(codes) -> float:
    """Fraction of latents that never fire on codes: (n, d_sae)."""
    z = as_matrix(codes, "codes", min_rows=1, dtype=None)
    return float(((z != 0).sum(0) == 0).double().mean())


def dense_fraction(codes, threshold: float = 0.1) -> float:
    """Fraction of latents that fire on more than ``threshold`` of the rows of codes: (n, d_sae)."""
    z = as_matrix(codes, "codes", min_rows=1, dtype=None)
    threshold = check_real(threshold, "threshold", 0.0, 1.0)
    return float(((z != 0).double().mean(0) > threshold).double().mean())


class SAEMetrics(NamedTuple):
    """Summary of an SAE on a set of activations (see :func:`evaluate`)."""

    l0: float
    mse: float
    fvu: float
    explained_variance: float
    dead_fraction: float
    dense_fraction: float


@torch.no_grad()
def _codes_and_recon(sae: SAE, x: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    zs, xs = [], []
    for i in range(0, len(x), batch_size):
        z = sae.encode(x[i:i + batch_size])
        zs.append(z)
        xs.append(sae.decode(z))
    return torch.cat(zs), torch.cat(xs)


@torch.no_grad()
def evaluate(sae: SAE, acts, batch_size: int = 4096, dense_threshold: float = 0.1) -> SAEMetrics:
    """L0, MSE, FVU, explained variance, dead and dense fractions of ``sae`` on acts: (n, d_in)."""
    if not isinstance(sae, SAE):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    check_real(dense_threshold, "dense_threshold", 0.0, 1.0)
    x = sae.check_input(acts, "acts")
    if len(x) < 2:
        raise ValueError(f"acts: needs at least 2 samples (rows), got {len(x)}")
    with eval_mode(sae):
        z, x_hat = _codes_and_recon(sae, x, batch_size)
    f = fvu(x.double(), x_hat.double())
    return SAEMetrics(l0(z), mse(x.double(), x_hat.double()), f, 1 - f, dead_fraction(z),
                      dense_fraction(z, dense_threshold))


def dictionary_recovery(sae_or_decoder, dictionary, threshold: float = 0.9) -> tuple[float, float]:
    """How well learned decoder directions recover a known dictionary (sparse-coding ground truth).

    dictionary: (d, n_atoms), atoms as columns (``univ.data.sparse_coding``'s ``extra["dictionary"]``);
    sae_or_decoder: an SAE or a (d_sae, d) matrix of decoder rows. Returns (MMCS, recovered): the mean
    over true atoms of the best absolute cosine with a learned direction, and the fraction of atoms whose
    best cosine is >= threshold.
    """
    D = sae_or_decoder.W_dec.detach() if isinstance(sae_or_decoder, SAE) else sae_or_decoder
    D = as_matrix(D, "sae_or_decoder", 1)
    threshold = check_real(threshold, "threshold", 0.0, 1.0)
    M = as_matrix(dictionary, "dictionary", 1)
    if D.shape[1] != M.shape[0]:
        raise ValueError(f"dictionary: has {M.shape[0]} rows (dims) but the decoder has {D.shape[1]} dims")
    cos = (M / M.norm(dim=0).clamp_min(1e-12)).T @ (D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)).T
    best = cos.abs().max(1).values  # (n_atoms,)
    return float(best.mean()), float((best >= threshold).double().mean())


class SpliceResult(NamedTuple):
    """What :func:`spliced_accuracy` returns: accuracies with the layer intact (``clean``), replaced by the
    SAE's reconstruction (``spliced``) and by zeros (``zero_ablated``); ``recovered`` = (spliced - zero) /
    (clean - zero), the fraction of the layer's contribution to accuracy that the SAE keeps (1 = lossless;
    NaN when zero-ablation costs nothing)."""

    clean: float
    spliced: float
    zero_ablated: float
    recovered: float


@torch.no_grad()
def spliced_accuracy(model: torch.nn.Module, x, y, layer: str, sae: SAE, batch_size: int = 512) -> SpliceResult:
    """Classifier accuracy on inputs x and labels y: (n,) with the output of ``layer`` replaced by the SAE's
    reconstruction (the analogue of SAELens's "loss recovered"); see :class:`SpliceResult`.

    layer: a name :func:`univ.capture` accepts (a TransformerLens hook name, reconstructed per position,
    or a dotted module path, whose output is flattened to (n, d_in)); reconstructed and reshaped back.
    """
    x = model_input(check_model(model), x)
    y = as_labels(y, "y")
    check_same_n(x, y, ("x", "y"))
    if not isinstance(sae, SAE):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    mode = {"value": "clean"}
    channels_last = resolve(model, layer, what="layer").channels_last

    def splice(out):
        if mode["value"] == "clean":
            return None
        # TransformerLens hook points are (batch, pos, d): the SAE reconstructs each position
        per_pos = channels_last and out.ndim > 2 and out.shape[-1] == sae.d_in
        flat = out.reshape(-1, out.shape[-1]) if per_pos else out.reshape(len(out), -1)
        if flat.shape[1] != sae.d_in:
            raise ValueError(f"layer {layer!r}: output has {flat.shape[1]} features, the SAE expects {sae.d_in}")
        new = sae.decode(sae.encode(flat)) if mode["value"] == "spliced" else torch.zeros_like(flat)
        return new.to(out.dtype).reshape(out.shape)

    acc = {}
    with eval_mode(model), hooks(model, {layer: splice}, what="layer"):
        for m in ("clean", "spliced", "zero_ablated"):
            mode["value"] = m
            correct = 0
            for i in range(0, len(x), batch_size):
                out = as_logits(run_model(model, x[i:i + batch_size]))
                if i == 0 and m == "clean" and int(y.max()) >= out.shape[-1]:
                    raise ValueError(f"y: labels must lie in [0, {out.shape[-1]}) for this model, got a "
                                     f"label {int(y.max())}")
                correct += int((out.argmax(-1) == y[i:i + batch_size].to(out.device)).sum())
            acc[m] = correct / len(x)
    gap = acc["clean"] - acc["zero_ablated"]
    recovered = (acc["spliced"] - acc["zero_ablated"]) / gap if gap != 0 else float("nan")
    return SpliceResult(acc["clean"], acc["spliced"], acc["zero_ablated"], recovered)


class LMSpliceResult(NamedTuple):
    """What :func:`spliced_lm_metrics` returns. Losses are mean next-token cross-entropies in nats over the
    ``n_predictions`` positions whose next token is real: with the layer intact (``clean_loss``), replaced by
    the SAE's reconstruction at every real token (``spliced_loss``) and by zeros (``zero_ablated_loss``).
    ``loss_recovered`` = (zero - spliced) / (zero - clean), SAELens's "CE loss score" (1 = lossless, 0 = no
    better than zero-ablation; NaN when zero-ablation costs nothing). ``kl_divergence``: the mean over the
    same positions of KL(clean next-token distribution || spliced one), in nats."""

    clean_loss: float
    spliced_loss: float
    zero_ablated_loss: float
    loss_recovered: float
    kl_divergence: float
    n_predictions: int


def _replacer(layer: str, sae: SAE, state: dict):
    """The hook of :func:`spliced_lm_metrics`: the layer's (b, T, ...) output with each real position's
    features (flattened channels-last) replaced as ``state["mode"]`` says, padding positions kept."""
    def splice(out: Tensor):
        if state["mode"] == "clean":
            return None
        b, T = out.shape[:2]
        flat = out.reshape(b, T, -1)
        if out.ndim < 3 or flat.shape[-1] != sae.d_in:
            raise ValueError(f"layer: {layer!r} emits shape {tuple(out.shape)}, not (batch, pos, {sae.d_in}) "
                             f"features the SAE reconstructs (d_in = {sae.d_in})")
        keep = state["mask"]  # (b, T) bool: the real tokens
        if keep.shape != (b, T):
            raise ValueError(f"layer: {layer!r} emits {T} positions but the inputs have {keep.shape[1]}")
        real = flat[keep]  # (n_real, d_in)
        new = sae.decode(sae.encode(real)) if state["mode"] == "spliced" else torch.zeros_like(real)
        flat = flat.clone()
        flat[keep] = new.to(device=flat.device, dtype=flat.dtype)
        return flat.reshape(out.shape)
    return splice


@torch.no_grad()
def spliced_lm_metrics(model: torch.nn.Module, inputs, layer: str, sae: SAE, batch_size: int = 8) -> LMSpliceResult:
    """Next-token loss and KL divergence of a causal language model with the output of ``layer`` replaced by
    the SAE's reconstruction (or zeros) at every real token; see :class:`LMSpliceResult`.

    model: a causal LM returning logits (b, T, vocab) (a ``univ.sources`` ``hf:``/``tl:`` model, a
        TransformerLens model, any module taking the batch). inputs: token ids (n, T) or a dict batch
        ``{"input_ids": (n, T), "attention_mask": (n, T)}`` (a TokenDataset's ``.inputs``); the mask is
        respected: padding is neither spliced nor scored, and position t is scored when t and t + 1 are both
        real tokens (the last real token has no next token). layer: a hook name whose output is
        (b, T, d_in) channels-last (or (b, T, heads, d_head) with heads * d_head = d_in), e.g.
        ``model.layers[i]``. batch_size: sequences per forward pass (logits take b x T x vocab x 4 bytes).
    Log-probabilities are float32 (float64 for a float64 model); sums are accumulated in float64.
    """
    check_model(model)
    if not isinstance(sae, SAE):
        raise ValueError(f"sae: expected a univ.sae.SAE, got {type(sae).__name__}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    x = check_batch(model, inputs, "inputs")
    ids = x.get("input_ids") if isinstance(x, dict) else x
    if ids is None or ids.ndim != 2 or ids.is_floating_point():
        raise ValueError(f"inputs: expected token ids (n, T) or a dict batch with input_ids (n, T), got "
                         f"{sorted(x) if isinstance(x, dict) else tuple(ids.shape)}")
    if ids.shape[1] < 2:
        raise ValueError(f"inputs: sequences of {ids.shape[1]} token(s) have no next token to predict")
    if not resolve(model, layer, what="layer").channels_last:
        raise ValueError(f"layer: {layer!r} is not a channels-last (batch, pos, features) output; splice a "
                         "residual-stream hook (e.g. model.layers[i])")
    state: dict = {"mode": "clean"}
    device = model_device(model)
    sums = dict.fromkeys(("clean", "spliced", "zero_ablated", "kl"), 0.0)
    count = 0
    with eval_mode(model), eval_mode(sae), hooks(model, {layer: _replacer(layer, sae, state)}, what="layer"):
        for start in range(0, batch_len(x), batch_size):
            batch = batch_slice(x, start, start + batch_size, device)
            tokens = batch["input_ids"] if isinstance(batch, dict) else batch
            mask = batch_mask(batch) if isinstance(batch, dict) else None
            mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask
            state["mask"] = mask
            scored = mask[:, :-1] & mask[:, 1:]  # (b, T - 1): position t predicts the real token t + 1
            targets = tokens[:, 1:][scored]
            if not len(targets):
                continue
            count += len(targets)
            clean = None
            for mode in ("clean", "spliced", "zero_ablated"):
                state["mode"] = mode
                out = as_logits(run_model(model, batch, "inputs"))
                if out.ndim != 3 or out.shape[:2] != tokens.shape:
                    raise ValueError(f"model: returned logits of shape {tuple(out.shape)} for inputs of shape "
                                     f"{tuple(tokens.shape)}; expected (b, T, vocab) from a causal LM")
                logp = torch.log_softmax(out[:, :-1][scored].float() if out.dtype != torch.float64
                                         else out[:, :-1][scored], dim=-1)  # (m, vocab)
                sums[mode] -= float(logp.gather(1, targets[:, None]).double().sum())
                if mode == "clean":
                    clean = logp
                elif mode == "spliced":
                    sums["kl"] += float((clean.exp() * (clean - logp)).sum(-1).double().sum())
    if count == 0:
        raise ValueError("inputs: no position has a real next token (every sequence has at most one real token)")
    clean, spliced, zero = (sums[m] / count for m in ("clean", "spliced", "zero_ablated"))
    recovered = (zero - spliced) / (zero - clean) if zero != clean else float("nan")
    return LMSpliceResult(clean, spliced, zero, recovered, sums["kl"] / count, count)

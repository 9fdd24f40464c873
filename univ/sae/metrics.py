"""SAE quality metrics: sparsity (L0, dead and dense fractions), reconstruction (MSE, FVU, explained
variance), recovery of a known dictionary (MMCS), and the accuracy of a classifier with the SAE's
reconstruction spliced in at a layer (the analogue of SAELens's "loss recovered").

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
from ..models import as_logits, check_model, eval_mode, model_input, run_model
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

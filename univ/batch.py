"""Model inputs as univ passes them around: a tensor (n, ...) or a dict batch of tensors sharing their first
axis, HuggingFace-style: ``{"input_ids": (n, T), "attention_mask": (n, T)}`` for text, ``{"pixel_values":
(n, C, H, W)}`` for images. A dict batch is sliced entry by entry; its n is its first entry's length; its
``attention_mask`` (1 = real token, 0 = padding) tells capture which positions are real.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ._checks import as_real_tensor
from .models import as_model_input, model_input
from .utils import tensor_hash

MASK = "attention_mask"


def check_batch(model: nn.Module, inputs, name: str = "inputs", detach: bool = True):
    """``inputs`` checked for ``model``: a tensor as :func:`univ.models.model_input` checks it, or a mapping
    {str: array} whose entries are real tensors with one first axis (n); every entry then follows the one
    input-dtype rule (:func:`univ.models.as_model_input`). An ``attention_mask`` must be (n, T) of 0/1,
    with the shape of ``input_ids`` when both are there."""
    if not isinstance(inputs, Mapping):
        return model_input(model, inputs, name, detach=detach)
    if not inputs:
        raise ValueError(f"{name}: is an empty dict; expected tensors such as input_ids and attention_mask")
    out = {}
    for key, value in inputs.items():
        if not isinstance(key, str):
            raise TypeError(f"{name}: dict keys must be strings (the model's argument names), got {key!r}")
        out[key] = as_real_tensor(value, f"{name}[{key!r}]", detach=detach)
    first = next(iter(out))
    n = len(out[first])
    for key, value in out.items():
        if len(value) != n:
            raise ValueError(f"{name}[{key!r}]: has {len(value)} rows but {name}[{first!r}] has {n}; every tensor "
                             "of a dict batch shares its first (sample) axis")
    mask = out.get(MASK)
    if mask is not None:
        ids = out.get("input_ids")
        if mask.ndim != 2 or (ids is not None and ids.shape != mask.shape):
            same = "" if ids is None else f" = input_ids shape {tuple(ids.shape)}"
            raise ValueError(f"{name}['attention_mask']: expected shape (n, T){same}, got {tuple(mask.shape)}")
        if mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name}['attention_mask']: expected integer 0/1 entries (1 = real token)")
    return as_model_input(model, out)


def batch_len(batch) -> int:
    """n, the number of samples (the first entry's length for a dict)."""
    return len(next(iter(batch.values())) if isinstance(batch, Mapping) else batch)


def batch_slice(batch, start: int, stop: int, device=None):
    """Samples [start, stop) of ``batch`` (every entry of a dict), moved to ``device`` when given."""
    if isinstance(batch, Mapping):
        return {k: v[start:stop].to(device) if device is not None else v[start:stop] for k, v in batch.items()}
    part = batch[start:stop]
    return part.to(device) if device is not None else part


def batch_mask(batch) -> torch.Tensor | None:
    """The batch's attention mask (n, T) as bool, or None (tensor inputs, or a dict without one)."""
    mask = batch.get(MASK) if isinstance(batch, Mapping) else None
    return None if mask is None else mask.bool()


def batch_hash(batch) -> str | dict[str, str]:
    """A content hash of a tensor, or of every entry of a dict (key -> hash, keys sorted)."""
    if isinstance(batch, Mapping):
        return {k: tensor_hash(batch[k]) for k in sorted(batch)}
    return tensor_hash(batch)

"""Where the features of a hooked output lie, and how :func:`univ.capture` reduces an output to rows.

A hooked output is (b, ...). Its *feature axes* say which of its axes hold the features; every other
non-batch axis is a position (a token, a patch, a pixel). The feature axis is known, never guessed:

1. ``model.feature_axes[name]``: a model's own per-name table (univ.sources models fill it);
2. a TransformerLens HookPoint: channels-last (-1), or the last two axes (n_heads, d_head) for per-head
   hooks (q, k, v, z) whose hook conversion splits attention heads;
3. the module's type: convolutions, batch norms and poolings are channels-first (1); ``nn.Linear``,
   ``nn.Embedding``, ``nn.LayerNorm`` and ``nn.RMSNorm`` are channels-last (-1);
4. ``model.feature_axis``: the model's default for every other output (univ's CNNs say 1, its
   transformers -1, univ.sources sets it for transformer families). Set it on your own module when
   you capture a 3-D+ output with reduce mean, last or tokens: ``model.feature_axis = 1``;
5. otherwise unknown (None): flatten and none work, mean/last/tokens raise a ValueError saying so.

An axis is an int or a tuple of ints (several axes flattened into one feature vector, in order).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

REDUCTIONS = ("flatten", "mean", "last", "tokens", "none")

_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                   nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                   nn.modules.pooling._AdaptiveMaxPoolNd, nn.GroupNorm)
# exact types only: a subclass of LayerNorm may normalise another axis (e.g. a channels-first variant)
_CHANNELS_LAST_EXACT = (nn.LayerNorm, nn.RMSNorm)


def check_feature_axis(axis, name: str = "feature_axis"):
    """``axis`` (an int, a non-empty tuple of distinct ints, or None) normalised; TypeError otherwise."""
    if axis is None or (isinstance(axis, int) and not isinstance(axis, bool)):
        return axis
    if isinstance(axis, (tuple, list)) and axis and all(isinstance(a, int) and not isinstance(a, bool)
                                                        for a in axis) and len(set(axis)) == len(axis):
        return tuple(axis)
    raise TypeError(f"{name}: expected an axis (an int such as 1 or -1, or a tuple of ints), got {axis!r}")


def feature_axis_of(model: nn.Module, name: str, module: nn.Module, tl_hook: bool):
    """The feature axis of what ``module`` (named ``name`` in ``model``) emits, by the rules above."""
    table = getattr(model, "feature_axes", None)
    if isinstance(table, Mapping) and name in table:
        return check_feature_axis(table[name], f"feature_axes[{name!r}]")
    if tl_hook:
        conversion = getattr(module, "hook_conversion", None)
        return (-2, -1) if getattr(conversion, "splits_attention_heads", False) else -1
    if isinstance(module, _CHANNELS_FIRST):
        return 1
    if isinstance(module, (nn.Linear, nn.Embedding)) or type(module) in _CHANNELS_LAST_EXACT:
        return -1
    return check_feature_axis(getattr(model, "feature_axis", None), "model.feature_axis")


def is_tl_hook(module: nn.Module) -> bool:
    """Whether ``module`` is a TransformerLens HookPoint (checked by type name: no import needed)."""
    return any(c.__name__ == "HookPoint" and c.__module__.startswith("transformer_lens") for c in type(module).__mro__)


def _rows(t: torch.Tensor, axis, name: str) -> tuple[torch.Tensor, int]:
    """(b, ...) -> ((b, P, d), number of position axes): positions (every non-feature axis) by features."""
    axes = (axis,) if isinstance(axis, int) else axis
    feat = []
    for a in axes:
        if not -t.ndim < a < t.ndim or a % t.ndim == 0:
            raise ValueError(f"names: feature axis {axis!r} does not fit the output of {name!r} (shape "
                             f"{tuple(t.shape)}); axis 0 is the batch")
        feat.append(a % t.ndim)
    pos = [i for i in range(1, t.ndim) if i not in feat]
    t = t.permute(0, *pos, *feat)
    n_pos = int(torch.tensor(t.shape[1:1 + len(pos)]).prod())
    return t.reshape(len(t), n_pos, -1), len(pos)


def first_positions(mask: torch.Tensor) -> torch.Tensor:
    """(b, T) bool: True at the first True entry of each row of ``mask`` (the BOS with left or right padding)."""
    idx = torch.where(mask, torch.arange(mask.shape[1], device=mask.device), mask.shape[1]).min(1).values
    return torch.nn.functional.one_hot(idx, mask.shape[1] + 1)[:, :-1].bool()


def token_mask(mask: torch.Tensor, exclude_first: bool = False) -> torch.Tensor:
    """(b, T) bool: the positions ``reduce="tokens"`` keeps (non-padding; without the first when asked)."""
    mask = mask.bool()
    return mask & ~first_positions(mask) if exclude_first else mask


def reduce_acts(t: torch.Tensor, how: str, axis, mask: torch.Tensor | None = None, exclude_first: bool = False,
                name: str = "output") -> torch.Tensor:
    """One hooked output ``t`` (b, ...) reduced as :func:`univ.capture` says.

    how: "none" -> t; "flatten" -> (b, prod(rest)); "mean" / "last" -> (b, d), averaging over / taking the
        last of the positions ((b, d) outputs pass as they are); "tokens" -> (n_tokens, d), one row per kept
        position, sample-major.
    axis: the feature axis (see the module docstring); None (unknown) raises for mean/last/tokens on a 3-D+
        output.
    mask: (b, T) attention mask (1 = real token); mean, last and tokens use only its positions (last is the
        last real position, so left and right padding both work). The output must have exactly one
        position axis of length T.
    exclude_first: drop each sequence's first real position (the BOS) from mean and tokens.
    """
    if how == "none":
        return t
    if how == "flatten" or (t.ndim <= 2 and how != "tokens"):
        return t.reshape(len(t), -1)
    if t.ndim <= 2:
        raise ValueError(f"names: reduce='tokens' needs an output with positions, but {name!r} has shape "
                         f"{tuple(t.shape)} (one vector per sample); capture it with reduce='flatten'")
    if axis is None:
        raise ValueError(
            f"names: the feature axis of {name!r} (shape {tuple(t.shape)}) is unknown, so reduce={how!r} cannot "
            "tell positions from features; say where the features are: model.feature_axis = 1 (channels-first) "
            f"or -1 (channels-last), or model.feature_axes = {{{name!r}: axis}} "
            "; or load the model with univ.sources.load_model, which knows hf:, tl: and zoo: layouts and takes "
            "feature_axis= for py:")
    rows, n_pos_axes = _rows(t, axis, name)  # (b, P, d)
    if mask is None:
        keep = torch.ones(rows.shape[:2], dtype=torch.bool, device=rows.device)
    else:
        if n_pos_axes != 1 or rows.shape[1] != mask.shape[1]:
            raise ValueError(f"inputs: the attention mask has {mask.shape[1]} positions but the output of {name!r} "
                             f"(shape {tuple(t.shape)}, feature axis {axis!r}) has {rows.shape[1]}; capture it "
                             "with reduce='none' or 'flatten'")
        keep = mask.to(rows.device).bool()
    if how == "last":
        pos = torch.arange(keep.shape[1], device=keep.device)
        idx = torch.where(keep, pos, -1).max(1).values
        _check_nonempty(idx >= 0, name, "")
        return rows[torch.arange(len(rows), device=rows.device), idx]
    keep = token_mask(keep, exclude_first)
    if how == "tokens":
        return rows[keep]
    count = keep.sum(1)
    _check_nonempty(count > 0, name, " after excluding the first position" if exclude_first else "")
    if bool(keep.all()):
        return rows.mean(dim=1)
    # zeros at padding add nothing: the sum is the sum over the real positions only
    return torch.where(keep[..., None], rows, 0).sum(1) / count[:, None].to(rows.dtype)


def _check_nonempty(ok: torch.Tensor, name: str, why: str) -> None:
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        raise ValueError(f"inputs: sample {i} of the batch has no real (non-padding) positions{why}, so "
                         f"{name!r} cannot be reduced for it")

"""Input validation shared by every public function.

Each check raises ``ValueError`` naming the argument and the problem, so that bad input never turns
into silently wrong numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .registry import close_matches, unknown_name_error  # noqa: F401 (validation helpers live with the registry)


def to_tensor(x, name: str, dtype: torch.dtype | None = None, device=None, detach: bool = True) -> torch.Tensor:
    """Convert a numpy array or torch tensor to a tensor (no copy when already suitable); ``detach=False``
    keeps a tensor's autograd graph."""
    if isinstance(x, torch.Tensor):
        t = x.detach() if detach else x
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise ValueError(f"{name}: could not convert to a numeric array (got dtype=object)")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``t`` holds NaN or Inf, saying how many and where the first one is."""
    if t.is_floating_point() or t.is_complex():
        if t.numel() and bool(torch.isfinite(t.sum())):  # fast path: a finite sum means no NaN/Inf
            return t
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_bad = int(bad.sum())
            first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
            raise ValueError(f"{name}: contains {n_bad} NaN/Inf value(s) (first at index {first})")
    return t


def as_matrix(
    x,
    name: str,
    min_rows: int = 2,
    dtype: torch.dtype | None = torch.float64,
    device=None,
) -> torch.Tensor:
    """Validate a (n, d) sample matrix: 2-D, non-empty, finite, at least ``min_rows`` rows."""
    t = to_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (n_samples, n_features), got shape {tuple(t.shape)}"
            + (" (reshape 1-D data with x[:, None])" if t.ndim == 1 else "")
        )
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(t.shape)})")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} samples (rows), got {t.shape[0]}")
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                  torch.uint8, torch.bool)):
        raise ValueError(f"{name}: unsupported dtype {t.dtype}")
    t = t.to(dtype=dtype or (t.dtype if t.is_floating_point() else torch.float32), device=device)
    return check_finite(t, name)


def check_same_n(a: torch.Tensor, b: torch.Tensor, names: Sequence[str] = ("X", "Y")) -> None:
    """Raise if two sample matrices have different numbers of rows."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of samples (rows): "
            f"got {a.shape[0]} and {b.shape[0]}"
        )


def check_choice(value, name: str, choices: Iterable) -> None:
    """Raise if ``value`` is not one of ``choices``, listing them."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; choose one of {choices}")


def check_positive(value, name: str, strict: bool = True) -> None:
    """Raise unless value > 0 (or >= 0 when ``strict`` is False)."""
    if value is None or not np.isfinite(value) or (value <= 0 if strict else value < 0):
        raise ValueError(f"{name}: must be {'> 0' if strict else '>= 0'}, got {value!r}")

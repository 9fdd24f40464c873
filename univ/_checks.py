"""Input validation shared by every public function.

Each check raises ``ValueError`` (``TypeError`` for a value of the wrong type: a string for a number, complex
or non-numeric data) naming the argument and the problem, so that bad input never turns into silently wrong
numbers or a torch/numpy traceback from the public API.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .registry import close_matches, unknown_name_error  # noqa: F401 (validation helpers live with the registry)
from .utils import resolve_device


def to_tensor(x, name: str, dtype: torch.dtype | None = None, device=None, detach: bool = True) -> torch.Tensor:
    """Convert a numpy array or torch tensor to a tensor (no copy when already suitable); ``detach=False``
    keeps a tensor's autograd graph."""
    if isinstance(x, torch.Tensor):
        t = x.detach() if detach else x
        if t.layout != torch.strided:
            t = t.to_dense()
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"{name}: could not convert to a numeric array ({e})") from None
        if arr.dtype == object:
            raise ValueError(f"{name}: could not convert to a numeric array (got dtype=object)")
        if arr.dtype.kind not in "biufc":
            raise TypeError(f"{name}: expected numbers, got a numpy array of dtype {arr.dtype}")
        if not arr.dtype.isnative:  # torch.from_numpy refuses non-native byte order
            arr = arr.astype(arr.dtype.newbyteorder("="))
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise ValueError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    if device is not None:
        try:
            device = resolve_device(device)
        except ValueError as e:
            raise ValueError(f"device: cannot move {name} to {device!r} ({str(e).removeprefix('device: ')})") \
                from None
    if dtype is not None or device is not None:
        try:
            t = t.to(dtype=dtype or t.dtype, device=device or t.device)
        except (RuntimeError, TypeError, ValueError, AssertionError) as e:  # torch without CUDA asserts
            raise ValueError(f"device: cannot move {name} to {device!r} ({e})") from None
    return t


def check_device(device) -> torch.device | None:
    """None (the caller's default) or a torch device that exists here; anything else raises one ValueError
    line saying which devices exist (:func:`univ.utils.resolve_device`)."""
    return None if device is None else resolve_device(device)


def as_real_tensor(x, name: str, *, detach: bool = True, finite: bool = True) -> torch.Tensor:
    """``x`` (numpy or torch) as a non-empty real tensor (float, integer or bool), checked for NaN/Inf
    unless ``finite`` is False; complex values are a TypeError, everything else a ValueError naming ``name``."""
    t = to_tensor(x, name, detach=detach)
    if t.is_complex():
        raise TypeError(f"{name}: complex values are not supported (got dtype {t.dtype}); pass real values")
    if not (t.is_floating_point() or t.dtype == torch.bool or _is_integer(t.dtype)):
        raise TypeError(f"{name}: unsupported dtype {t.dtype}; expected a real float, integer or bool array")
    if t.ndim == 0 or t.numel() == 0:
        raise ValueError(f"{name}: is empty or a scalar (shape {tuple(t.shape)}); expected a batch (n, ...)")
    if finite:
        check_finite(t.detach(), name)
    return t


def as_labels(y, name: str, n: int | None = None, n_classes: int | None = None, device=None) -> torch.Tensor:
    """Class labels as an int64 tensor (n,): integers, or floats with integer values; with ``n`` the length
    must match, with ``n_classes`` every label must lie in [0, n_classes)."""
    t = as_real_tensor(y, name)
    if t.ndim != 1 or (n is not None and len(t) != n):
        raise ValueError(f"{name}: expected integer labels of shape ({n if n is not None else 'n'},), "
                         f"got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or (t.is_floating_point() and not bool((t == t.round()).all())):
        raise ValueError(f"{name}: expected integer class labels, got {t.dtype} values")
    t = t.long() if device is None else t.to(device=device, dtype=torch.long)
    low, high = int(t.min()), int(t.max())
    if low < 0 or (n_classes is not None and high >= n_classes):
        raise ValueError(f"{name}: labels must lie in [0, {n_classes if n_classes is not None else 'inf'}), "
                         f"got range [{low}, {high}]")
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
    finite: bool = True,
) -> torch.Tensor:
    """Validate a (n, d) sample matrix: 2-D, non-empty, real, at least ``min_rows`` rows and (unless
    ``finite`` is False, for callers that check finiteness themselves) free of NaN/Inf."""
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
    if t.is_complex():
        raise TypeError(f"{name}: complex values are not supported (got dtype {t.dtype}); pass the real "
                        f"part, the magnitude, or real and imaginary parts as separate features")
    if not (t.is_floating_point() or t.dtype == torch.bool or _is_integer(t.dtype)):
        raise TypeError(f"{name}: unsupported dtype {t.dtype}; expected a real float, integer or bool array")
    t = to_tensor(t, name, dtype=dtype or (t.dtype if t.is_floating_point() else torch.float32), device=device)
    return check_finite(t, name) if finite else t


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool) and \
        dtype.itemsize <= 8 and "int" in str(dtype)


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
    """Raise unless value is a real number > 0 (or >= 0 when ``strict`` is False)."""
    _check_real(value, name)
    if not np.isfinite(value) or (value <= 0 if strict else value < 0):
        raise ValueError(f"{name}: must be {'> 0' if strict else '>= 0'}, got {value!r}")


def check_real(value, name: str, low: float | None = None, high: float | None = None) -> float:
    """``value`` (Python or NumPy number, 0-d tensor) as a finite float; raise unless low <= value <= high."""
    _check_real(value, name)
    v = float(value)
    if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high):
        rule = (f"a finite number in [{low}, {high}]" if low is not None and high is not None
                else f"a finite number >= {low}" if low is not None
                else f"a finite number <= {high}" if high is not None else "a finite number")
        raise ValueError(f"{name}: must be {rule}, got {value!r}")
    return v


def check_seed(seed, name: str = "seed") -> int | None:
    """None (torch's global RNG) or an integer seed torch accepts."""
    return None if seed is None else check_int(seed, name, -(2**63), 2**64 - 1)


def check_path(path, name: str = "path") -> Path:
    """``path`` (a str or os.PathLike) as a Path; TypeError for anything else, ValueError for ''."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: expected a str or os.PathLike path, got {type(path).__name__} {path!r}")
    if str(path) == "":
        raise ValueError(f"{name}: is an empty path")
    return Path(path)


def check_callable(fn, name: str) -> None:
    """Raise TypeError unless ``fn`` is callable."""
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable, got {type(fn).__name__} {fn!r}")


def check_fraction(value, name: str) -> None:
    """Raise unless value is a real number in (0, 1]."""
    _check_real(value, name)
    if not 0 < value <= 1:
        raise ValueError(f"{name}: must be in (0, 1], got {value!r}")


def check_int(value, name: str, low: int | None = None, high: int | None = None, why: str = "") -> int:
    """``value`` as an int (Python or NumPy integer, not bool); raise unless low <= value <= high."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name}: must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rule = (f"satisfy {low} <= {name} <= {high}" if low is not None and high is not None
                else f"be >= {low}" if low is not None else f"be <= {high}")
        raise ValueError(f"{name}: must {rule}{why}, got {value}")
    return value


def _check_real(value, name: str) -> None:
    """Raise TypeError unless value is one real number (Python, NumPy or a 0-d tensor; not bool or str)."""
    ok = not isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating))
    if ok and not isinstance(value, (numbers.Real, np.floating, np.integer)):
        try:
            ok = np.ndim(value) == 0 and not np.iscomplexobj(value) and float(value) is not None
        except (TypeError, ValueError, RuntimeError):
            ok = False
    if not ok:
        raise TypeError(f"{name}: must be a real number, got {value!r} ({type(value).__name__})")

"""Shared by the bad-input tables of every package: the check that a bad input raises exactly the named error,
and inputs with one NaN or Inf."""

import re
import warnings

import numpy as np
import pytest
import torch


def assert_named_error(call, exc: type, fragment: str, one_line: bool = True) -> None:
    """``call()`` raises exactly ``exc`` (ValueError or TypeError: no torch, numpy, scipy or safetensors error
    type, nor a subclass such as numpy's LinAlgError) whose message matches ``fragment`` (a regex) on one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(Exception) as info:
            call()
    assert type(info.value) is exc, f"{type(info.value).__module__}.{type(info.value).__name__}: {info.value}"
    assert re.search(fragment, str(info.value)), str(info.value)
    if one_line:
        assert "\n" not in str(info.value).strip(), str(info.value)


def with_nan(a, where=(3, 1)):
    """A float64 copy of ``a`` with one NaN."""
    a = np.array(a, dtype=np.float64)
    a[where] = np.nan
    return a


def with_inf(a, where=(2, 0), sign: float = 1.0):
    """A float64 copy of ``a`` with one +Inf (or -Inf with ``sign=-1``)."""
    a = np.array(a, dtype=np.float64)
    a[where] = sign * np.inf
    return a


# (id, make a bad matrix from a good numpy one, exception, message after "NAME: "): what every function taking a
# sample matrix must refuse; each package's table adds its own cases
BAD_MATRICES = [
    ("ndim1", lambda A: A[:, 0], ValueError, "expected a 2-D array"),
    ("ndim3", lambda A: A[None], ValueError, "expected a 2-D array"),
    ("empty_rows", lambda A: A[:0], ValueError, "is empty"),
    ("empty_cols", lambda A: A[:, :0], ValueError, "is empty"),
    ("nan", with_nan, ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(3, 1\)\)"),
    ("inf", with_inf, ValueError, r"contains 1 NaN/Inf value\(s\) \(first at index \(2, 0\)\)"),
    ("strings", lambda A: np.asarray(A).astype(str), TypeError, "expected numbers"),
    ("object", lambda A: np.asarray(A).astype(object), ValueError, "could not convert to a numeric array"),
    ("complex", lambda A: A + 1j, TypeError, "complex values are not supported"),
    ("torch_complex", lambda A: torch.from_numpy(A + 1j), TypeError, "complex values are not supported"),
]

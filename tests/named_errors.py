"""Shared by the bad-input tables of every package: the check that a bad input raises exactly the named error,
and inputs with one NaN or Inf."""

import re
import warnings

import numpy as np
import pytest


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

"""Job functions with known behaviour, for the grid's tests and benchmarks (importable by every worker, which
a test module is not): a computation with a known answer, a job that fails or kills its worker once, one that
records each run, and one that only waits."""

from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: float, tensor=None) -> dict:
    """{"x2": x * x} (and the tensor doubled, when given)."""
    out = {"x2": x * x}
    if tensor is not None:
        out["t2"] = tensor * 2
    return out


def record(x: float, log: str, seconds: float = 0.0) -> float:
    """Append ``x`` to the file ``log`` (one line per run), wait ``seconds``, return ``x + 1``."""
    with open(log, "a") as f:
        f.write(f"{x}\n")
    time.sleep(seconds)
    return x + 1


def fail_once(x: float, marker: str) -> float:
    """Raise the first time it runs for ``marker`` (a file it creates), return ``-x`` after."""
    m = Path(marker)
    if not m.exists():
        m.write_text("failed once")
        raise RuntimeError(f"fail_once: the planned failure of job {x}")
    return -x


def die_once(x: float, marker: str) -> float:
    """Kill its own worker process the first time it runs for ``marker``, return ``-x`` after."""
    m = Path(marker)
    if not m.exists():
        m.write_text("died once")
        os._exit(3)
    return -x


def always_fail(x: float) -> float:
    """Always raises ValueError."""
    raise ValueError(f"always_fail: job {x} cannot succeed")


def busy(seconds: float, tag: int = 0) -> int:
    """Spin the CPU for ``seconds`` (a stand-in for work), return ``tag``."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return tag


def spin(iterations: int, tag: int = 0) -> int:
    """A fixed amount of CPU work (``iterations`` additions in Python), whatever the machine's load; ``tag``."""
    total = 0
    for i in range(iterations):
        total += i
    return tag

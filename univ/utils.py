"""Small shared helpers: seeding, stable hashing of configs, devices, BLAS threads."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj)
    return obj


def to_jsonable(obj):
    """Dataclasses, tuples, numpy scalars and paths turned into plain JSON types."""
    return _jsonable(obj)


def stable_hash(obj, length: int = 12) -> str:
    """A short hex digest of a JSON-serialisable object (dict keys sorted), stable across runs."""
    blob = json.dumps(_jsonable(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def tensor_hash(*tensors: torch.Tensor, length: int = 12) -> str:
    """A digest of tensor contents (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        # the array's own buffer, not a tobytes() copy: the same digest without copying a model's weights
        h.update((t if t.dtype != torch.bfloat16 else t.float()).numpy().reshape(-1).view("uint8"))
    return h.hexdigest()[:length]


def available_devices() -> list[str]:
    """The torch devices that exist on this machine ("cpu", then "cuda:0", ..., "mps")."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append("mps")
    return out


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A device that exists here: ``None``/"auto" picks CUDA when present, else CPU; "cuda" means "cuda:0".
    An unknown or unavailable device raises ValueError naming the devices that exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: unknown device {device!r}; devices here: {available_devices()}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {str(device)!r} is not available (no CUDA GPU in this torch build or "
                             f"machine); devices here: {available_devices()}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {str(device)!r} does not exist; devices here: {available_devices()}")
    elif dev.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device: 'mps' is not available; devices here: {available_devices()}")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: {str(device)!r} is not supported; devices here: {available_devices()}")
    return dev


def cache_dir() -> Path:
    """Root of univ's on-disk cache: $UNIV_CACHE, else ./.cache/univ."""
    return Path(os.environ.get("UNIV_CACHE", Path.cwd() / ".cache" / "univ"))


_BLAS_CONTROLLER = None


def blas_threads(n: int):
    """Context manager limiting numpy's BLAS/LAPACK to ``n`` threads (e.g. torch's own thread count)."""
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=max(1, int(n)), user_api="blas")


_ONE_THREAD_DEPTH = 0


@contextlib.contextmanager
def one_blas_thread():
    """One BLAS thread: for small matrices, where thread start-up costs far more than the work. Nested uses
    inside an outer one cost nothing (threadpoolctl's limit takes ~0.1 ms, more than a small LAPACK call)."""
    global _ONE_THREAD_DEPTH
    if _ONE_THREAD_DEPTH:
        yield
        return
    with blas_threads(1):
        _ONE_THREAD_DEPTH += 1
        try:
            yield
        finally:
            _ONE_THREAD_DEPTH -= 1

"""Small shared helpers: seeding, stable hashing of configs, devices, thread pinning."""

from __future__ import annotations

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
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:length]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" picks CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cache_dir() -> Path:
    """Root of univ's on-disk cache: $UNIV_CACHE, else ./.cache/univ."""
    return Path(os.environ.get("UNIV_CACHE", Path.cwd() / ".cache" / "univ"))


def pin_threads(n: int) -> None:
    """Pin torch (and BLAS via env for child processes) to ``n`` threads."""
    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


_BLAS_CONTROLLER = None


def blas_threads(n: int):
    """Context manager limiting numpy's BLAS/LAPACK to ``n`` threads (e.g. torch's own thread count)."""
    global _BLAS_CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=max(1, int(n)), user_api="blas")


def one_blas_thread():
    """One BLAS thread: for small matrices, where thread start-up costs far more than the work."""
    return blas_threads(1)

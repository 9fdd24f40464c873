"""A job: a named function and its arguments, keyed by a hash of everything that determines its result.

``Job("univ.cache:train_zoo_member", {"arch": "cnn", ...})`` names the function as ``module:qualname`` so that
any worker (another process, a Ray node) can import it; the key hashes the function's name and the arguments
the way univ's caches do (tensors and model weights by their contents, dataclasses as JSON), or an explicit
``key`` (e.g. :func:`univ.cache.model_key`) when the caller already has the cache's own key.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

KEY_VERSION = 1
"""Bumped when what every job's shard holds changes (the shard format), so old shards are not reused. A change
in what one job function computes bumps that function's own ``job_version`` attribute instead (see
:meth:`Job.digest`), so that the other functions' shards (trained models) stay valid."""


@dataclass(frozen=True)
class Resources:
    """What one job needs from a worker: Ray schedules by it; the local executors run one job per worker."""

    cpus: float = 1
    """CPU cores (Ray's num_cpus)."""
    gpus: float = 0
    """GPUs (Ray's num_gpus; 0.5 lets two jobs share one)."""
    memory_mb: int | None = None
    """Memory the job needs (Ray's memory resource); None: no reservation."""

    def __post_init__(self):
        for name in ("cpus", "gpus"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{name}: expected a number >= 0, got {v!r}")
        if self.memory_mb is not None and (isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, int)
                                           or self.memory_mb < 1):
            raise ValueError(f"memory_mb: expected None or an int >= 1, got {self.memory_mb!r}")


def describe(value) -> Any:
    """JSON that stands for ``value`` in a key: tensors, arrays and modules by a hash of their contents."""
    import numpy as np
    import torch

    from ..utils import tensor_hash, to_jsonable

    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_hash(value)}
    if isinstance(value, np.ndarray):
        return {"array": tensor_hash(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, torch.nn.Module):
        state = value.state_dict()
        return {"module": f"{type(value).__module__}.{type(value).__qualname__}",
                "state": tensor_hash(*state.values()) if state else None, "names": list(state)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame
        return {"frame": describe({str(c): value[c].tolist() for c in value.columns})}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return to_jsonable(value)


def resolve_function(name: str):
    """The function a job names as ``"package.module:qualname"``."""
    if not isinstance(name, str) or name.count(":") != 1:
        raise ValueError(f"fn: expected 'module:function' (e.g. 'univ.cache:train_zoo_member'), got {name!r}")
    module, qual = name.split(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"fn: cannot import module {module!r} of {name!r}: {e}") from None
    for part in qual.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"fn: module {module!r} has no {qual!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"fn: {name!r} is not callable")
    return obj


@dataclass(frozen=True)
class Job:
    """One cell of a grid: ``fn(**kwargs)``, whose result is written as a shard named by :attr:`key`.

    fn: "module:qualname" of a module-level function (importable by every worker).
    kwargs: its arguments (tensors, modules, numbers, strings, lists, dicts, dataclasses).
    name: a label for progress and the manifest (default: fn's name).
    key: JSON that determines the result, when the caller has one (e.g. a cache key); default: the arguments.
    resources: what the job needs from a worker (:class:`Resources`).
    cost: a relative estimate of its work (not part of the key): the grid starts the costliest jobs first, so
        that a long job is not left alone at the end while the other workers idle.
    """

    fn: str
    kwargs: dict = field(default_factory=dict)
    name: str | None = None
    key: Any = None
    resources: Resources = Resources()
    cost: float = 1.0

    def __post_init__(self):
        if not isinstance(self.fn, str) or self.fn.count(":") != 1:
            raise ValueError(f"fn: expected 'module:function', got {self.fn!r}")
        if not isinstance(self.kwargs, dict):
            raise TypeError(f"kwargs: expected a dict of keyword arguments, got {type(self.kwargs).__name__}")
        if not isinstance(self.resources, Resources):
            raise TypeError(f"resources: expected univ.jobs.Resources, got {type(self.resources).__name__}")
        if isinstance(self.cost, bool) or not isinstance(self.cost, (int, float)) or not self.cost >= 0:
            raise ValueError(f"cost: expected a number >= 0 (a relative estimate of the job's work), got "
                             f"{self.cost!r}")

    @property
    def label(self) -> str:
        return self.name or self.fn.split(":")[1]

    def digest(self) -> str:
        """The job's key: a hash of its function's name, what determines its result and the function's
        ``job_version`` attribute where it has one (bumped when the function's numbers change, so a shard an
        older univ wrote is recomputed rather than served)."""
        from ..utils import stable_hash

        what = describe(self.kwargs) if self.key is None else describe(self.key)
        body = {"fn": self.fn, "what": what, "v": KEY_VERSION}
        try:
            version = getattr(resolve_function(self.fn), "job_version", None)
        except ValueError:  # not importable here: the run reports that
            version = None
        if version is not None:
            body["fv"] = version
        return stable_hash(body, length=20)

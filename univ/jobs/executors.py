"""Executors: where a grid's jobs run. One interface, three kinds (registry :data:`EXECUTORS`):

- ``inprocess`` (default): one job after the other in this process;
- ``process``: a local pool of worker processes (``workers``, default: the cores here); a worker that dies
  breaks the pool, which is started anew and the jobs it held are retried;
- ``ray``: Ray tasks on an existing cluster (``address``, e.g. ``ray://head:10001`` or ``auto``) or on a local
  one started for the run (``workers`` CPUs) and shut down after it; each job asks for its
  :class:`univ.jobs.Resources`; Ray resubmits the job of a worker that dies.

Every executor runs :func:`execute` on its workers: import the job's function, call it with torch's thread
count set as in the driver, write the result as an integrity-checked shard. Ray is imported only when a Ray
executor starts, never by ``import univ``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..registry import Registry


def execute(fn: str, kwargs: dict, shard: str, meta: dict, threads: int, cache: str | None = None) -> dict:
    """Run one job on a worker: ``fn(**kwargs)``, its result written atomically as the shard ``shard``; with the
    driver's torch thread count (the same count gives the same floats) and cache folder ($UNIV_CACHE)."""
    import torch

    from ..integrity import write_entry
    from .job import resolve_function

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    before = os.environ.get("UNIV_CACHE")
    if cache is not None:
        os.environ["UNIV_CACHE"] = cache
    try:
        t0 = time.perf_counter()
        result = resolve_function(fn)(**kwargs)
        seconds = time.perf_counter() - t0
    finally:
        if before is None:
            os.environ.pop("UNIV_CACHE", None)
        else:
            os.environ["UNIV_CACHE"] = before
    write_entry(Path(shard), lambda folder: _fill(folder, result), meta={**meta, "seconds": seconds})
    return {"seconds": seconds, "pid": os.getpid()}


def warm() -> int:
    """Import what jobs need (torch, univ's models, SAEs, similarity and shard writing) on a fresh worker, so
    that the first real jobs do not each pay for it; returns the worker's pid."""
    import importlib

    for module in ("torch", "univ.integrity", "univ.jobs.codec", "univ.models", "univ.sae", "univ.similarity"):
        importlib.import_module(module)
    return os.getpid()


def _fill(folder: Path, result) -> None:
    from .codec import write_result

    write_result(folder, result)


class WorkerDied(RuntimeError):
    """The worker process running a job died (killed, out of memory, os._exit): the job is retried."""


class Executor:
    """Runs job calls: ``submit`` returns a handle; ``wait`` blocks until at least one handle is done and
    returns (handle, outcome) pairs, the outcome the worker's info dict or the exception the job raised."""

    name = "executor"
    capacity = 1
    """Jobs held in flight at once."""

    def __init__(self, workers: int | None = None, address: str | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers: expected an int >= 1 or None (the cores here), got {workers!r}")
        self.workers = workers or os.cpu_count() or 1
        self.address = address
        self.started = False

    def start(self) -> None:
        self.started = True

    def submit(self, call: dict, resources):
        raise NotImplementedError

    def wait(self, handles: list) -> list[tuple[object, object]]:
        raise NotImplementedError

    def revive(self) -> None:
        """Replace workers that died (after a wait that reported their jobs failed)."""

    def close(self) -> None:
        self.started = False

    def describe(self) -> str:
        return self.name


EXECUTORS = Registry("executor")


@EXECUTORS.register("inprocess")
class InProcess(Executor):
    """One job after the other in this process (the default)."""

    name = "inprocess"

    def __init__(self, workers: int | None = None, address: str | None = None):
        super().__init__(1, address)
        self._calls: dict[int, dict] = {}
        self._next = 0

    def submit(self, call: dict, resources):
        self._next += 1
        self._calls[self._next] = call
        return self._next

    def wait(self, handles: list):
        h = handles[0]
        call = self._calls.pop(h)
        try:
            return [(h, execute(**call))]
        except Exception as e:  # the job's error is its outcome; KeyboardInterrupt still stops the driver
            return [(h, e)]


@EXECUTORS.register("process")
class ProcessPool(Executor):
    """A pool of ``workers`` local processes (spawned: no state of the driver leaks into them)."""

    name = "process"

    def start(self) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"))
        self.capacity = 2 * self.workers
        self._broken = False
        super().start()

    def submit(self, call: dict, resources):
        return self._pool.submit(execute, **call)

    def wait(self, handles: list):
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait_futures(handles, return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            try:
                out.append((f, f.result()))
            except BrokenProcessPool as e:
                self._broken = True
                out.append((f, WorkerDied(f"a worker process died ({e})")))
            except Exception as e:
                out.append((f, e))
        return out

    def revive(self) -> None:
        if self._broken:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.start()

    def close(self) -> None:
        if self.started:
            self._pool.shutdown(wait=True, cancel_futures=True)
        super().close()

    def describe(self) -> str:
        return f"process pool of {self.workers} workers"


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ray tasks: on the cluster at ``address``, on the Ray session this process already holds, or on a local
    cluster of ``workers`` CPUs started for the run (and shut down after it)."""

    name = "ray"

    def start(self) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("executor: 'ray' needs Ray (pip install 'univ[ray]')") from None
        self._own = not ray.is_initialized()
        if self._own:
            kw = {"address": self.address} if self.address else {"num_cpus": self.workers}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kw)
        self._ray = ray
        self._remote = ray.remote(execute)
        self.capacity = 1 << 30  # Ray schedules by each job's resources
        # every CPU's worker imports torch and univ now (seconds each), while the driver prepares its first grid
        cpus = int(min(ray.cluster_resources().get("CPU", 1), 64))
        self._warming = [ray.remote(warm).options(num_cpus=1).remote() for _ in range(max(1, cpus))]
        super().start()

    def submit(self, call: dict, resources):
        r = resources
        opts = {"num_cpus": r.cpus, "num_gpus": r.gpus, "max_retries": 3}  # max_retries: a dead worker's job reruns
        if r.memory_mb:
            opts["memory"] = r.memory_mb * 2**20
        return self._remote.options(**opts).remote(**call)

    def wait(self, handles: list):
        done, _ = self._ray.wait(handles, num_returns=1)
        out = []
        for ref in done:
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as e:
                out.append((ref, RuntimeError(f"{type(e).__name__}: {str(e).strip().splitlines()[-1]}")))
        return out

    def close(self) -> None:
        if self.started and self._own:
            self._ray.shutdown()
        super().close()

    def describe(self) -> str:
        return f"ray ({self.address or f'local, {self.workers} CPUs'})"


def make_executor(name: str = "inprocess", workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name (``inprocess``, ``process``, ``ray``); ``address`` only for ray."""
    cls = EXECUTORS[name]
    if address is not None and name != "ray":
        raise ValueError(f"address: only the ray executor connects to a cluster; got address={address!r} with "
                         f"executor={name!r}")
    return cls(workers=workers, address=address)


_CURRENT: list[Executor] = []


def current_executor() -> Executor:
    """The executor grids run on: the innermost :func:`use_executor`, else a fresh in-process one."""
    return _CURRENT[-1] if _CURRENT else InProcess()


@contextlib.contextmanager
def use_executor(executor: Executor | str) -> Iterator[Executor]:
    """Run every grid inside the block on ``executor`` (an Executor or a name); it is closed at the end."""
    ex = make_executor(executor) if isinstance(executor, str) else executor
    _CURRENT.append(ex)
    try:
        yield ex
    finally:
        _CURRENT.pop()
        ex.close()

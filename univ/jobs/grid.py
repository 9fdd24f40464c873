"""Running a grid of jobs: shards, the manifest, reruns and retries.

Each job's result is a shard, ``$UNIV_CACHE/jobs/shards/<function>-<key>/``, written by the worker that ran it
through :mod:`univ.integrity` (temporary folder, manifest of hashes last, rename), so a reader sees a whole
shard or none, and two workers never write one file. Only the driver writes the grid's manifest,
``$UNIV_CACHE/jobs/grids/<desc>-<hash of the job keys>.json`` (replaced atomically after every change): each
job's label, key, status (``done``, ``cached``, ``failed``, ``pending``), attempts and last error. Rerunning a
grid skips every job whose shard verifies, and runs the missing and failed ones; a failed job is retried
``retries`` times before it counts as failed. The results come back in the order of the jobs, read from the
verified shards (the merge), whichever executor ran them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from .job import Job


class JobError(RuntimeError):
    """Jobs of a grid still failed after their retries (the manifest lists them; a rerun retries only them)."""


class JobWarning(UserWarning):
    """A job failed and is retried."""


class GridRun(NamedTuple):
    """What :func:`run_grid` returns."""

    results: list
    """Each job's result, in the order of the jobs."""
    keys: list[str]
    ran: int
    """Jobs run now (each counted once, however many attempts it took)."""
    cached: int
    """Jobs whose shard was already there."""
    retried: int
    """Attempts that failed and were retried."""
    manifest: Path


def jobs_dir() -> Path:
    from ..utils import cache_dir

    return cache_dir() / "jobs"


def shard_path(job: Job, key: str | None = None) -> Path:
    """Where ``job``'s result shard lives."""
    return jobs_dir() / "shards" / f"{job.fn.split(':')[1].split('.')[-1]}-{key or job.digest()}"


def _write_manifest(path: Path, desc: str, executor: str, jobs: dict[str, Job], state: dict) -> None:
    from ..integrity import write_file

    body = {"grid": desc, "executor": executor, "n_jobs": len(jobs),
            "counts": {s: sum(1 for v in state.values() if v["status"] == s) for s in
                       ("done", "cached", "failed", "pending")},
            "jobs": {k: {"label": jobs[k].label, "fn": jobs[k].fn, "shard": str(shard_path(jobs[k], k)), **state[k]}
                     for k in jobs}}
    write_file(path, lambda tmp: tmp.write_text(json.dumps(body, indent=1)))


def run_grid(jobs: Sequence[Job], *, executor=None, retries: int = 2, desc: str = "jobs",
             progress: bool = True) -> GridRun:
    """Run every job of ``jobs`` not already done on ``executor`` (default: :func:`current_executor`) and
    return their results in order (a :class:`GridRun`). A failed attempt is retried up to ``retries`` times;
    jobs that still fail raise :class:`JobError` after every other job has finished (their shards kept)."""
    from tqdm.auto import tqdm

    from ..integrity import read_entry
    from ..utils import cache_dir, stable_hash
    from .codec import read_result
    from .executors import Executor, WorkerDied, current_executor

    jobs = list(jobs)
    for i, j in enumerate(jobs):
        if not isinstance(j, Job):
            raise TypeError(f"jobs: entry {i} is {type(j).__name__}, expected univ.jobs.Job")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries: expected an int >= 0, got {retries!r}")
    ex = executor if executor is not None else current_executor()
    if not isinstance(ex, Executor):
        raise TypeError(f"executor: expected a univ.jobs executor, got {type(ex).__name__}")
    keys = [j.digest() for j in jobs]
    unique = dict(zip(keys, jobs))  # one job, asked for twice, runs once
    manifest = jobs_dir() / "grids" / f"{desc.replace('/', '_')}-{stable_hash(sorted(unique), length=16)}.json"
    reuse = os.environ.get("UNIV_NO_CACHE") != "1"
    results, state = {}, {}
    for k, j in unique.items():
        hit = read_entry(shard_path(j, k), read_result, "job shard") if reuse else None
        if hit is not None:
            results[k] = hit
        state[k] = {"status": "cached" if hit is not None else "pending", "attempts": 0, "error": None}
    # the costliest first (stable: equal costs keep the given order); results still come back in order
    todo = deque(sorted((k for k in unique if k not in results), key=lambda k: -unique[k].cost))
    n_cached, retried = len(results), 0
    _write_manifest(manifest, desc, ex.describe(), unique, state)
    bar = tqdm(total=len(unique), initial=n_cached, desc=desc, disable=not progress)
    threads, cache = _threads(), str(cache_dir())
    inflight: dict = {}
    suspects: set = set()
    try:
        if todo and not ex.started:
            ex.start()
        while todo or inflight:
            while todo and len(inflight) < ex.capacity:
                if todo[0] in suspects and inflight:
                    break  # a suspect runs alone, so that a worker's death is blamed on the job that caused it
                k = todo.popleft()
                j = unique[k]
                state[k]["attempts"] += 1
                call = {"fn": j.fn, "kwargs": j.kwargs, "shard": str(shard_path(j, k)),
                        "meta": {"job": j.label, "fn": j.fn, "key": k}, "threads": threads, "cache": cache}
                inflight[ex.submit(call, j.resources)] = k
                if k in suspects:
                    break
            crowded = len(inflight) > 1
            for handle, outcome in ex.wait(list(inflight)):
                k = inflight.pop(handle)
                if isinstance(outcome, WorkerDied) and crowded and k not in suspects:
                    # a dead worker breaks the whole pool: every job it held is rerun alone, and not charged
                    state[k]["attempts"] -= 1
                    suspects.add(k)
                    todo.appendleft(k)
                    continue
                if not isinstance(outcome, BaseException):
                    hit = read_entry(shard_path(unique[k], k), read_result, "job shard")
                    if hit is None:
                        outcome = RuntimeError(f"the worker reported success but its shard "
                                               f"{shard_path(unique[k], k)} is missing or corrupt")
                if isinstance(outcome, BaseException):
                    error = " ".join(f"{type(outcome).__name__}: {outcome}".split())  # one line
                    state[k]["error"] = error
                    if state[k]["attempts"] <= retries:
                        retried += 1
                        warnings.warn(f"job {unique[k].label} ({k}) failed (attempt {state[k]['attempts']} of "
                                      f"{retries + 1}): {error}; retrying", JobWarning, stacklevel=2)
                        todo.append(k)
                    else:
                        state[k]["status"] = "failed"
                        bar.update(1)
                else:
                    results[k] = hit
                    state[k]["status"] = "done"
                    bar.update(1)
                _write_manifest(manifest, desc, ex.describe(), unique, state)
            ex.revive()
    finally:
        bar.close()
    failed = [k for k in unique if state[k]["status"] == "failed"]
    if failed:
        lines = "; ".join(f"{unique[k].label}: {state[k]['error']}" for k in failed[:5])
        raise JobError(f"{len(failed)} of {len(unique)} jobs of {desc!r} failed after {retries + 1} attempts "
                       f"({lines}); the manifest {manifest} lists them; a rerun runs only those")
    return GridRun([results[k] for k in keys], keys, len(unique) - n_cached, n_cached, retried, manifest)


def run_jobs(jobs: Sequence[Job], **kwargs) -> list:
    """:func:`run_grid`'s results only: each job's result, in the order of the jobs."""
    return run_grid(jobs, **kwargs).results


def _threads() -> int:
    import torch

    return torch.get_num_threads()

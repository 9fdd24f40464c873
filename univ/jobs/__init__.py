"""The job grid: every cell of univ's grids (zoo members, captures, SAEs, similarity chunks, attacks) is a job,
keyed by a hash of what determines its result, written as an integrity-checked shard, and run by an executor
(in-process, a local process pool, or Ray), so that a grid resumes where it stopped and scales to a cluster.

    jobs = [Job("mypkg.work:fit", {"layer": name, "acts": acts[name]}) for name in acts]
    results = run_jobs(jobs)                          # in this process, or:
    with use_executor(make_executor("ray", address="auto")):
        results = run_jobs(jobs)                      # the same results, from Ray workers

Importing this package imports neither torch nor Ray (the CLI checks ``--executor`` before any work).
"""

from .executors import EXECUTORS, Executor, WorkerDied, current_executor, execute, make_executor, use_executor
from .grid import GridRun, JobError, JobWarning, jobs_dir, run_grid, run_jobs, shard_path
from .job import Job, Resources, resolve_function

__all__ = ["EXECUTORS", "Executor", "GridRun", "Job", "JobError", "JobWarning", "Resources", "WorkerDied",
           "current_executor", "execute", "jobs_dir", "make_executor", "resolve_function", "run_grid", "run_jobs",
           "shard_path", "use_executor"]

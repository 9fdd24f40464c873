"""The main job's grid on 2 Ray workers against in-process, one run, and Ray's per-job overhead.

    python benchmarks/grid.py [--full] [--jobs 40]

1. ``univ run universality --quick`` (``--full``: the default sizes) twice, each with a fresh cache (every job
   runs): in this process, then with ``--executor ray`` on a local Ray cluster of 2 CPUs (started before and
   timed apart). Both use one torch thread per process (the CLI's default; OMP/MKL pinned to 1). The ratio is
   in-process time / Ray time; the run folders' tables are checked equal.
2. The machine's ceiling: 8 jobs of fixed CPU work (univ.jobs.testing:spin, pure Python, about a second each on
   an idle core) in-process and on the 2 Ray workers: the best ratio this machine gives 2 workers now (on a
   shared machine, other sessions' load takes its part of both cores).
3. Per-job overhead: ``--jobs`` trivial jobs (univ.jobs.testing:square) in-process and on Ray; the overhead per
   job is (Ray time - in-process time) / jobs, the cost of submitting, scheduling, shipping arguments and
   writing and reading a shard through Ray.

Results are printed and written to benchmarks/results/grid.json (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def universality(executor: str, root: Path, full: bool) -> tuple[float, dict]:
    import pandas as pd

    from univ.cli import main

    os.environ["UNIV_CACHE"] = str(root / f"cache-{executor}")
    out = root / f"runs-{executor}"
    t0 = time.perf_counter()
    code = main(["run", "universality", *([] if full else ["--quick"]), "--out", str(out), "--executor", executor])
    seconds = time.perf_counter() - t0
    if code != 0:
        sys.exit(f"univ run universality --executor {executor} exited {code}")
    (folder,) = out.iterdir()
    return seconds, {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}


def trivial(executor, n: int, root: Path) -> float:
    from univ.jobs import Job, run_grid

    os.environ["UNIV_CACHE"] = str(root / f"cache-trivial-{executor.name}")
    jobs = [Job("univ.jobs.testing:square", {"x": i}) for i in range(n)]
    t0 = time.perf_counter()
    run = run_grid(jobs, executor=executor, progress=False)
    assert run.ran == n
    return time.perf_counter() - t0


def ceiling(executor, root: Path, n: int = 8, iterations: int = 20_000_000) -> float:
    from univ.jobs import Job, run_grid

    os.environ["UNIV_CACHE"] = str(root / f"cache-spin-{executor.name}")
    jobs = [Job("univ.jobs.testing:spin", {"iterations": iterations, "tag": i}) for i in range(n)]
    t0 = time.perf_counter()
    assert run_grid(jobs, executor=executor, progress=False).ran == n
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the default sizes instead of --quick")
    ap.add_argument("--jobs", type=int, default=40, help="trivial jobs for the overhead measurement")
    args = ap.parse_args()
    import pandas as pd
    import ray
    import torch

    from univ.jobs import make_executor

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="univ-grid-bench-"))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(HERE.parent)}})  # the workers import this checkout's univ
    ray_start = time.perf_counter() - t0
    ray.get(ray.remote(lambda: 0).remote())  # the first worker is up
    ray_ready = time.perf_counter() - t0
    inproc_s, inproc = universality("inprocess", root, args.full)
    ray_s, on_ray = universality("ray", root, args.full)
    equal = all(on_ray[k].equals(v) for k, v in inproc.items()) and set(on_ray) == set(inproc)
    spin_in = ceiling(make_executor("inprocess"), root)
    spin_ray = ceiling(make_executor("ray"), root)
    triv_in = trivial(make_executor("inprocess"), args.jobs, root)
    triv_ray = trivial(make_executor("ray"), args.jobs, root)
    ray.shutdown()
    result = {
        "grid": "universality" + ("" if args.full else " --quick"), "torch_threads": 1,
        "cores": os.cpu_count(), "load_average": os.getloadavg(), "ray": ray.__version__, "torch": torch.__version__,
        "ray_workers": 2, "ray_start_s": round(ray_start, 2), "ray_first_task_s": round(ray_ready, 2),
        "inprocess_s": round(inproc_s, 1), "ray_s": round(ray_s, 1), "speedup": round(inproc_s / ray_s, 2),
        "speedup_with_start": round(inproc_s / (ray_s + ray_ready), 2), "tables_equal": bool(equal),
        "ceiling_inprocess_s": round(spin_in, 1), "ceiling_ray_s": round(spin_ray, 1),
        "ceiling_speedup": round(spin_in / spin_ray, 2),
        "trivial_jobs": args.jobs, "trivial_inprocess_s": round(triv_in, 2), "trivial_ray_s": round(triv_ray, 2),
        "ray_overhead_per_job_ms": round(1000 * (triv_ray - triv_in) / args.jobs, 1),
        "inprocess_per_job_ms": round(1000 * triv_in / args.jobs, 1),
    }
    print(pd.Series(result).to_string())
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "grid.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The Ray executor on a local cluster of 2 CPUs: the same results as in this process, a failed job and a dead
worker's job retried, and `univ run universality --quick --executor ray` giving the in-process tables."""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from univ.jobs import Job, JobWarning, make_executor, run_grid

ray = pytest.importorskip("ray")
T = "univ.jobs.testing"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


def test_ray_gives_the_in_process_results(cluster, tmp_path, monkeypatch):
    import torch

    jobs = [Job(f"{T}:square", {"x": i, "tensor": torch.randn(4, generator=torch.Generator().manual_seed(i))})
            for i in range(6)]
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path / "a"))
    here = run_grid(jobs, progress=False).results
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path / "b"))
    there = run_grid(jobs, executor=make_executor("ray"), progress=False)
    assert there.ran == 6
    assert [r["x2"] for r in there.results] == [r["x2"] for r in here]
    assert all(torch.equal(a["t2"], b["t2"]) for a, b in zip(here, there.results))


def test_a_job_that_fails_once_is_retried_on_ray(cluster, tmp_path):
    jobs = [Job(f"{T}:fail_once", {"x": i, "marker": str(tmp_path / f"m{i}")}) for i in range(3)]
    with pytest.warns(JobWarning, match="planned failure"):
        run = run_grid(jobs, executor=make_executor("ray"), progress=False)
    assert run.results == [0, -1, -2] and run.retried == 3


def test_a_killed_worker_job_is_rerun_on_ray(cluster, tmp_path):
    jobs = [Job(f"{T}:die_once", {"x": i, "marker": str(tmp_path / f"d{i}")}) for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run_grid(jobs, executor=make_executor("ray"), progress=False).results == [0, -1]


@pytest.mark.slow  # two quick runs of the main job: 5-12 minutes on the shared 2-core machine
def test_universality_on_ray_gives_the_in_process_tables(cluster, tmp_path, monkeypatch):
    from univ.cli import main

    tables = {}
    for executor in ("inprocess", "ray"):
        monkeypatch.setenv("UNIV_CACHE", str(tmp_path / f"cache-{executor}"))  # nothing shared between the runs
        out = tmp_path / executor
        assert main(["run", "universality", "--quick", "--out", str(out), "--executor", executor]) == 0
        (folder,) = out.iterdir()
        tables[executor] = {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}
    assert set(tables["ray"]) == set(tables["inprocess"]) and "similarity" in tables["ray"]
    for name, frame in tables["inprocess"].items():
        pd.testing.assert_frame_equal(tables["ray"][name], frame, check_exact=True, obj=name)
    manifests = list((tmp_path / "cache-ray" / "jobs" / "grids").glob("*.json"))
    assert {m.name.split("-")[0] for m in manifests} >= {"zoo", "capture", "similarity", "SAEs", "PGD"}


DRIVER = """
from univ.jobs import Job, make_executor, run_jobs
jobs = [Job("univ.jobs.testing:record", {{"x": i, "log": {log!r}, "seconds": 0.5}}) for i in range(8)]
print(run_jobs(jobs, executor=make_executor("ray", workers=2), progress=False))
"""


@pytest.mark.slow  # two drivers, each starting a local cluster: 40-60 s
def test_killing_a_ray_driver_and_rerunning_finishes_only_the_missing_jobs(tmp_path):
    log, cache = tmp_path / "log", tmp_path / "cache"
    code = DRIVER.format(log=str(log))
    env = {**os.environ, "PYTHONPATH": str(REPO), "UNIV_CACHE": str(cache), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    shards = cache / "jobs" / "shards"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(shards.glob("record-*"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, 9)  # the driver and the local cluster it started
    proc.wait()
    time.sleep(5)  # Ray's workers outlive their driver by a moment: the jobs they were running may still finish
    finished = len(list(shards.glob("record-*")))
    assert 3 <= finished < 8
    log.unlink()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         check=True, timeout=600)
    assert out.stdout.strip().splitlines()[-1] == str(list(range(1, 9)))
    assert len(log.read_text().split()) == 8 - finished

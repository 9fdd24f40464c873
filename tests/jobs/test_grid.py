"""The job grid in this process: known results, shards and the manifest, reruns, retries, bad input."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.named_errors import assert_named_error
from univ.integrity import CacheWarning
from univ.jobs import Job, JobError, JobWarning, Resources, make_executor, run_grid, run_jobs, shard_path
from univ.jobs.codec import read_result, write_result

T = "univ.jobs.testing"
REPO = Path(__file__).resolve().parents[2]


def squares(n):
    return [Job(f"{T}:square", {"x": i, "tensor": torch.arange(3.0) * i}) for i in range(n)]


def test_results_come_back_in_order_and_a_rerun_runs_nothing():
    first = run_grid(squares(5), progress=False)
    assert [r["x2"] for r in first.results] == [0, 1, 4, 9, 16]
    assert torch.equal(first.results[3]["t2"], torch.tensor([0.0, 6.0, 12.0]))
    assert (first.ran, first.cached, first.retried) == (5, 0, 0)
    again = run_grid(squares(5), progress=False)
    assert (again.ran, again.cached) == (0, 5)
    assert [r["x2"] for r in again.results] == [0, 1, 4, 9, 16]
    manifest = json.loads(again.manifest.read_text())
    assert manifest["counts"] == {"done": 0, "cached": 5, "failed": 0, "pending": 0}
    assert all(Path(j["shard"]).is_dir() for j in manifest["jobs"].values())


def test_a_grown_grid_runs_only_the_new_jobs():
    run_grid(squares(3), progress=False)
    more = run_grid(squares(5), progress=False)
    assert (more.ran, more.cached) == (2, 3)


def test_a_job_asked_for_twice_runs_once(tmp_path):
    log = tmp_path / "log"
    jobs = [Job(f"{T}:record", {"x": 1, "log": str(log)})] * 2 + [Job(f"{T}:record", {"x": 2, "log": str(log)})]
    assert run_jobs(jobs, progress=False) == [2, 2, 3]
    assert sorted(log.read_text().split()) == ["1", "2"]


def test_the_key_follows_the_contents_of_tensors_and_weights():
    a = Job(f"{T}:square", {"x": 1, "tensor": torch.ones(3)})
    assert a.digest() == Job(f"{T}:square", {"x": 1, "tensor": torch.ones(3)}).digest()
    assert a.digest() != Job(f"{T}:square", {"x": 1, "tensor": torch.ones(3) * 2}).digest()
    net = torch.nn.Linear(2, 2)
    k1 = Job(f"{T}:square", {"x": 1, "tensor": net}).digest()
    with torch.no_grad():
        net.weight += 1
    assert Job(f"{T}:square", {"x": 1, "tensor": net}).digest() != k1
    assert Job(f"{T}:square", {"x": 1}, key={"cache": "abc"}).digest() != Job(f"{T}:square", {"x": 1}).digest()


def test_a_functions_job_version_is_part_of_the_key_and_its_absence_keeps_the_old_key(monkeypatch):
    """A function whose numbers change bumps its ``job_version``: its old shards are recomputed, and the
    shards of functions without one (trained models) keep their keys."""
    from univ.jobs import testing
    from univ.jobs.job import KEY_VERSION, describe
    from univ.utils import stable_hash

    job = Job(f"{T}:square", {"x": 1})
    old = job.digest()
    assert old == stable_hash({"fn": job.fn, "what": describe({"x": 1}), "v": KEY_VERSION}, length=20)
    monkeypatch.setattr(testing.square, "job_version", 2, raising=False)
    v2 = job.digest()
    monkeypatch.setattr(testing.square, "job_version", 3, raising=False)
    assert len({old, v2, job.digest()}) == 3


def test_a_failed_job_is_retried_and_the_run_completes(tmp_path):
    jobs = [Job(f"{T}:fail_once", {"x": i, "marker": str(tmp_path / f"m{i}")}) for i in range(3)]
    with pytest.warns(JobWarning, match="fail_once.*attempt 1 of 3.*planned failure"):
        run = run_grid(jobs, progress=False)
    assert run.results == [0, -1, -2]
    assert run.retried == 3


def test_jobs_that_keep_failing_stop_the_grid_after_the_others_and_a_rerun_runs_only_them(tmp_path):
    marker = tmp_path / "m"
    jobs = squares(3) + [Job(f"{T}:fail_once", {"x": 7, "marker": str(marker)}, name="flaky")]
    with pytest.raises(JobError, match=r"1 of 4 jobs .* failed after 1 attempts \(flaky: RuntimeError"):
        run_grid(jobs, retries=0, progress=False)
    manifest = json.loads(sorted((shard_path(jobs[0]).parents[1] / "grids").glob("*.json"))[0].read_text())
    assert manifest["counts"] == {"done": 3, "cached": 0, "failed": 1, "pending": 0}
    again = run_grid(jobs, retries=0, progress=False)  # the marker exists now: the job succeeds
    assert (again.ran, again.cached) == (1, 3)
    assert again.results[-1] == -7


def test_a_corrupt_shard_is_announced_and_recomputed():
    jobs = squares(2)
    run_grid(jobs, progress=False)
    (shard_path(jobs[1]) / "result.json").write_text('{"x2": 99}')
    with pytest.warns(CacheWarning, match="job shard .* is not usable: result.json has 10 bytes"):
        run = run_grid(jobs, progress=False)
    assert (run.ran, run.cached) == (1, 1)
    assert run.results[1]["x2"] == 1


def test_no_cache_reruns_every_job(monkeypatch):
    run_grid(squares(2), progress=False)
    monkeypatch.setenv("UNIV_NO_CACHE", "1")
    assert run_grid(squares(2), progress=False).ran == 2


def test_results_round_trip_through_a_shard(tmp_path):
    frame = pd.DataFrame({"name": ["a", "b", "c"], "value": [0.1, np.nan, 1 / 3], "n": [1, 2, 3],
                          "ok": [True, False, True]})
    frame.attrs["baseline"] = "permutation"
    view = torch.arange(12.0).reshape(3, 4).T  # not contiguous
    result = {"frame": frame, "view": view, "array": np.arange(4), "ids": {1: "one", 2: "two"}, "pair": (1, "x"),
              "inf": float("-inf"), "nested": [{"__tensor__": "a key that looks like a marker"}], "none": None}
    write_result(tmp_path, result)
    back = read_result(tmp_path)
    pd.testing.assert_frame_equal(back["frame"], frame)
    assert back["frame"].attrs == {"baseline": "permutation"}
    assert torch.equal(back["view"], view) and back["view"].is_contiguous()
    assert np.array_equal(back["array"], np.arange(4)) and back["array"].dtype == np.arange(4).dtype
    assert back["ids"] == {1: "one", 2: "two"} and back["pair"] == (1, "x") and back["inf"] == float("-inf")
    assert back["nested"] == result["nested"] and back["none"] is None


def test_a_result_that_cannot_be_stored_names_its_type(tmp_path):
    assert_named_error(lambda: write_result(tmp_path, {"f": object()}), TypeError, r"^result: .*builtins\.object")


@pytest.mark.parametrize("call, exc, fragment", [
    (lambda: Job("univ.jobs.testing.square", {}), ValueError, r"^fn: expected 'module:function'"),
    (lambda: Job(f"{T}:square", [1]), TypeError, r"^kwargs: expected a dict"),
    (lambda: Job(f"{T}:square", {}, resources={"cpus": 1}), TypeError, r"^resources: expected univ.jobs.Resources"),
    (lambda: Resources(cpus=-1), ValueError, r"^cpus: expected a number >= 0, got -1"),
    (lambda: Resources(memory_mb=0), ValueError, r"^memory_mb: expected None or an int >= 1, got 0"),
    (lambda: make_executor("slurm"), ValueError, r"^unknown executor 'slurm'.*'inprocess', 'process', 'ray'"),
    (lambda: make_executor("process", address="auto"), ValueError, r"^address: only the ray executor"),
    (lambda: make_executor("process", workers=0), ValueError, r"^workers: expected an int >= 1"),
    (lambda: run_grid(squares(1), retries=-1), ValueError, r"^retries: expected an int >= 0, got -1"),
    (lambda: run_grid([1]), TypeError, r"^jobs: entry 0 is int, expected univ.jobs.Job"),
    (lambda: run_grid(squares(1), executor="ray"), TypeError, r"^executor: expected a univ.jobs executor"),
])
def test_bad_input_is_named(call, exc, fragment):
    assert_named_error(call, exc, fragment)


def test_a_job_naming_a_missing_function_fails_with_its_name():
    with pytest.raises(JobError, match=r"ValueError: fn: module 'univ.jobs.testing' has no 'nope'"):
        run_grid([Job(f"{T}:nope", {})], retries=0, progress=False)


def test_importing_univ_imports_neither_ray_nor_torch_for_the_jobs_layer():
    code = ("import sys, univ, univ.jobs, univ.cli; univ.cli.check_executor('ray', None, 2); "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]"


DRIVER = """
import sys
from univ.jobs import Job, run_jobs
jobs = [Job("univ.jobs.testing:record", {{"x": i, "log": {log!r}, "seconds": 0.4}}) for i in range(8)]
print(run_jobs(jobs, executor=__import__("univ.jobs").jobs.make_executor({executor!r}, **{kw}), progress=False))
"""


@pytest.mark.parametrize("executor, kw", [("inprocess", {}), ("process", {"workers": 2})])
def test_killing_the_driver_mid_run_and_rerunning_finishes_only_the_missing_jobs(tmp_path, own_cache, executor, kw):
    log = tmp_path / "log"
    code = DRIVER.format(log=str(log), executor=executor, kw=kw)
    env = {**os.environ, "PYTHONPATH": str(REPO), "UNIV_CACHE": str(own_cache)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    shards = own_cache / "jobs" / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(shards.glob("record-*"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, 9)  # the driver and its workers, as a lost node or Ctrl-C would
    proc.wait()
    done = {int(float(p)) for p in log.read_text().split()}
    finished = len(list(shards.glob("record-*")))
    assert 3 <= finished < 8, f"the driver finished {finished} jobs before it was killed"
    log.unlink()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(list(range(1, 9)))
    rerun = [int(float(p)) for p in log.read_text().split()]
    assert len(rerun) == 8 - finished  # the finished ones are not run again
    assert len(set(rerun)) == len(rerun) and set(rerun) | done == set(range(8))


def test_costliest_jobs_start_first_and_results_keep_their_order(tmp_path):
    log = tmp_path / "order.log"
    costs = [0.1, 5.0, 1.0, 5.0, 0.0]
    jobs = [Job(f"{T}:record", {"x": i, "log": str(log)}, cost=c) for i, c in enumerate(costs)]
    run = run_grid(jobs, progress=False)
    assert [int(line) for line in log.read_text().split()] == [1, 3, 2, 0, 4]  # by cost, ties as given
    assert run.results == [1, 2, 3, 4, 5]
    assert Job(f"{T}:record", {"x": 0, "log": str(log)}, cost=9).digest() == jobs[0].digest()  # not the key


@pytest.mark.parametrize("cost", [-1, float("nan"), "big", True])
def test_bad_cost_is_named(cost):
    assert_named_error(lambda: Job(f"{T}:square", {"x": 1}, cost=cost), ValueError, r"^cost: expected a number >= 0")

"""`--executor`, `--address`, `--workers` and `--device` are checked before any work: exit 2, one line, nothing
written."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from univ.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("argv, fragment", [
    (["--executor", "slurm"], "--executor: unknown executor 'slurm'; choose one of ['inprocess', 'process', 'ray']"),
    (["--address", "auto"], "--address: only --executor ray connects to a cluster, got --executor inprocess"),
    (["--executor", "ray", "--address", " "], "--address: expected a Ray address"),
    (["--executor", "process", "--workers", "0"], "--workers: must be >= 1, got 0"),
    (["--workers", "2"], "--workers: needs --executor process or ray"),
])
def test_bad_executor_settings_exit_2_naming_the_flag(tmp_path, capsys, argv, fragment):
    assert main(["run", "universality", "--quick", "--out", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_compare_takes_the_executor_flags(tmp_path, capsys):
    assert main(["compare", "zoo:mlp", "--executor", "slurm", "--out", str(tmp_path)]) == 2
    assert "--executor: unknown executor 'slurm'" in capsys.readouterr().err


def test_ray_without_ray_installed_is_named(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["run", "universality", "--quick", "--executor", "ray", "--out", str(tmp_path / "r")]) == 2
    assert "--executor: ray needs Ray, which is not installed here (pip install 'univ[ray]')" in capsys.readouterr().err


def test_a_missing_gpu_exits_2_at_once_naming_the_devices_here(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "univ.cli", "run", "universality", "--device", "cuda", "--out",
                          str(tmp_path / "runs")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.perf_counter() - t0
    assert out.returncode == 2, out.stderr
    assert "--device: 'cuda' is not available" in out.stderr and "devices here: ['cpu']" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    print(f"exit 2 after {seconds:.2f} s")  # the issue asks for under 2 s; a timing assert would be flaky here


def test_jobs_that_keep_failing_end_the_command_with_one_line_and_exit_1(tmp_path, capsys, monkeypatch):
    import analyses.universality as U
    from univ.jobs import JobError

    def fail(cfg):
        raise JobError("1 of 4 jobs of 'zoo' failed after 3 attempts (cnn-s0: RuntimeError: out of memory)")

    monkeypatch.setattr(U, "run", fail)
    assert main(["run", "universality", "--quick", "--out", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "univ: error: 1 of 4 jobs of 'zoo' failed after 3 attempts (cnn-s0: RuntimeError: out of memory)"
    assert not (tmp_path / "runs").exists()

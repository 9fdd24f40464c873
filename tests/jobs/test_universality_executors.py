"""`univ run universality --quick --executor process` gives the in-process tables, and a rerun reads every
job's shard instead of running it."""

import json

import pandas as pd
import pytest

from univ.cli import main


@pytest.mark.slow  # two quick runs of the main job: a few minutes on a shared 2-core machine
def test_process_pool_gives_the_in_process_tables_and_a_rerun_runs_no_job(tmp_path, monkeypatch):
    tables = {}
    for executor in ("inprocess", "process"):
        monkeypatch.setenv("UNIV_CACHE", str(tmp_path / f"cache-{executor}"))  # nothing shared between the runs
        out = tmp_path / executor
        extra = ["--workers", "2"] if executor == "process" else []
        assert main(["run", "universality", "--quick", "--out", str(out), "--executor", executor, *extra]) == 0
        (folder,) = out.iterdir()
        tables[executor] = {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}
    for name, frame in tables["inprocess"].items():
        pd.testing.assert_frame_equal(tables["process"][name], frame, check_exact=True, obj=name)
    assert main(["run", "universality", "--quick", "--out", str(tmp_path / "again"), "--executor", "process",
                 "--workers", "2"]) == 0
    for manifest in (tmp_path / "cache-process" / "jobs" / "grids").glob("*.json"):
        counts = json.loads(manifest.read_text())["counts"]
        assert counts["done"] == 0 and counts["failed"] == 0 and counts["cached"] > 0, manifest.name

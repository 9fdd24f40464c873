"""The command line: analyses found by entry point, flags derived from Config, settings checked before work,
run folders written atomically."""

import json

import pandas as pd
import pytest

from univ import report
from univ.cli import main

TOY = '''
"""A toy analysis registered by a test package."""
from dataclasses import dataclass
from typing import ClassVar

from univ.config import AnalysisConfig, check_range


@dataclass(frozen=True)
class Config(AnalysisConfig):
    """Settings of the toy."""

    QUICK: ClassVar[dict] = {"n": 3}
    n: int = 10
    """How many rows."""
    fail: bool = False
    """Raise inside run (a crash after the settings were accepted)."""

    def validate(self):
        check_range(self, "n", low=1)


def run(cfg):
    import pandas as pd

    from univ.report import Report

    if cfg.fail:
        raise RuntimeError("boom")
    r = Report("toy_analysis", summary="rows")
    r.add_table("rows", pd.DataFrame({"i": list(range(cfg.n))}), f"{cfg.n} rows.")
    return r
'''


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package of the user's own that adds an analysis through the ``univ.analyses`` entry-point group."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "univ_toy_analysis.py").write_text(TOY)
    info = site / "univ_toy_analysis-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: univ-toy-analysis\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[univ.analyses]\ntoy_analysis = univ_toy_analysis\n")
    monkeypatch.syspath_prepend(str(site))
    return tmp_path


def test_analysis_from_another_package_is_listed_and_runs(toy_package, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "toy_analysis" in out and "A toy analysis registered by a test package." in out
    assert "universality" in out  # univ's own, through the same group
    runs = toy_package / "runs"
    assert main(["run", "toy_analysis", "--quick", "--out", str(runs)]) == 0
    (folder,) = list(runs.iterdir())
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"] == {"n": 3, "fail": False} and meta["quick"] is True
    assert len(pd.read_csv(folder / "rows.csv")) == 3
    assert "3 rows." in (folder / "report.md").read_text()


def test_quick_sizes_explicit_flags_win_and_config_records_what_ran(toy_package):
    runs = toy_package / "runs"
    assert main(["run", "toy_analysis", "--quick", "--n", "7", "--out", str(runs)]) == 0
    (folder,) = list(runs.iterdir())
    assert json.loads((folder / "config.json").read_text())["config"]["n"] == 7
    assert len(pd.read_csv(folder / "rows.csv")) == 7
    assert '"n": 7' in (folder / "report.md").read_text()


def test_bad_settings_exit_2_with_one_line_naming_the_flag_and_leave_nothing(toy_package, capsys):
    runs = toy_package / "runs"
    for argv, fragment in ((["--n", "0"], "--n: must be >= 1, got 0"),
                           (["--n", "x"], "argument --n: cannot read 'x' as int"),
                           (["--nn", "3"], "unrecognized arguments: --nn 3"),
                           (["--threads", "0"], "--threads: must be >= 1")):
        assert main(["run", "toy_analysis", *argv, "--out", str(runs)]) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not runs.exists()


def test_failed_run_leaves_no_run_folder(toy_package):
    runs = toy_package / "runs"
    with pytest.raises(RuntimeError, match="boom"):
        main(["run", "toy_analysis", "--fail", "true", "--out", str(runs)])
    assert not runs.exists() or not list(runs.iterdir())


def test_help_lists_the_analysis_flags_with_defaults(toy_package, capsys):
    assert main(["run", "toy_analysis", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--n" in out and "How many rows. Default: 10 (quick: 3)." in out and "--quick" in out


def test_universality_settings_fail_before_work(tmp_path, capsys):
    cases = ((["--eps", "-1"], "--eps: must be >= 0"), (["--sae-k", "100000"], "--sae-k: must be <= "),
             (["--n-attack", "0"], "--n-attack: must be >= 1"), (["--archs", "mlp,resnet"], "resnet"),
             (["--data", "cifar10"], "digits"), (["--metrics", "cka"], "--metrics: unknown value 'cka'"))
    import torch

    if not torch.cuda.is_available():
        cases += ((["--device", "cuda"], "--device: 'cuda' is not available"),)
    for argv, fragment in cases:
        assert main(["run", "universality", *argv, "--out", str(tmp_path / "runs")]) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "runs").exists()


def test_universality_help_shows_sae_k(capsys):
    assert main(["run", "universality", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--sae-k" in out and "Default: 8" in out


def test_list_config_and_unknown_analysis(capsys):
    assert main(["list"]) == 0
    assert "universality" in capsys.readouterr().out
    assert main(["run", "universalty"]) == 2
    assert "closest valid names: ['universality'" in capsys.readouterr().err
    assert main(["config", "universality"]) == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and "Trained networks per architecture" in out and "[quick: 2]" in out


def test_unwritable_output_folder_fails_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "universality", "--quick", "--out", str(blocker / "sub")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_report_write_is_atomic_and_replaces_a_rerun(tmp_path):
    r = report.Report("toy", summary="t")
    r.add_table("t", pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), "A table.")
    r.add_figure("f", report.heatmap(pd.DataFrame([[0.1, 0.9]], columns=["x", "y"])), "A figure.")
    folder = report.write(r, report.run_dir(tmp_path, "toy", {"k": 1}), config={"k": 1}, elapsed_s=1.0)
    assert folder.name == f"toy-{report.writer.stable_hash({'k': 1})}"
    assert (folder / "t.csv").exists() and (folder / "t.md").exists() and (folder / "f.png").exists()
    md = (folder / "report.md").read_text()
    assert md.index("## t") < md.index("A table.") < md.index("|") < md.index("## f") < md.index("![f](f.png)")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"] == {"k": 1} and meta["versions"]["torch"]
    assert report.run_dir(tmp_path, "toy", {"k": 1}) == folder  # same config, same folder
    assert report.run_dir(tmp_path, "toy", {"k": 2}) != folder
    (folder / "stale.csv").write_text("old")
    r2 = report.Report("toy")
    r2.add_table("t", pd.DataFrame({"a": [3]}))
    assert report.write(r2, folder, config={"k": 1}) == folder
    assert not (folder / "stale.csv").exists() and len(pd.read_csv(folder / "t.csv")) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temporary folder left


def test_report_write_failure_leaves_no_folder(tmp_path):
    class Bad:
        def savefig(self, *a, **k):
            raise RuntimeError("disk full")

    r = report.Report("toy")
    r.add_table("t", pd.DataFrame({"a": [1]}))
    r.figures["f"] = Bad()
    with pytest.raises(RuntimeError, match="disk full"):
        report.write(r, tmp_path / "toy-x", config={})
    assert list(tmp_path.iterdir()) == []

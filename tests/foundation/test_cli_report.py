import json
import typing
from dataclasses import dataclass

import pandas as pd
import pytest

from univ import report
from univ.cli import _convert, _parse_extra, build_config, main


def test_convert_types():
    assert _convert("3", int, "n") == 3
    assert _convert("0.5", float, "x") == 0.5
    assert _convert("false", bool, "b") is False
    assert _convert("mlp,cnn", tuple[str, ...], "archs") == ("mlp", "cnn")
    assert _convert('["a", "b"]', list[str], "names") == ["a", "b"]
    assert _convert("none", int | None, "k") is None
    assert _convert("mnist1d", typing.Literal["digits", "mnist1d"], "data") == "mnist1d"
    with pytest.raises(ValueError, match="--data: cannot read 'cifar'.*choose one of"):
        _convert("cifar", typing.Literal["digits", "mnist1d"], "data")
    with pytest.raises(ValueError, match="--n: cannot read 'x'"):
        _convert("x", int, "n")


def test_parse_extra_forms():
    assert _parse_extra(["--a", "1", "--b=2", "--flag"]) == {"a": "1", "b": "2", "flag": "true"}
    with pytest.raises(ValueError, match="unexpected argument"):
        _parse_extra(["stray"])


def test_build_config_unknown_field_lists_valid():
    class M:
        __name__ = "analyses.toy"

        @dataclass(frozen=True)
        class Config:
            quick: bool = False
            n_seeds: int = 2

    cfg = build_config(M, {"n-seeds": "4"}, quick=True)
    assert cfg == M.Config(quick=True, n_seeds=4)
    with pytest.raises(ValueError, match="n_seeds"):
        build_config(M, {"n_seed": "4"})


def test_list_and_unknown_analysis(capsys):
    assert main(["list"]) == 0
    assert "universality" in capsys.readouterr().out
    assert main(["run", "universalty"]) == 2
    assert "closest valid names: ['universality'" in capsys.readouterr().err


def test_report_write_and_run_dir(tmp_path):
    r = report.Report("toy", summary="t")
    r.add_table("t", pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), "A table.")
    r.add_figure("f", report.heatmap(pd.DataFrame([[0.1, 0.9]], columns=["x", "y"])), "A figure.")
    folder = report.write(r, report.run_dir(tmp_path, "toy", {"k": 1}), config={"k": 1}, elapsed_s=1.0)
    assert folder.name == f"toy-{report.stable_hash({'k': 1})}"
    assert (folder / "t.csv").exists() and (folder / "t.md").exists() and (folder / "f.png").exists()
    md = (folder / "report.md").read_text()
    assert md.index("## t") < md.index("A table.") < md.index("|") < md.index("## f") < md.index("![f](f.png)")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"] == {"k": 1} and meta["versions"]["torch"]
    assert report.run_dir(tmp_path, "toy", {"k": 1}) == folder  # same config, same folder
    assert report.run_dir(tmp_path, "toy", {"k": 2}) != folder


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="out: cannot write"):
        report.check_writable(blocker / "sub")


def test_config_command_shows_defaults_and_field_docs(capsys):
    assert main(["config", "universality"]) == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and "Trained networks per architecture" in out

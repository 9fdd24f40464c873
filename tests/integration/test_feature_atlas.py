"""End-to-end: `univ run feature_atlas --quick` through the CLI; the subset table with nulls and intervals, the
seed ceiling and the figures."""

import json

import pandas as pd
import pytest

from univ.cli import main

pytestmark = pytest.mark.slow  # the quick zoo plus three crosscoders: a few minutes on a shared CPU


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "feature_atlas", "--quick", "--out", str(out)]) == 0
    (folder,) = list(out.iterdir())
    return folder


def test_tables_and_figures(run_folder):
    cfg = json.loads((run_folder / "config.json").read_text())
    assert cfg["quick"] is True and cfg["config"]["d_sae"] == 256
    for name in ("models", "categories", "subsets", "seed_ceiling", "pairwise_matching"):
        assert (run_folder / f"{name}.csv").exists(), name
    for fig in ("subset_bars", "decoder_norms", "seed_cosines"):
        assert (run_folder / f"{fig}.png").exists(), fig
    cats = pd.read_csv(run_folder / "categories.csv")
    assert {"count", "count_low", "count_high", "null_count", "null_count_low", "null_count_high"} <= set(cats.columns)
    assert (cats["count_low"] <= cats["count"]).all() and (cats["count"] <= cats["count_high"]).all()
    assert cats["count"].sum() == cats["n_counted"].iloc[0]  # every counted latent in exactly one category
    ceiling = pd.read_csv(run_folder / "seed_ceiling.csv")
    assert 0 <= ceiling["stable_fraction"].iloc[0] <= 1
    subsets = pd.read_csv(run_folder / "subsets.csv")
    assert "shared (size>=2)" in set(subsets["subset"]) and "null_count" in subsets.columns
    report = (run_folder / "report.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Findings" and "**Seed ceiling.**" in report and "shuffled-pairing null" in report
    models = pd.read_csv(run_folder / "models.csv")
    assert len(models) == 12 and (~models["trained"]).sum() == 6 and (models["crosscoder_fvu"] < 1).all()

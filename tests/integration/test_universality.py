"""End-to-end: `univ run universality --quick` through the CLI, then the report's tables checked."""

import json

import pandas as pd
import pytest

from univ.cli import main


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "universality", "--quick", "--out", str(out)]) == 0
    (folder,) = list(out.iterdir())
    return folder


def test_run_folder_contents(run_folder):
    assert run_folder.name.startswith("universality-")
    cfg = json.loads((run_folder / "config.json").read_text())
    assert cfg["quick"] is True and cfg["versions"]["torch"]
    # the settings that ran (quick sizes), not the defaults
    assert cfg["config"]["seeds"] == 2 and cfg["config"]["epochs"] == 6 and cfg["config"]["n_test"] == 300
    for name in ("models", "similarity", "similarity_summary", "feature_matching", "transfer", "projection"):
        assert (run_folder / f"{name}.csv").exists() and (run_folder / f"{name}.md").exists(), name
    assert list(run_folder.glob("*.png"))
    report = (run_folder / "report.md").read_text()
    assert "baseline" in report and "![transfer_matrix](transfer_matrix.png)" in report
    assert '"seeds": 2' in report and '"epochs": 6' in report and "x 2 seeds, 6 epochs" in report


def test_similarity_values_in_bounds_and_trained_beats_random(run_folder):
    sim = pd.read_csv(run_folder / "similarity.csv")
    assert {"category", "model_a", "layer_a", "model_b", "layer_b", "metric", "value", "baseline_mean",
            "p_value", "ci_low", "ci_high"} <= set(sim.columns)
    assert sim["value"].notna().all()
    bounded = sim[sim.metric != "linear_cka_debiased"]
    assert bounded["value"].between(-1e-9, 1 + 1e-9).all()
    trained = sim[sim.category.isin(["same arch, different seed", "different arch"])]
    assert trained["ci_low"].notna().all() and (trained["ci_low"] <= trained["ci_high"] + 1e-9).all()
    s = pd.read_csv(run_folder / "similarity_summary.csv").set_index(["metric", "category"])
    # the expected contrast: trained networks of one architecture agree more than untrained ones
    assert s.loc[("linear_cka", "same arch, different seed"), "last_hidden"] > \
        s.loc[("linear_cka", "random init, same arch"), "last_hidden"]


def test_feature_and_adversarial_tables(run_folder):
    fm = pd.read_csv(run_folder / "feature_matching.csv")
    assert fm["shared_fraction"].between(0, 1).all() and fm["svcca_p_value"].between(0, 1).all()
    tr = pd.read_csv(run_folder / "transfer.csv")
    assert tr["transfer_rate"].dropna().between(0, 1).all()
    proj = pd.read_csv(run_folder / "projection.csv")
    assert set(proj["basis"]) == {"sae", "neuron", "random", "pca"}
    assert proj["frac_top5"].between(0, 1 + 1e-6).all()
    attacks = pd.read_csv(run_folder / "attacks.csv")
    assert (attacks["pgd_acc"] <= attacks["clean_acc"] + 1e-9).all()


def test_report_opens_with_findings_and_every_estimate_in_its_interval(run_folder):
    report = (run_folder / "report.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Findings", "## findings"]
    findings = report.split("## findings")[0]
    for question in ("more similar than chance", "share features", "concentrated", "predict transfer"):
        assert question in findings
    assert "95% CI" in findings and "q = " in findings and "smallest reachable p" in findings
    sim = pd.read_csv(run_folder / "similarity.csv")
    tested = sim[sim.p_value.notna()]
    assert (tested.p_min == 1 / 201).all()  # --quick: 200 permutations
    ok = sim[sim.ci_low.notna()]
    assert ((ok.ci_low <= ok.value + 1e-12) & (ok.value <= ok.ci_high + 1e-12)).all()
    table = pd.read_csv(run_folder / "findings.csv")
    assert {"effect", "ci_low", "ci_high", "p_value", "q_value", "p_min", "verdict"} <= set(table.columns)

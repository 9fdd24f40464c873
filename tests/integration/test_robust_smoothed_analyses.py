"""analyses/robust_features.py (Ilyas et al.) and analyses/smoothed_gradients.py (Kaur et al.) end to end."""

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("name", ["robust_features", "smoothed_gradients"])
def test_quick_analysis_runs(name):
    import importlib

    mod = importlib.import_module(f"analyses.{name}")
    report = mod.run(mod.Config.resolve(quick=True))
    assert report.summary in report.tables
    main = report.tables[report.summary]
    assert len(main) > 0 and not main.select_dtypes("number").isna().all().any()
    if name == "robust_features":
        det = main.set_index("train set").loc["D_det"]
        assert det["clean_acc"] > 15  # well above 10% chance: D_det's non-robust features generalise
    else:
        rows = main.set_index("method")
        assert rows.loc["robust (adv. trained)", "cos_robust_grad"] == pytest.approx(1.0, abs=1e-4)
        assert rows.loc["smoothed s=0.5", "cos_robust_grad"] > rows.loc["standard", "cos_robust_grad"]

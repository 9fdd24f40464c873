"""The ladder and direction-gain stages of ``univ run intriguing`` on tiny nets."""

import pytest

from analyses.intriguing import Config
from univ.config import SettingError


def test_ladder_and_direction_stages_on_tiny_nets(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path))
    import univ
    from analyses._intriguing_ladder import directions_stage, ladder_stage
    from univ.cache import cached_model
    from univ.report import Report
    from univ.train import TrainConfig

    cfg = Config.resolve(quick=True, widths=(8,), epochs=2, ladder_widths=("3-3",), exact_max_relus=6, bab_max_relus=6,
                         ladder_cnn=False,
                         sdp_max_dim=200, lower_starts=8, lower_steps=20, n_points=4, n_random=4)
    data = univ.data.digits(seed=0).subset(n_train=200, n_test=50)
    tc = TrainConfig(epochs=2, seed=0)
    models = {"FC8-8-10": cached_model("mlp", data, train_cfg=tc, model_cfg={"widths": [8, 8]}, progress=False)[0]}
    report = Report("intriguing")
    ladder_stage(models, data, cfg, report)
    directions_stage(models, data, cfg, report)
    t = report.tables["lipschitz_ladder"]
    assert set(t.model) == {"FC8-8-10", "FC3-3-10"}
    ok = t[t.status == "ok"]
    assert set(ok.method) >= {"product", "split", "ECLipsE-Fast", "ECLipsE", "LipSDP-Layer", "LipSDP-Neuron",
                              "branch-and-bound", "exact", "lower bound"}
    for _, g in t.groupby("model"):
        v = dict(zip(g.method, g.value))
        for m in ("product", "split", "ECLipsE-Fast", "ECLipsE", "LipSDP-Layer", "LipSDP-Neuron"):
            assert v[m] >= v["lower bound"] * (1 - 1e-7)
    small = t[t.model == "FC3-3-10"].set_index("method")["value"]
    assert small["LipSDP-Neuron"] >= small["exact"] * (1 - 1e-7) >= small["lower bound"] * (1 - 2e-7)
    assert small["exact"] * (1 - 1e-7) <= small["branch-and-bound"] <= small["exact"] * (1 + 1e-3)
    big = t[t.model == "FC8-8-10"].set_index("method")["status"]
    assert big["exact"].startswith("skipped") and big["branch-and-bound"] == "skipped: 16 ReLUs > bab_max_relus 6"
    d = report.tables["direction_gains"]
    e2e = d[(d.layer == "end to end")].set_index("direction")
    assert e2e.loc["PGD (L2)", "gain_mean"] > e2e.loc["random", "gain_mean"]
    assert "lipschitz_ladder" in report.figures


def test_ladder_settings_are_checked():
    with pytest.raises(SettingError, match="ladder_widths"):
        Config.resolve(ladder_widths=("32x32",))
    with pytest.raises(SettingError, match="sdp_max_dim"):
        Config.resolve(sdp_max_dim=0)
    with pytest.raises(SettingError, match="bab_max_nodes: must be >= 1, got 0"):
        Config.resolve(bab_max_nodes=0)
    with pytest.raises(SettingError, match="bab_max_relus: must be >= 0, got -1"):
        Config.resolve(bab_max_relus=-1)

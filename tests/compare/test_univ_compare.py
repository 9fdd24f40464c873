"""``univ compare``: every layer of tiny HuggingFace models against every layer of the others on the embedded
corpus, with untrained twins; a model against itself is 1 on the diagonal; mismatched tokenizers need the flag;
bad settings end with exit code 2 and one line before any model loads."""

import json

import numpy as np
import pandas as pd
import pytest

import univ
import univ.sources.models
from univ.cli import main

FAST = ["--n-tokens", "256", "--context", "16", "--metrics", "linear_cka,svcca", "--n-permutations", "2",
        "--n-bootstrap", "2"]
ONE = ["linear_cka", "linear_cka_debiased", "svcca", "procrustes", "cca"]  # 1 for identical inputs


def error_line(err: str) -> str:
    """The one error line (transformers' own loading progress bars may precede it on stderr)."""
    lines = [line for line in err.strip().splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err
    return lines[0]


def only_run(out):
    folders = [p for p in out.iterdir()] if out.exists() else []
    assert len(folders) == 1, folders
    return folders[0]


def test_two_models_write_tables_heatmaps_and_report(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["compare", f"hf:{tiny['gpt2']}", f"hf:{tiny['neox']}", *FAST, "--out", str(out)]) == 0
    folder = only_run(out)
    assert folder.name.startswith("compare-")
    models = pd.read_csv(folder / "models.csv")
    assert list(models.model) == ["gpt2", "neox", "gpt2 (untrained)", "neox (untrained)"]
    assert list(models.untrained) == [False, False, True, True] and set(models.n_layers) == {2}
    sim = pd.read_csv(folder / "similarity.csv")
    assert list(sim.columns) == ["model_a", "layer_a", "model_b", "layer_b", "metric", "value", "baseline_mean",
                                 "p_value", "ci_low", "ci_high", "category"]
    counts = sim.groupby("category").size().to_dict()
    # 2 x 2 layers x 2 metrics per pair: the models, their twins, and each model with its own twin (two pairs)
    assert counts == {"models": 8, "untrained twins": 8, "model vs its untrained twin": 16}
    trained = sim[sim.category == "models"]
    assert trained[["p_value", "ci_low", "baseline_mean"]].notna().all().all()
    assert sim[sim.category != "models"].p_value.isna().all()  # the baselines are values only
    assert sim.value.between(-0.1, 1 + 1e-9).all()
    summary = pd.read_csv(folder / "summary.csv")
    assert {"best_match", "last_layers", "mean"} <= set(summary.columns) and len(summary) == 8
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert pngs == ["heatmap_linear_cka_gpt2_vs_neox.png", "heatmap_svcca_gpt2_vs_neox.png"]
    report = (folder / "report.md").read_text()
    assert "gpt2 (untrained)" in report and "random-init baseline" in report and "one row per text token" in report
    assert "![heatmap_svcca_gpt2_vs_neox](heatmap_svcca_gpt2_vs_neox.png)" in report
    meta = json.loads((folder / "config.json").read_text())
    assert meta["analysis"] == "compare" and meta["config"]["models"] == [f"hf:{tiny['gpt2']}", f"hf:{tiny['neox']}"]
    assert meta["capture"]["on_disk"] is False
    assert "compare finished" in capsys.readouterr().out


def test_a_model_against_itself_is_one_on_the_diagonal(tiny):
    report = univ.compare_models([f"hf:{tiny['gpt2']}"], n_tokens=256, context=16, metrics=ONE, n_permutations=0,
                                 n_bootstrap=0, layers=["transformer.h.0", "-1"])
    sim = report.tables["similarity"]
    same = sim[sim.category == "same model"]
    assert set(same.model_a) == set(same.model_b) == {"gpt2"}
    diag = same[same.layer_a == same.layer_b]
    assert len(diag) == 2 * len(ONE)
    np.testing.assert_allclose(diag.value, 1.0, atol=1e-6)
    assert set(sim.category) == {"same model", "model vs its untrained twin"}
    twice = univ.compare_models([f"hf:{tiny['gpt2']}"] * 2, n_tokens=256, context=16, metrics=["linear_cka"],
                                n_permutations=0, n_bootstrap=0, untrained=False)
    sim2 = twice.tables["similarity"]
    assert set(sim2.category) == {"same model"} and set(sim2.model_b) == {"gpt2#2"}
    np.testing.assert_allclose(sim2[sim2.layer_a == sim2.layer_b].value, 1.0, atol=1e-6)


def test_different_tokenizers_need_the_flag(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["compare", f"hf:{tiny['gpt2']}", f"hf:{tiny['other']}", *FAST, "--n-tokens", "1024", "--out", str(out)]
    assert main(args) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("univ: error: --allow-different-tokenizers: ")
    assert "vocabularies differ" in err and not out.exists()
    assert main([*args, "--allow-different-tokenizers"]) == 0
    folder = only_run(out)
    report = (folder / "report.md").read_text()
    assert "the tokenizers differ, so rows are" in report and "per_sequence_data" in report
    assert "reduce=tokens cannot pair tokens across tokenizers" in report
    assert json.loads((folder / "config.json").read_text())["capture"]["reduce"] == "mean"
    assert len(pd.read_csv(folder / "similarity.csv").query("category == 'models'")) == 8


BAD = [  # (id, arguments after the specs, flag named, fragment)
    ("prefix", ["xx:foo"], "--models", "unknown source 'xx:'"),
    ("no-colon", ["gpt2"], "--models", "is not a spec PREFIX:NAME"),
    ("folder", ["hf:/nonexistent/model"], "--models", "no such folder"),
    ("data-prefix", ["--data", "tweets"], "--data", "unknown source 'tweets'"),
    ("data-files", ["--data", "text:/nonexistent/*.txt"], "--data", "matches no files"),
    ("layers", ["--layers", "0,0"], "--layers", "names a layer twice"),
    ("metric", ["--metrics", "cka"], "--metrics", "unknown value 'cka'"),
    ("n-tokens", ["--n-tokens", "1"], "--n-tokens", "must be >= 4"),
    ("reduce", ["--reduce", "max"], "--reduce", "choose one of"),
]


@pytest.mark.parametrize("extra,flag,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_settings_exit_2_before_any_model_loads(tiny, tmp_path, capsys, monkeypatch, extra, flag, fragment):
    def never(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(univ.sources.models, "load_model", never)
    specs = [] if extra[0].startswith("-") else extra[:1]
    rest = extra if not specs else extra[1:]
    out = tmp_path / "runs"
    code = main(["compare", *(specs or [f"hf:{tiny['gpt2']}"]), *rest, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err  # nothing loaded: no progress bar either
    assert err.startswith("univ: error: ") and flag in err and fragment in err, err
    assert not out.exists()


def test_unknown_layer_exits_2_naming_the_flag(tiny, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["compare", f"hf:{tiny['gpt2']}", "--layers", "transformer.h.9", "--context", "16", "--out", str(out)]
    assert main(args) == 2
    err = error_line(capsys.readouterr().err)
    assert err.startswith("univ: error: --layers: 'transformer.h.9' is not a hook")
    assert not out.exists()


def test_a_context_longer_than_a_model_takes_exits_2(tiny, tmp_path, capsys):
    assert main(["compare", f"hf:{tiny['gpt2']}", "--context", "64", "--out", str(tmp_path / "runs")]) == 2
    assert error_line(capsys.readouterr().err).startswith("univ: error: --context: must be <= 32: gpt2 takes")
    assert not (tmp_path / "runs").exists()


def test_the_store_path_agrees_with_memory_and_layers_go_by_position(tiny):
    specs = [f"hf:{tiny['gpt2']}", f"hf:{tiny['neox']}"]
    kw = dict(n_tokens=4096, context=16, metrics=["linear_cka", "procrustes"], n_permutations=0, n_bootstrap=0,
              layers=["-1", "0"], untrained=False)  # 2 x 2 layers x 32 x ~4000 rows x 4 bytes: 2 MiB
    mem = univ.compare_models(specs, **kw)
    disk = univ.compare_models(specs, **{**kw, "max_memory_mb": 1})
    assert mem.meta["capture"]["on_disk"] is False and disk.meta["capture"]["on_disk"] is True
    a, b = disk.tables["similarity"], mem.tables["similarity"]
    assert list(a.layer_a.unique()) == ["transformer.ln_f", "transformer.h.0"]
    assert list(a.layer_b.unique()) == ["gpt_neox.final_layer_norm", "gpt_neox.layers.0"]
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6)
    assert "on-disk activation store" in dict(disk.sections)["Setup"]
    with pytest.raises(univ.config.SettingError, match="metrics: \\['rsa'\\] need every row in memory"):
        univ.compare_models(specs, **{**kw, "max_memory_mb": 1, "n_tokens": 4096, "metrics": ["rsa"]})


def test_help_lists_the_flags(capsys):
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("MODEL", "--data", "--layers", "--metrics", "--n-tokens", "--allow-different-tokenizers", "--out",
                 "--quick", "--threads", "--reduce"):
        assert flag in out

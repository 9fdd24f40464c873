import dataclasses

import numpy as np
import pytest

from analyses import adversarial_lm as A


def test_config_validation_and_quick():
    cfg = A.Config.resolve(quick=True)
    assert cfg.seeds == (0, 1) and cfg.n_prompts <= 10 and cfg.train_steps == 200
    for bad in ({"archs": ()}, {"archs": ("tl",), "seeds": (0,)}, {"n_edit": 0}, {"pgd_eps": 0.0},
                {"prompt_len": 5}, {"d_model": 30}, {"k": 10_000}):
        with pytest.raises(ValueError):
            A.Config(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 2


@pytest.mark.slow
def test_small_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path))
    cfg = A.Config.resolve(quick=True, archs=("tl", "llama"), seeds=(0,), n_prompts=6, n_sae_prompts=2,
                           train_steps=120, gcg_steps=6, sae_steps=150, n_sae_contexts=80, pgd_steps=10)
    report = A.run(cfg)
    succ = report.tables["success"]
    pooled = succ[succ.model == "all"].set_index("attack")
    assert set(pooled.index) == {"gcg suffix", "gcg in-place", "gcg loss-max", "SAE-targeted", "embedding PGD L2",
                                 "embedding PGD L-inf"}
    for col in ("attack", "control"):
        r = succ[f"{col}_rate"]
        assert ((succ[f"{col}_ci_low"] <= r + 1e-12) & (r <= succ[f"{col}_ci_high"] + 1e-12)).all()
    # GCG with its edits beats random substitutions with the same number of edits
    assert pooled.loc["gcg in-place", "attack_rate"] > pooled.loc["gcg in-place", "control_rate"]
    assert 0 <= pooled.loc["embedding PGD L2", "projected_rate"] <= 1
    tokens = pooled.loc[["gcg suffix", "gcg in-place", "gcg loss-max", "SAE-targeted"]]
    assert (tokens.mean_kl >= -1e-9).all() and (tokens.mean_rel_change >= 0).all()
    proj = report.tables["projection_pooled"]
    assert set(proj.basis) == {"SAE codes", "SAE decoder (OMP)", "random dictionary (OMP)", "neuron", "PCA (clean)",
                               "random orthonormal"}
    assert set(proj.control) == {"random (same edits)", "random (same activation change)"}
    assert proj[["attack_frac_top5", "control_frac_top5"]].stack().between(0, 1 + 1e-9).all()
    assert np.allclose(proj.difference, (proj.ci_low + proj.ci_high) / 2, equal_nan=True)
    # the size-matched control really matches the size of the change, better than the edit-matched one
    last = proj[(proj.layer == proj.layer.max()) & (proj.basis == "neuron")].set_index(["attack", "control"])
    for attack in ("gcg in-place", "embedding PGD L2"):
        matched = abs(np.log(last.loc[(attack, "random (same activation change)"), "norm_ratio"]))
        assert matched <= abs(np.log(last.loc[(attack, "random (same edits)"), "norm_ratio"])) + 1e-9
    assert len(report.tables["transfer"]) == 2 and len(report.tables["latent_sharing"]) == 2
    assert set(report.figures) == {"success", "concentration", "sharing", "transfer"}
    text = dict(report.sections)["answer"]
    assert "Is r moving in an interesting direction" in text
    assert any(w in text for w in ("Yes for", "Partly for", "No for"))

import dataclasses

import pytest

from analyses import adversarial_sae as A


def test_config_validation_and_quick():
    cfg = A.Config.resolve(quick=True)
    assert cfg.archs == ("mlp",) and cfg.n_attack <= 200 and cfg.search_steps == 6
    with pytest.raises(ValueError):
        A.Config(eps=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.eps = 0.2


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIV_CACHE", str(tmp_path))
    report = A.run(A.Config.resolve(quick=True, n_attack=60, sae_steps=300, n_lbfgs=5, epochs=5))
    ans = report.tables["answer_adversarial_vs_random"]
    assert set(ans.basis) >= {"SAE codes", "neuron", "PCA (clean)", "random orthonormal"}
    assert ans["adversarial"].between(0, 1 + 1e-9).all()
    tr = report.tables["transfer"]
    for _target, rows in tr.groupby("target"):
        white = rows[rows.white_box & (rows.attack == "pgd")]
        if len(white):
            assert white.fool_rate.item() >= rows[~rows.white_box & (rows.attack == "pgd")].fool_rate.max() - 1e-9

"""analyses/lottery.py and analyses/purification.py end to end, at toy size."""


def test_lottery_analysis_runs_tiny():
    from analyses import _lottery_stages, lottery

    rep = lottery.run(lottery.Config.resolve(quick=True, seeds=2, n_rounds=1, epochs=1, late_rewind=5, eval_every=5))
    acc = rep.tables["accuracy_per_seed"]
    assert set(acc.kind) == set(_lottery_stages.KINDS) and set(acc["round"]) == {0, 1}
    sim = rep.tables["similarity_per_pair"]
    assert sim.value.between(-1e-6, 1 + 1e-6).all()
    assert {"ticket vs ticket (seeds)", "random vs random (seeds)", "ticket vs dense parent"} <= set(sim.comparison)
    m = rep.tables["mask_overlap"]
    assert m.jaccard.between(0, 1).all() and m.jaccard_aligned.between(0, 1).all()


def test_purification_analysis_runs_tiny():
    from analyses import _purification_stages, purification

    cfg = purification.Config.resolve(quick=True, seeds=1, epochs=1, n_samples=1000, sae_steps=30, n_eval=200)
    rep = purification.run(cfg)
    nets = rep.tables["networks"]
    assert list(nets.kind) == list(_purification_stages.KINDS)
    assert nets.purity_1.between(1 / 32, 1).all()
    assert len(rep.tables["neurons"]) == 4 * 64 and len(rep.tables["decomposition"]) == 2

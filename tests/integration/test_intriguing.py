"""The building blocks of analyses/intriguing.py (Szegedy et al. 2013), and the analysis end to end."""

import math

import numpy as np
import pytest
import torch


def test_label_purity_known_answers():
    from analyses._intriguing_stages import label_purity

    labels = np.array([[1, 1, 1, 1], [1, 2, 1, 2], [0, 1, 2, 3], [5, 5, 5, 0]])
    assert np.allclose(label_purity(labels), [1.0, 0.5, 0.25, 0.75])
    assert np.allclose(label_purity(torch.tensor([[3, 3]])), [1.0])
    with pytest.raises(ValueError, match="labels"):
        label_purity(np.array([1, 2, 3]))


def test_top_activating_units_and_directions():
    from analyses._intriguing_stages import top_activating

    acts = torch.tensor([[0.0, 1.0], [3.0, 0.0], [2.0, 2.0], [1.0, 5.0]])
    idx = top_activating(acts, torch.eye(2), k=2)
    assert idx.tolist() == [[1, 2], [3, 2]]
    d = torch.tensor([[1.0, 1.0]]) / math.sqrt(2)
    assert top_activating(acts, d, k=1).tolist() == [[3]]


@pytest.mark.slow
def test_intriguing_runs_end_to_end_on_a_tiny_config():
    from analyses.intriguing import Config, run

    cfg = Config.resolve(quick=True, lambdas=(1e-2,), widths=(16,), cnn=False, epochs=3, n_attack=6, search_steps=3,
                 maxiter=20, n_random=5, n_points=2, n_sweep=2)
    report = run(cfg)
    t1 = report.tables["table1_min_distortion"]
    assert list(t1["model"]) == ["FC10(1e-2)", "FC16-16-10"]
    assert t1["paper_av_min_distortion"].iloc[0] == 0.1
    assert report.tables["lipschitz_bounds"]["ordering_holds"].all()
    t2 = report.tables["table2_transfer"]
    assert set(t2["examples_for"]) >= {"Gaussian noise 0.1", "Gaussian noise 0.3"}

"""Szegedy et al. 2013's Table 1 beside univ's models (univ.repro.szegedy)."""

import torch

from univ.repro.szegedy import SZEGEDY_TABLE1, minimal_distortion_table, rms_distortion


def test_minimal_distortion_table(mlp, data):
    x, y = data.x_test[:8], data.y_test[:8]
    table = minimal_distortion_table({"mlp": mlp}, x[:4], y[:4], search_steps=4, maxiter=50,
                                     bounds=data.bounds)
    assert len(table) == 1 + len(SZEGEDY_TABLE1)
    mine = table.iloc[0]
    assert 0 < mine["av_min_distortion"] < 0.3 and mine["success_rate"] > 0.9


def test_rms_distortion_is_the_per_dimension_rms():
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x + torch.tensor([1.0, 2.0]).reshape(2, 1, 1, 1)
    assert torch.allclose(rms_distortion(x, x_adv), torch.tensor([1.0, 2.0], dtype=torch.float64))

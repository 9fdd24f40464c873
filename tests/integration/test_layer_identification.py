"""Building blocks of analyses/layer_identification.py (Kornblith et al. 2019, Table 2) on tiny inputs."""

import numpy as np
import pytest
import torch

import univ
from analyses._layer_identification_stages import identification
from analyses.layer_identification import Config
from univ.models import build_model


def test_plain_cnn_layers_are_flattened_relu_outputs_at_shrinking_resolution():
    model = build_model("plain_cnn", input_shape=(1, 40), channels=4, seed=0).eval()
    x = torch.randn(7, 1, 40)
    assert model(x).shape == (7, 10)
    acts = univ.capture(model, x, names=model.layers[:-1], reduce="flatten")
    assert [a.shape[1] for a in acts.values()] == [80, 80, 40, 40, 20, 20]
    assert all(bool((a >= 0).all()) for a in acts.values())


def test_identification_counts_argmax_on_the_diagonal():
    N, L = 3, 4
    S = np.zeros((N, N, L, L))
    S[:, :] = np.eye(L)
    S[0, 1, 2] = [0, 0, 0, 1]  # one miss: layer 2 of net 0 matched to layer 3 of net 1
    acc, per_layer = identification(S)
    assert acc == pytest.approx(1 - 1 / (N * (N - 1) * L))
    assert per_layer[2] == pytest.approx(1 - 1 / (N * (N - 1)))


def test_config_defaults_and_validation():
    assert Config().channels == 32 and Config.resolve(quick=True).channels == 8
    with pytest.raises(ValueError, match="strides"):
        Config(strides=(1,))
    with pytest.raises(ValueError, match="metrics"):
        Config(metrics=("nope",))


def test_memoised_mutual_knn_equals_the_library_metric():
    from analyses import _layer_identification_stages as li

    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 9, generator=g)
    Y = X @ torch.randn(9, 6, generator=g) + 0.5 * torch.randn(120, 6, generator=g)
    assert li._mutual_knn(X, Y, k=5) == univ.similarity.mutual_knn(X, Y, k=5)
    bad = X.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        li._mutual_knn(bad, Y, k=5)

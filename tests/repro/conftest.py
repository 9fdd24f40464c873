"""A tiny digits MLP shared by the tests of the reproduction wing (robust datasets, smoothing, Szegedy)."""

import pytest
import torch
from torch import nn

from univ.data import digits


@pytest.fixture(scope="session")
def data():
    return digits().subset(n_train=400, n_test=100)


@pytest.fixture(scope="session")
def mlp(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU(),
                          nn.Linear(16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    return model.eval()

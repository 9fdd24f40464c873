"""Tiny digits models trained in about a second, shared by the adversarial tests."""

import pytest
import torch
from torch import nn

from univ.data import digits


def _fit(model, x, y, steps=300, lr=1e-2, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return model


@pytest.fixture(scope="session")
def data():
    return digits()


@pytest.fixture(scope="session")
def mlp(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _fit(model, data.x_train, data.y_train)


@pytest.fixture(scope="session")
def mlp2(data):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    return _fit(model, data.x_train, data.y_train, seed=1)


@pytest.fixture(scope="session")
def cnn(data):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                          nn.Flatten(), nn.Linear(8 * 64, 10))
    return _fit(model, data.x_train[:600], data.y_train[:600], steps=100)

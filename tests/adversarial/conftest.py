"""Tiny digits models trained in about a second, and a linear model with known minimal adversarial
distances, shared by the adversarial tests."""

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


@pytest.fixture(scope="session")
def linear():
    """A 2-class linear model whose exact minimal L2 adversarial distance is |w.x + b| / ||w||."""
    torch.manual_seed(0)
    model = nn.Linear(16, 2)
    x = 0.4 + 0.2 * torch.rand(12, 16)  # interior of the box: the box constraint is inactive
    with torch.no_grad():  # put the boundary through the middle of the data
        s = model(x)
        model.bias[1] -= (s[:, 1] - s[:, 0]).median() + 1e-3
    y = model(x).argmax(1)
    w = model.weight[1] - model.weight[0]
    dist = ((model(x)[:, 1] - model(x)[:, 0]).abs() / w.norm()).detach()
    keep = dist < 0.3  # the nearest boundary point stays inside [0, 1]
    return model, x[keep], y[keep], dist[keep]
